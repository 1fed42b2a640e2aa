//! Faces end to end: enrol from one photo, identify and verify from the command line, refuse
//! bad input without losing the gallery, and name the people in a real video once per track.

mod common;

use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A config with the face branch on, its gallery in `dir`.
fn faces_config(dir: &Path, stream: &Path, extra: &str) -> PathBuf {
    let yaml = format!(
        "streams:\n  - id: cam\n    url: {}\naction: {{enabled: false}}\nfaces:\n  enabled: true\n{extra}  detector:\n    type: mtcnn\n    pnet: {}\n    rnet: {}\n    onet: {}\n  embedder:\n    path: {}\ngallery:\n  path: {}\nmetrics: {{enabled: false}}\n{}",
        stream.display(),
        built("models/mtcnn_pnet.onnx").display(),
        built("models/mtcnn_rnet.onnx").display(),
        built("models/mtcnn_onet.onnx").display(),
        built("models/dlib_resnet.onnx").display(),
        dir.join("gallery.json").display(),
        runtime_yaml()
    );
    write_config(dir, &yaml)
}

fn photo(name: &str) -> String {
    built(&format!("media/faces/{name}")).display().to_string()
}

fn identities(v: &Value) -> Vec<Option<String>> {
    v["faces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["identity"].as_str().map(String::from))
        .collect()
}

#[test]
fn one_photo_enrols_a_person_who_is_then_identified_and_verified() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = faces_config(dir.path(), &built("media/bigbuckbunny.mp4"), "");
    ok_json(&gallery(
        &cfg,
        &["enroll", "--name", "obama", &photo("obama.jpg")],
    ));
    ok_json(&gallery(
        &cfg,
        &["enroll", "--name", "biden", &photo("biden.jpg")],
    ));
    let list = ok_json(&gallery(&cfg, &["list"]));
    assert_eq!(list["people"].as_array().unwrap().len(), 2);

    for p in ["obama2.jpg", "obama3.jpg"] {
        let v = ok_json(&gallery(&cfg, &["identify", &photo(p)]));
        assert_eq!(identities(&v), vec![Some("obama".to_string())], "{p}: {v}");
        let best = &v["faces"][0]["candidates"];
        assert!(
            best[0]["distance"].as_f64().unwrap() < 0.6
                && best[1]["distance"].as_f64().unwrap() > 0.6,
            "{v}"
        );
    }
    let same = gallery(&cfg, &["verify", "--name", "obama", &photo("obama2.jpg")]);
    assert_eq!(ok_json(&same)["same"], true);
    let different = gallery(&cfg, &["verify", "--name", "obama", &photo("biden.jpg")]);
    assert_eq!(
        different.status.code(),
        Some(3),
        "exit 3 means a different person"
    );
    let v: Value = serde_json::from_slice(&different.stdout).unwrap();
    assert!(v["distance"].as_f64().unwrap() > 0.6, "{v}");

    let removed = ok_json(&gallery(&cfg, &["remove", "--name", "biden"]));
    assert_eq!(removed["removed"], "biden");
    assert_eq!(
        ok_json(&gallery(&cfg, &["list"]))["people"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn bad_input_gets_a_clear_error_and_the_gallery_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cfg = faces_config(d, &built("media/bigbuckbunny.mp4"), "");
    ok_json(&gallery(
        &cfg,
        &["enroll", "--name", "obama", &photo("obama.jpg")],
    ));
    let saved = std::fs::read(d.join("gallery.json")).unwrap();

    // An image with no face: a grey frame. A text file named .jpg. A PNG header claiming
    // 20000x20000 pixels. Two people side by side.
    let grey = d.join("grey.png");
    assert!(Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "color=gray:s=640x480",
            "-frames:v",
            "1"
        ])
        .arg(&grey)
        .status()
        .unwrap()
        .success());
    let text = d.join("notes.jpg");
    std::fs::write(&text, "not an image").unwrap();
    let huge = d.join("huge.png");
    let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
    png.extend(20000u32.to_be_bytes());
    png.extend(20000u32.to_be_bytes());
    png.extend([8, 2, 0, 0, 0, 0, 0, 0, 0]);
    std::fs::write(&huge, png).unwrap();
    let pair = d.join("pair.jpg");
    let st = Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-y",
            "-i",
            &photo("obama.jpg"),
            "-i",
            &photo("biden.jpg"),
            "-filter_complex",
            "[0]scale=-2:600[a];[1]scale=-2:600[b];[a][b]hstack",
        ])
        .arg(&pair)
        .status()
        .unwrap();
    assert!(st.success());

    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![
                "enroll".into(),
                "--name".into(),
                "x".into(),
                grey.display().to_string(),
            ],
            "no face found",
        ),
        (
            vec![
                "enroll".into(),
                "--name".into(),
                "x".into(),
                text.display().to_string(),
            ],
            "not a JPEG, PNG or BMP image",
        ),
        (
            vec![
                "enroll".into(),
                "--name".into(),
                "x".into(),
                huge.display().to_string(),
            ],
            "20000x20000 is 400000000 pixels, over the limit",
        ),
        (
            vec![
                "enroll".into(),
                "--name".into(),
                "x".into(),
                pair.display().to_string(),
            ],
            "2 faces found, largest first",
        ),
        // One bad photo among good ones: nothing is enrolled.
        (
            vec![
                "enroll".into(),
                "--name".into(),
                "y".into(),
                photo("obama2.jpg"),
                grey.display().to_string(),
            ],
            "no face found",
        ),
        (
            vec![
                "enroll".into(),
                "--name".into(),
                "a/b".into(),
                photo("obama2.jpg"),
            ],
            "invalid name \"a/b\"",
        ),
        (
            vec![
                "verify".into(),
                "--name".into(),
                "nobody".into(),
                photo("obama2.jpg"),
            ],
            "no one named \"nobody\"",
        ),
        (
            vec!["remove".into(), "--name".into(), "nobody".into()],
            "no one named \"nobody\"",
        ),
    ];
    for (args, want) in cases {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = gallery(&cfg, &refs);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(want),
            "{args:?}: wanted {want:?} in {}",
            stderr(&out)
        );
        assert_eq!(
            std::fs::read(d.join("gallery.json")).unwrap(),
            saved,
            "{args:?} changed the gallery"
        );
    }
    // Told which face, the pair photo enrols (the larger face is 0): face 1 is Biden's, the
    // smaller and on the right half, and Biden is who "pick" now names.
    let enrolled = ok_json(&gallery(
        &cfg,
        &[
            "enroll",
            "--name",
            "pick",
            "--face",
            "1",
            pair.to_str().unwrap(),
        ],
    ));
    let left_edge = enrolled["photos"][0]["box"][0].as_f64().unwrap();
    assert!(left_edge > 450.0, "not the right-hand face: {enrolled}");
    let who = |p: &str| identities(&ok_json(&gallery(&cfg, &["identify", p])));
    assert_eq!(who(&photo("biden.jpg")), [Some("pick".to_string())]);
    assert_eq!(who(&photo("obama2.jpg")), [Some("obama".to_string())]);

    // A corrupt gallery file is refused, named, and left as it was.
    std::fs::write(
        d.join("gallery.json"),
        b"{\"format\": \"vigil-gallery\", \"version\": 1, \"peo",
    )
    .unwrap();
    let out = gallery(&cfg, &["enroll", "--name", "x", &photo("obama2.jpg")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("gallery.path: gallery")
            && stderr(&out).contains("is not a vigil gallery file or is corrupt"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        std::fs::read(d.join("gallery.json")).unwrap(),
        b"{\"format\": \"vigil-gallery\", \"version\": 1, \"peo"
    );
}

#[test]
fn every_face_in_the_shared_group_photos_is_found_and_named() {
    let Some(faces) = shared_media_or_ci("faces") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cfg = faces_config(dir.path(), &built("media/bigbuckbunny.mp4"), "");
    ok_json(&gallery(
        &cfg,
        &["enroll", "--name", "obama", &photo("obama.jpg")],
    ));
    ok_json(&gallery(
        &cfg,
        &[
            "enroll",
            "--name",
            "biden",
            faces.join("biden.jpg").to_str().unwrap(),
        ],
    ));

    let v = ok_json(&gallery(
        &cfg,
        &["identify", faces.join("biden2.jpg").to_str().unwrap()],
    ));
    assert_eq!(identities(&v), vec![Some("biden".to_string())], "{v}");

    // MODELS.md section 2: MTCNN finds (235,28,385,223) and (788,46,942,255) here.
    let v = ok_json(&gallery(
        &cfg,
        &["identify", faces.join("two_people.jpg").to_str().unwrap()],
    ));
    assert_eq!(
        identities(&v),
        vec![Some("obama".to_string()), Some("biden".to_string())],
        "{v}"
    );
    for (face, want) in v["faces"]
        .as_array()
        .unwrap()
        .iter()
        .zip([[235.0, 28.0, 385.0, 223.0], [788.0, 46.0, 942.0, 255.0]])
    {
        let got: Vec<f64> = face["box"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        assert!(
            got.iter().zip(want).all(|(g, w)| (g - w).abs() <= 3.0),
            "box {got:?} vs {want:?}"
        );
    }

    // Obama and Biden are both named; a third, smaller face (a child) is nobody enrolled.
    let v = ok_json(&gallery(
        &cfg,
        &[
            "identify",
            faces.join("obama_and_biden.jpg").to_str().unwrap(),
        ],
    ));
    let ids = identities(&v);
    assert!(
        ids.contains(&Some("obama".into())) && ids.contains(&Some("biden".into())),
        "{v}"
    );
    assert_eq!(
        ids.iter().filter(|i| i.is_some()).count(),
        2,
        "no one is named twice: {v}"
    );
}

#[test]
fn the_hamilton_clip_names_miranda_and_lacamoire_once_per_track_and_no_one_wrongly() {
    let Some(faces) = shared_media_or_ci("faces") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let jsonl = dir.path().join("events.jsonl");
    let cfg = faces_config(
        dir.path(),
        &faces.join("short_hamilton_clip.mp4"),
        &format!("  sample_fps: 10\n  snapshots: {}\n", dir.path().display()),
    );
    let cfg_text = std::fs::read_to_string(&cfg).unwrap()
        + &format!("sinks:\n  - type: file\n    path: {}\n", jsonl.display());
    std::fs::write(&cfg, cfg_text).unwrap();
    for (name, file) in [
        ("Lin-Manuel Miranda", "lin-manuel-miranda.png"),
        ("Alex Lacamoire", "alex-lacamoire.png"),
        ("obama", "obama.jpg"),
        ("biden", "biden.jpg"),
    ] {
        ok_json(&gallery(
            &cfg,
            &["enroll", "--name", name, faces.join(file).to_str().unwrap()],
        ));
    }
    let out = run(&cfg);
    assert_no_panic(&out);
    assert!(out.status.success(), "{}", stderr(&out));
    let ev = events(&std::fs::read_to_string(&jsonl).unwrap());
    let named: Vec<&Value> = of_type(&ev, "face.identified");
    let who: std::collections::HashSet<&str> = named
        .iter()
        .map(|e| e["identity"].as_str().unwrap())
        .collect();
    assert!(
        who.contains("Lin-Manuel Miranda") && who.contains("Alex Lacamoire"),
        "{named:#?}"
    );
    assert!(
        who.iter()
            .all(|w| ["Lin-Manuel Miranda", "Alex Lacamoire"].contains(w)),
        "only the two of them are on stage: {named:#?}"
    );
    // Once per track: a track id reports again only with a changed decision.
    let face_events: Vec<&Value> = ev
        .iter()
        .filter(|e| e["type"].as_str().unwrap().starts_with("face."))
        .collect();
    let mut last: std::collections::HashMap<u64, Option<&str>> = Default::default();
    for e in &face_events {
        let id = e["track_id"].as_u64().unwrap();
        let decision = e["identity"].as_str();
        assert_ne!(
            last.insert(id, decision),
            Some(decision),
            "track {id} repeated its decision: {face_events:#?}"
        );
        assert!(Path::new(
            e["snapshot"]
                .as_str()
                .unwrap_or_else(|| panic!("snapshot path {e}\n{}", stderr(&out)))
        )
        .exists());
    }
    let sampled_frames = 92; // 9.14 s at 10 fps
    assert!(
        face_events.len() < sampled_frames / 4,
        "events per track, not per frame: {}",
        face_events.len()
    );
}

#[test]
fn faces_from_two_streams_are_embedded_together_and_named_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let demo = built("media/faces_demo.mp4");
    let cfg = faces_config(dir.path(), &demo, "");
    let out = gallery(&cfg, &["enroll", "--name", "obama", &photo("obama.jpg")]);
    ok_json(&out);
    let one = std::fs::read_to_string(&cfg).unwrap();
    let stream = format!("  - id: cam\n    url: {}\n", demo.display());
    let two = one.replace(
        &stream,
        &format!("{stream}  - id: cam2\n    url: {}\n", demo.display()),
    );
    assert_ne!(one, two);
    std::fs::write(&cfg, two).unwrap();
    let out = vigil()
        .env("VIGIL_LOG", "info,vigil::face::worker=trace")
        .args(["run", "--no-progress", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let ev = events(&String::from_utf8_lossy(&out.stdout));
    let story = |s: &str| -> Vec<String> {
        ev.iter()
            .filter(|e| e["stream"] == s && e["type"].as_str().unwrap().starts_with("face."))
            .map(|e| format!("{} {}", e["type"], e["identity"]))
            .collect()
    };
    let (a, b) = (story("cam"), story("cam2"));
    assert_eq!(a, b, "the same video gives the same faces on both streams");
    assert_eq!(
        a.iter().filter(|s| s.contains("\"obama\"")).count(),
        2,
        "{a:?}"
    );
    assert!(a.iter().any(|s| s.starts_with("\"face.unknown\"")), "{a:?}");
    // Frames of both streams waiting together went through the embedder in one call.
    let logs = stderr(&out);
    assert!(
        logs.lines()
            .any(|l| l.contains("embed") && l.contains("frames=2")),
        "no embedding call covered two streams:\n{logs}"
    );
}

/// Issue 16 item 3: a link planted at a snapshot name vigil is about to use (the names are
/// predictable: `<stream>-<media time>-track<N>.jpg`) is neither followed nor replaced. A first
/// run of the demo clip tells the names; the second run finds a link at each of them.
#[test]
fn a_link_planted_at_a_face_snapshot_name_is_not_followed_and_its_target_is_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let shots = dir.path().join("shots");
    std::fs::create_dir(&shots).unwrap();
    let cfg = faces_config(
        dir.path(),
        &built("media/faces_demo.mp4"),
        &format!("  snapshots: {}\n", shots.display()),
    );
    ok_json(&gallery(
        &cfg,
        &["enroll", "--name", "obama", &photo("obama.jpg")],
    ));
    let snapshots = |out: &Output| -> Vec<PathBuf> {
        assert_no_panic(out);
        assert!(out.status.success(), "{}", stderr(out));
        events(&String::from_utf8_lossy(&out.stdout))
            .iter()
            .filter(|e| e["type"].as_str().unwrap().starts_with("face."))
            .map(|e| PathBuf::from(e["snapshot"].as_str().expect("a snapshot path")))
            .collect()
    };
    let first = snapshots(&run(&cfg));
    assert!(!first.is_empty(), "the demo clip has faces");

    // The same run again, into an emptied folder with a link at every name it used.
    std::fs::remove_dir_all(&shots).unwrap();
    std::fs::create_dir(&shots).unwrap();
    let precious = dir.path().join("precious.txt");
    std::fs::write(&precious, "keep me").unwrap();
    for p in &first {
        std::os::unix::fs::symlink(&precious, p).unwrap();
    }
    let second = snapshots(&run(&cfg));
    assert_eq!(
        std::fs::read_to_string(&precious).unwrap(),
        "keep me",
        "the link's target was written through"
    );
    assert_eq!(second.len(), first.len(), "{second:?} vs {first:?}");
    for (now, planted) in second.iter().zip(&first) {
        assert_ne!(now, planted, "the event names the planted link");
        let meta = std::fs::symlink_metadata(now).unwrap();
        assert!(
            meta.file_type().is_file(),
            "{} is not a plain file",
            now.display()
        );
        assert!(std::fs::read(now).unwrap().starts_with(&[0xFF, 0xD8]));
        // The planted link is still there, still pointing where it did.
        assert_eq!(std::fs::read_link(planted).unwrap(), precious);
    }
}

/// Issue 16 item 10: `faces.detect_interval` above 1 (the path the faces benchmark relies on):
/// between full searches the tracked faces are found again near their boxes, and the people
/// are still named as with a full search on every frame (Obama twice, Biden unknown).
#[test]
fn detect_interval_3_searches_every_third_frame_and_still_names_the_same_people() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = faces_config(
        dir.path(),
        &built("media/faces_demo.mp4"),
        "  detect_interval: 3\n",
    );
    ok_json(&gallery(
        &cfg,
        &["enroll", "--name", "obama", &photo("obama.jpg")],
    ));
    let out = vigil()
        .env("VIGIL_LOG", "info,vigil::face::worker=trace")
        .args(["run", "--no-progress", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_no_panic(&out);
    assert!(out.status.success(), "{}", stderr(&out));
    let logs = stderr(&out);
    let searches = |full: bool| {
        logs.lines()
            .filter(|l| l.contains(" detect") && l.contains(&format!("full_search={full}")))
            .count()
    };
    let (full, near) = (searches(true), searches(false));
    assert!(
        full > 0 && near > 0,
        "{full} full searches, {near} near tracked faces"
    );
    let story: Vec<String> = events(&String::from_utf8_lossy(&out.stdout))
        .iter()
        .filter(|e| e["type"].as_str().unwrap().starts_with("face."))
        .map(|e| format!("{} {}", e["type"], e["identity"]))
        .collect();
    eprintln!("{full} full searches, {near} near tracked faces: {story:?}");
    assert_eq!(
        story.iter().filter(|s| s.contains("\"obama\"")).count(),
        2,
        "{story:?}"
    );
    assert!(
        story.iter().any(|s| s.starts_with("\"face.unknown\"")),
        "{story:?}"
    );
    assert!(
        story
            .iter()
            .all(|s| s.contains("\"obama\"") || s.starts_with("\"face.unknown\"")),
        "{story:?}"
    );
}

/// Issue 17 item 4: one full search split over lanes (each lane single-threaded sessions, the
/// pyramid's levels and the R-Net/O-Net batches shared out) finds exactly the faces that one
/// lane finds, box for box, on real frames of the Hamilton clip.
#[test]
fn a_search_split_over_lanes_finds_exactly_the_faces_of_one_lane() {
    use opencv::prelude::*;
    use vigil::face::detector::{FaceDetector, Mtcnn, MtcnnParams};
    let Some(faces) = shared_media_or_ci("faces") else {
        return;
    };
    let env = vigil::infer::environment(&built("lib/libonnxruntime.so")).unwrap();
    let load = |intra_threads| {
        let opts = vigil::infer::SessionOptions {
            provider: vigil::config::ExecutionProvider::Cpu,
            intra_threads,
            cpu_arena: false,
        };
        Mtcnn::load(
            &env,
            &built("models/mtcnn_pnet.onnx"),
            &built("models/mtcnn_rnet.onnx"),
            &built("models/mtcnn_onet.onnx"),
            MtcnnParams {
                min_face_px: 20.0,
                scale_factor: 0.709,
                thresholds: [0.6, 0.7, 0.7],
                min_probability: 0.95,
            },
            &opts,
        )
        .unwrap()
    };
    let (mut one, mut two, mut three) = (load(1), load(2), load(3));
    let mut cap = opencv::videoio::VideoCapture::from_file(
        faces.join("short_hamilton_clip.mp4").to_str().unwrap(),
        opencv::videoio::CAP_ANY,
    )
    .unwrap();
    let (mut frame, mut n, mut found) = (opencv::core::Mat::default(), 0, 0);
    while cap.read(&mut frame).unwrap() && n < 250 {
        n += 1;
        if n % 25 != 0 {
            continue;
        }
        let want = one.detect(&frame).unwrap();
        found += want.len();
        for other in [&mut two, &mut three] {
            let got = other.detect(&frame).unwrap();
            assert_eq!(got.len(), want.len(), "frame {n}: {got:?} vs {want:?}");
            for (g, w) in got.iter().zip(&want) {
                let close =
                    |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-3);
                assert!(
                    close(&g.bbox, &w.bbox) && (g.prob - w.prob).abs() < 1e-5,
                    "frame {n}: {g:?} vs {w:?}"
                );
                assert!(close(
                    g.landmarks.as_flattened(),
                    w.landmarks.as_flattened()
                ));
            }
        }
    }
    assert_eq!(n, 250, "the clip has at least 250 frames");
    assert!(found >= 10, "only {found} faces in 10 frames of the clip");
}

/// `faces.nice` and `action.nice`: the face worker and its detector's lanes, and the action
/// classifier, run that much lower than the rest of vigil (Linux nice, per thread), which stays
/// at the nice it was started with.
#[test]
fn the_branches_run_at_the_nice_their_config_asks_for() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "streams:\n  - {{id: cam, url: '{}', loop: true, realtime: true}}\n{}  nice: 3\n{}sinks: []\nmetrics: {{listen: '127.0.0.1:0'}}\n{}  intra_threads: 2\n",
        built("media/faces_demo.mp4").display(),
        action_yaml(),
        faces_yaml(&dir.path().join("gallery.json"))
            .replace("faces:\n  enabled: true\n", "faces:\n  enabled: true\n  nice: 7\n"),
        runtime_yaml()
    );
    let mut child = spawn_run(&write_config(dir.path(), &yaml));
    let _addr = metrics_addr(&mut child);
    let pid = child.id();
    let of = |all: &[(String, i64)], name: &str| -> Vec<i64> {
        all.iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| *v)
            .collect()
    };
    // The stream's own threads (with the decoder's and OpenCV's helpers, which take the name
    // of the thread that starts them) keep vigil's priority. The looped file is opened again
    // at each pass, so they are looked at when they are all there.
    let stream_threads = ["src-cam", "act-cam", "face-cam"];
    let mut all = Vec::new();
    wait_for(
        "the face worker, the classifier and the stream's threads at work",
        std::time::Duration::from_secs(60),
        || {
            all = thread_nices(pid);
            of(&all, "faces") == [7]
                && of(&all, "classifier") == [3]
                && of(&all, "face-lane1") == [7]
                && stream_threads.iter().all(|n| !of(&all, n).is_empty())
        },
    );
    for name in stream_threads {
        assert!(of(&all, name).iter().all(|n| *n == 0), "{name}: {all:?}");
    }
    signal(&child, "-TERM");
    assert!(child.wait().unwrap().success());

    // Out of range is a config error naming the key.
    let bad = yaml.replace("  nice: 7\n", "  nice: 20\n");
    let out = vigil()
        .args(["check", "--config"])
        .arg(write_config(dir.path(), &bad))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("faces.nice") && err.contains("0..=19"),
        "{err}"
    );
}
