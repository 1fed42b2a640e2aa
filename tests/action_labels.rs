//! End to end on real video: the right action label at the right time, once per segment.

mod common;

use common::*;
use serde_json::Value;

fn started_with<'a>(events: &'a [Value], label: &str) -> Vec<&'a Value> {
    of_type(events, "action.started")
        .into_iter()
        .filter(|e| e["label"] == label)
        .collect()
}

#[test]
fn the_default_video_is_feeding_birds_and_stdout_matches_the_jsonl_file() {
    let dir = tempfile::tempdir().unwrap();
    let jsonl = dir.path().join("events.jsonl");
    let yaml = format!(
        "streams:\n  - id: bunny\n    url: {}\n{}sinks:\n  - type: stdout\n  - type: file\n    path: {}\nmetrics:\n  enabled: false\n",
        built("media/bigbuckbunny.mp4").display(),
        model_yaml(),
        jsonl.display()
    );
    let out = run(&write_config(dir.path(), &yaml));
    assert_no_panic(&out);
    assert!(out.status.success(), "{}", stderr(&out));
    let ev = events(&String::from_utf8_lossy(&out.stdout));

    let birds = started_with(&ev, "feeding birds");
    assert!(!birds.is_empty(), "no `feeding birds` segment in {ev:#?}");
    let first = birds[0];
    assert!(first["score"].as_f64().unwrap() > 0.9, "{first}");
    assert_eq!(first["media_time"], 0.0, "the first clip already shows it");
    assert_eq!(first["stream"], "bunny");

    // Every start has its end, in order, for the same label.
    let actions: Vec<&Value> = ev
        .iter()
        .filter(|e| e["type"].as_str().unwrap().starts_with("action."))
        .collect();
    for pair in actions.chunks(2) {
        assert_eq!(pair.len(), 2, "a segment without an end: {actions:#?}");
        assert_eq!(
            (pair[0]["type"].as_str(), pair[1]["type"].as_str()),
            (Some("action.started"), Some("action.ended"))
        );
        assert_eq!(pair[0]["label"], pair[1]["label"]);
        assert!(pair[1]["media_time"].as_f64() >= pair[0]["media_time"].as_f64());
    }
    // Stream events frame the run; the file ended normally at its last frame (~5.24 s).
    assert_eq!(ev.first().unwrap()["type"], "stream.up");
    let down = ev.last().unwrap();
    assert_eq!(
        (down["type"].as_str(), down["reason"].as_str()),
        (Some("stream.down"), Some("end_of_file"))
    );
    assert!(
        (down["media_time"].as_f64().unwrap() - 5.24).abs() < 0.05,
        "{down}"
    );

    let ids: std::collections::HashSet<&str> =
        ev.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), ev.len(), "event ids are unique");
    let from_file = events(&std::fs::read_to_string(&jsonl).unwrap());
    assert_eq!(
        from_file, ev,
        "the JSONL file holds exactly what stdout printed"
    );
}

/// `(classified, skipped)` from `vigil run`'s summary line.
fn clip_counts(log: &str) -> (u64, u64) {
    let line = log
        .lines()
        .find(|l| l.contains("clips classified"))
        .unwrap_or_else(|| panic!("no summary line in\n{log}"));
    let words: Vec<&str> = line
        .split([' ', ',', ';'])
        .filter(|w| !w.is_empty())
        .collect();
    let before = |w: &str| -> u64 {
        let i = words.iter().position(|x| *x == w).unwrap();
        words[i - 1].parse().unwrap()
    };
    (before("clips"), before("skipped"))
}

