//! Hostile inputs (issue 16): concurrent enrolments, limits checked before anything is built
//! from them, configs that nest deep or list too many streams, unusual frame rates. Each test
//! has a generous hang guard and no timing assertion.

mod common;

use common::*;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Runs `cmd` to completion, failing the test if it takes longer than `limit` (a hang guard,
/// far above the normal time).
fn output_within(mut cmd: Command, limit: Duration, what: &str) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pipe = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            v
        })
    };
    let out = pipe(Box::new(child.stdout.take().unwrap()));
    let err = pipe(Box::new(child.stderr.take().unwrap()));
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

fn check_within(config: &Path, limit: Duration) -> Output {
    let mut c = vigil();
    c.args(["check", "--config"]).arg(config);
    output_within(c, limit, "vigil check")
}

/// The lines of a refused config's report that are not problems located in `config`.
fn stray_lines(config: &Path, err: &str) -> Vec<String> {
    let prefix = format!("{}:", config.display());
    err.lines()
        .filter(|l| !l.contains("problem") || !l.ends_with("in the configuration:"))
        .filter(|l| !l.trim_start().starts_with(&prefix))
        .map(str::to_string)
        .collect()
}

#[test]
fn twenty_pairs_of_concurrent_enrolments_keep_every_person() {
    let dir = tempfile::tempdir().unwrap();
    let gallery = dir.path().join("gallery.json");
    let config = write_config(
        dir.path(),
        &format!(
            "streams: []\naction: {{enabled: false}}\n{}{}",
            faces_yaml(&gallery),
            runtime_yaml()
        ),
    );
    // One face per photo; a photo may be enrolled under many names.
    let mut photos: Vec<PathBuf> = ["obama.jpg", "biden.jpg", "obama2.jpg", "obama3.jpg"]
        .iter()
        .map(|f| built(&format!("media/faces/{f}")))
        .collect();
    photos.extend(shared_media_or_ci("faces/biden2.jpg"));
    let enroll = |name: &str, photo: &Path| {
        vigil()
            .args(["gallery", "enroll", "--config"])
            .arg(&config)
            .args(["--name", name])
            .arg(photo)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut names = Vec::new();
    for pair in 0..20 {
        let (a, b) = (format!("pair{pair} a"), format!("pair{pair} b"));
        let first = enroll(&a, &photos[pair % photos.len()]);
        let second = enroll(&b, &photos[(pair + 1) % photos.len()]);
        for (name, child) in [(&a, first), (&b, second)] {
            let out = child.wait_with_output().unwrap();
            assert_no_panic(&out);
            assert!(
                out.status.success() && String::from_utf8_lossy(&out.stdout).contains("enrolled"),
                "{name}: exit {:?}\n{}",
                out.status.code(),
                stderr(&out)
            );
        }
        names.push(a);
        names.push(b);
    }
    let out = vigil()
        .args(["gallery", "list", "--json", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut kept: Vec<String> = listed["people"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect();
    kept.sort();
    names.sort();
    assert_eq!(
        kept, names,
        "every enrolment printed `enrolled`, so all 40 must be kept"
    );
}

#[test]
fn an_implausible_thread_count_is_refused_before_any_model_is_built() {
    let dir = tempfile::tempdir().unwrap();
    let video = built("media/bigbuckbunny.mp4");
    let config = write_config(
        dir.path(),
        &format!(
            "streams:\n  - {{id: cam, url: {}}}\n{}{}  intra_threads: 100000\n",
            video.display(),
            action_yaml(),
            runtime_yaml()
        ),
    );
    // Before: ONNX Runtime was asked for 100000 threads (over 120 s and 5.6 GB).
    let out = check_within(&config, Duration::from_secs(60));
    assert_no_panic(&out);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(
            ":9:18: runtime.intra_threads: must be 0 (one per core) up to 1024 threads, got 100000"
        ),
        "{err}"
    );
    assert!(
        err.starts_with("1 problem in"),
        "only the limit is reported:\n{err}"
    );
    assert!(stray_lines(&config, &err).is_empty(), "{err}");
}

#[test]
fn a_zero_frame_clip_is_refused_without_reaching_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let video = built("media/bigbuckbunny.mp4");
    let config = write_config(
        dir.path(),
        &format!(
            "streams:\n  - {{id: cam, url: {}}}\n{}  frames: 0\n{}",
            video.display(),
            action_yaml(),
            runtime_yaml()
        ),
    );
    let out = check_within(&config, Duration::from_secs(120));
    assert_no_panic(&out);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(":7:11: action.frames: must be 1..=1024 frames, got 0"),
        "{err}"
    );
    // Before: the model was loaded with a 0-frame clip, and ONNX Runtime's own log line and a
    // second problem about the model followed.
    assert!(err.starts_with("1 problem in"), "{err}");
    assert!(stray_lines(&config, &err).is_empty(), "{err}");
}

#[test]
fn deep_nesting_is_refused_at_once_with_its_position() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &format!("streams: {}\n", "[".repeat(200_000)));
    // Before: 25 s of CPU or more before any answer.
    let out = check_within(&config, Duration::from_secs(60));
    assert_no_panic(&out);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(":1:73: nested 65 levels deep; a config may nest at most 64"),
        "{err}"
    );
}

#[test]
fn more_streams_than_one_vigil_runs_are_refused_and_a_long_valid_list_passes() {
    let dir = tempfile::tempdir().unwrap();
    let video = built("media/bigbuckbunny.mp4");
    let list = |n: usize| {
        let mut y = String::from("streams:\n");
        for i in 0..n {
            y += &format!("  - {{id: s{i}, url: {}}}\n", video.display());
        }
        y + "action: {enabled: false}\nmetrics: {enabled: false}\n"
    };
    let config = write_config(dir.path(), &list(1025));
    let out = check_within(&config, Duration::from_secs(120));
    assert_no_panic(&out);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(":2:3: streams: 1025 streams listed; one vigil runs at most 1024"),
        "{err}"
    );
    // 1000 streams of one file: each file is probed once (before: about 68 s, one probe each).
    let config = write_config(dir.path(), &list(1000));
    let out = check_within(&config, Duration::from_secs(120));
    assert_no_panic(&out);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("ok (1000 streams"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn a_1000_fps_file_reports_its_rate() {
    let dir = tempfile::tempdir().unwrap();
    let video = dir.path().join("fast.mp4");
    lavfi("testsrc=size=64x64:rate=1000", 100, &video);
    let config = write_config(
        dir.path(),
        &format!(
            "streams:\n  - {{id: fast, url: {}}}\naction: {{enabled: false}}\nmetrics: {{enabled: false}}\n",
            video.display()
        ),
    );
    let mut c = vigil();
    c.args(["run", "--no-progress", "--config"]).arg(&config);
    let out = output_within(c, Duration::from_secs(60), "vigil run");
    assert_no_panic(&out);
    assert!(out.status.success(), "{}", stderr(&out));
    let ev = events(&String::from_utf8_lossy(&out.stdout));
    let up = of_type(&ev, "stream.up");
    // Before: "64x64 at 0.000 fps" (rates of 1000 and above were thrown away).
    assert_eq!(up[0]["detail"], "64x64 at 1000.000 fps", "{ev:#?}");
}