/// The action events as (type, label, media time) for comparing runs.
fn actions(ev: &[Value]) -> Vec<(String, String, f64)> {
    ev.iter()
        .filter(|e| e["type"].as_str().unwrap().starts_with("action."))
        .map(|e| {
            (
                e["type"].as_str().unwrap().to_string(),
                e["label"].as_str().unwrap().to_string(),
                e["media_time"].as_f64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn arm_wrestling_is_recognised_with_its_start_and_end() {
    let Some(video) = shared_media_or_ci("action/arm_wrestling.mp4") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "streams:\n  - id: gym\n    url: {}\n{}metrics: {{enabled: false}}\n",
        video.display(),
        model_yaml()
    );
    let out = run(&write_config(dir.path(), &yaml));
    assert!(out.status.success(), "{}", stderr(&out));
    let ev = events(&String::from_utf8_lossy(&out.stdout));
    let started = started_with(&ev, "arm wrestling");
    assert_eq!(
        started.len(),
        1,
        "one segment, not one event per clip: {ev:#?}"
    );
    assert!(
        started[0]["score"].as_f64().unwrap() > 0.9,
        "{}",
        started[0]
    );
    let ended: Vec<&Value> = of_type(&ev, "action.ended")
        .into_iter()
        .filter(|e| e["label"] == "arm wrestling")
        .collect();
    assert_eq!(ended.len(), 1, "{ev:#?}");
    assert!(ended[0]["media_time"].as_f64() > started[0]["media_time"].as_f64());

    // The default schedule skipped clips while the label was stable; with every clip
    // classified the events are the same.
    let (classified, skipped) = clip_counts(&stderr(&out));
    let dense_yaml = yaml.replace("action:\n", "action:\n  schedule: {adaptive: false}\n");
    let dense = run(&write_config(dir.path(), &dense_yaml));
    assert!(dense.status.success(), "{}", stderr(&dense));
    let (all, none) = clip_counts(&stderr(&dense));
    assert_eq!(
        (classified + skipped, none),
        (all, 0),
        "every clip is counted once"
    );
    assert!(
        skipped * 2 >= all,
        "a stable label skips at least half the clips: {classified} classified, {skipped} skipped of {all}"
    );
    let dense_ev = events(&String::from_utf8_lossy(&dense.stdout));
    assert_eq!(actions(&ev), actions(&dense_ev));
}

#[test]
fn two_files_run_as_two_streams_in_one_process() {
    let dir = tempfile::tempdir().unwrap();
    let bunny = built("media/bigbuckbunny.mp4");
    // A short window keeps this test quick; the label must survive it.
    let yaml = format!(
        "streams:\n  - id: one\n    url: {b}\n  - id: two\n    url: {b}\n{}  frames: 16\n  stride: 64\n  max_batch: 2\nmetrics: {{enabled: false}}\n{}",
        action_yaml(),
        runtime_yaml(),
        b = bunny.display()
    );
    let out = run(&write_config(dir.path(), &yaml));
    assert!(out.status.success(), "{}", stderr(&out));
    let ev = events(&String::from_utf8_lossy(&out.stdout));
    for stream in ["one", "two"] {
        let mine: Vec<&Value> = ev.iter().filter(|e| e["stream"] == stream).collect();
        assert!(
            mine.iter()
                .any(|e| e["type"] == "action.started" && e["label"] == "feeding birds"),
            "stream {stream}: {mine:#?}"
        );
        assert_eq!(
            of_type(&ev, "stream.down")
                .iter()
                .filter(|e| e["stream"] == stream)
                .count(),
            1
        );
    }
}

#[test]
fn each_started_segment_gets_a_snapshot_of_its_clip() {
    let dir = tempfile::tempdir().unwrap();
    let snaps = dir.path().join("snaps");
    std::fs::create_dir(&snaps).unwrap();
    let yaml = format!(
        "streams:\n  - id: bunny\n    url: {}\n{}  smoother: {{min_duration_ms: 0}}\n  snapshots: {}\nmetrics: {{enabled: false}}\n{}",
        built("media/bigbuckbunny.mp4").display(),
        action_yaml(),
        snaps.display(),
        runtime_yaml()
    );
    let out = run(&write_config(dir.path(), &yaml));
    assert!(out.status.success(), "{}", stderr(&out));
    let ev = events(&String::from_utf8_lossy(&out.stdout));
    let started = of_type(&ev, "action.started");
    assert!(!started.is_empty());
    for e in &started {
        let path = e["snapshot"]
            .as_str()
            .unwrap_or_else(|| panic!("no snapshot: {e}"));
        let start = e["clip"]["start"].as_f64().unwrap();
        assert!(path.ends_with(&format!("bunny-{start:.3}.jpg")), "{path}");
        let probe = std::process::Command::new("ffprobe")
            .args([
                "-v",
                "error",
                "-show_entries",
                "stream=codec_name,width,height",
            ])
            .args(["-of", "csv=p=0", path])
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&probe.stdout).trim(),
            "mjpeg,1280,720"
        );
    }
    // Only segment starts are written, never every clip.
    let files = std::fs::read_dir(&snaps).unwrap().count();
    assert_eq!(files, started.len());
    assert!(of_type(&ev, "action.ended")
        .iter()
        .all(|e| e.get("snapshot").is_none()));
}
