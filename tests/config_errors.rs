//! Bad configs and bad media: `vigil check` and `vigil run` list every problem with
//! `file:line:column: field.path: message`, exit 2, and never panic.

mod common;

use common::*;
use std::path::Path;
use std::process::Command;

struct Case {
    name: &'static str,
    yaml: String,
    /// Each expected problem: `line:col: path: message start`.
    expect: Vec<String>,
}

/// Media that must be refused, made fresh for each run.
fn make_bad_media(dir: &Path) {
    std::fs::write(dir.join("empty.mp4"), b"").unwrap();
    std::fs::write(
        dir.join("notes.mp4"),
        "this is a text file, not a video\n".repeat(100),
    )
    .unwrap();
    std::fs::create_dir(dir.join("folder.mp4")).unwrap();
    // Random bytes in a video's clothing.
    let noise: Vec<u8> = (0..200_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(dir.join("noise.mp4"), noise).unwrap();
    // The first half of an MP4 whose index sits at the end: no index, no video.
    let bunny = std::fs::read(built("media/bigbuckbunny.mp4")).unwrap();
    std::fs::write(dir.join("half.mp4"), &bunny[..bunny.len() / 2]).unwrap();
    // A real MP4 with an audio track and zero video frames.
    let st = Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:duration=1",
            "-c:a",
            "aac",
        ])
        .arg(dir.join("audio_only.mp4"))
        .status()
        .expect("ffmpeg (installed by the set-up)");
    assert!(st.success());
}

fn cases(dir: &Path) -> Vec<Case> {
    let video = built("media/bigbuckbunny.mp4");
    let v = video.display();
    let d = dir.display();
    let model = model_yaml();
    let ok_stream = format!("streams:\n  - id: cam\n    url: {v}\n");
    let media = |file: &str| format!("streams:\n  - id: cam\n    url: {d}/{file}\n{model}");
    vec![
        Case { name: "empty file", yaml: String::new(), expect: vec!["1:1: the file is empty".into()] },
        Case {
            name: "unknown top-level key",
            yaml: format!("{ok_stream}{model}face_gallery: x\n"),
            expect: vec!["10:1: unknown field `face_gallery`, expected one of `streams`".into()],
        },
        Case {
            name: "misspelt stream key",
            yaml: format!("streams:\n  - id: cam\n    uri: {v}\n{model}"),
            expect: vec!["3:5: streams[0]: unknown field `uri`, expected one of `id`, `url`, `branches`".into()],
        },
        Case {
            name: "wrong type",
            yaml: format!("{ok_stream}{}  frames: many\n{}", action_yaml(), runtime_yaml()),
            expect: vec!["8:11: action.frames: invalid type: string \"many\", expected usize".into()],
        },
        Case {
            name: "streams missing",
            yaml: model.clone(),
            expect: vec!["streams: at least one stream is needed (or an `api` section".into()],
        },
        Case { name: "YAML syntax", yaml: format!("{ok_stream}action: {{enabled: [true}}\n"), expect: vec!["4:".into()] },
        Case {
            name: "unknown sink type",
            yaml: format!("{ok_stream}{model}sinks:\n  - type: kafka\n"),
            expect: vec!["11:11: sinks[0].type: unknown variant `kafka`, expected one of `stdout`, `file`, `mqtt`, `webhook`".into()],
        },
        Case {
            name: "every range problem at once",
            yaml: format!("streams:\n  - id: 'lobby cam'\n    url: {v}\n  - id: ok\n    url: {v}\n{}  sample_fps: 0\n  max_batch: 0\n  smoother:\n    start_threshold: 1.5\n    end_threshold: 0.9\nmetrics:\n  listen: localhost\n{}", action_yaml(), runtime_yaml()),
            expect: vec![
                "2:9: streams[0].id: `lobby cam` contains ' '".into(),
                "10:15: action.sample_fps: must be above 0".into(),
                "11:14: action.max_batch: must be 1..=256".into(),
                "13:22: action.smoother.start_threshold: must be a probability in 0..1, got 1.5".into(),
                "16:11: metrics.listen: `localhost` is not an address:port".into(),
            ],
        },
        Case {
            name: "a stream asks for a disabled branch",
            yaml: format!("streams:\n  - id: cam\n    url: {v}\n    branches: [action, faces]\n{model}"),
            expect: vec!["4:15: streams[0].branches: lists `faces`, but faces.enabled is false".into()],
        },
        Case {
            name: "duplicate stream ids",
            yaml: format!("streams:\n  - {{id: cam, url: {v}}}\n  - {{id: cam, url: {v}}}\n{model}"),
            expect: vec!["3:10: streams[1].id: stream id `cam` is used twice".into()],
        },
        Case {
            name: "missing model file",
            yaml: format!("{ok_stream}action:\n  model:\n    path: {d}/nope.onnx\n    labels: {}\n{}", built("models/kinetics400_labels.txt").display(), runtime_yaml()),
            expect: vec![format!("6:11: action.model.path: {d}/nope.onnx: no such file")],
        },
        Case {
            name: "model is not an ONNX file",
            yaml: format!("{ok_stream}action:\n  model:\n    path: {v}\n    labels: {}\n{}", built("models/kinetics400_labels.txt").display(), runtime_yaml()),
            expect: vec![format!("6:11: action.model.path: cannot load model {v}")],
        },
        Case {
            name: "missing ONNX Runtime library",
            yaml: format!("{ok_stream}{}runtime:\n  onnxruntime_library: {d}/libonnxruntime.so\n", action_yaml()),
            expect: vec![format!("9:24: runtime.onnxruntime_library: {d}/libonnxruntime.so: no such file")],
        },
        Case {
            name: "no silent CPU fallback",
            yaml: format!("{ok_stream}{model}  execution_provider: cuda\n"),
            expect: vec!["runtime.execution_provider: execution provider `cuda` is not available".into()],
        },
        Case {
            name: "clip too short for the model",
            yaml: format!("{ok_stream}{}  frames: 4\n{}", action_yaml(), runtime_yaml()),
            expect: vec!["action.model: model".into(), "a 4-frame clip".into()],
        },
        Case {
            name: "crop does not fit the model",
            yaml: format!("{ok_stream}{}  crop: 112\n  resize_short_side: 128\n{}", action_yaml(), runtime_yaml()),
            expect: vec!["action.model: model".into(), "height is 224 in the model but 112 in the config".into()],
        },
        Case { name: "empty video file", yaml: media("empty.mp4"), expect: vec![format!("3:10: streams[0].url: {d}/empty.mp4: cannot be opened as a video (the file is empty)")] },
        Case { name: "text file as video", yaml: media("notes.mp4"), expect: vec![format!("3:10: streams[0].url: {d}/notes.mp4: cannot be opened as a video")] },
        Case { name: "directory as video", yaml: media("folder.mp4"), expect: vec![format!("3:10: streams[0].url: {d}/folder.mp4 is a directory, not a file")] },
        Case { name: "random bytes as video", yaml: media("noise.mp4"), expect: vec![format!("3:10: streams[0].url: {d}/noise.mp4: cannot be opened as a video")] },
        Case {
            name: "truncated MP4 without its index",
            yaml: media("half.mp4"),
            expect: vec![
                format!("3:10: streams[0].url: {d}/half.mp4: cannot be opened as a video (an MP4 file cut short"),
                "the file is truncated before its index".into(),
            ],
        },
        Case {
            name: "a key given twice in a section",
            yaml: format!("{ok_stream}{model}metrics:\n  enabled: false\n  enabled: true\n"),
            expect: vec!["12:3: metrics.enabled: duplicate field `enabled`".into()],
        },
        Case {
            name: "a top-level key given twice",
            yaml: format!("{ok_stream}{model}runtime:\n  intra_threads: 1\n"),
            expect: vec!["10:1: runtime: duplicate field `runtime`".into()],
        },
        Case {
            name: "an unknown key inside faces.detector",
            yaml: format!("{ok_stream}{model}faces:\n  enabled: true\n  detector:\n    type: mtcnn\n    pnet: a\n    rnet: b\n    onet: c\n    bogus: 1\n"),
            expect: vec!["17:12: faces.detector.bogus: unknown field `bogus`, expected one of `pnet`".into()],
        },
        Case {
            name: "a camera port that is not a number",
            yaml: format!("streams:\n  - id: cam\n    url: 'rtsp://u:p@127.0.0.1:abc/x'\n{model}"),
            expect: vec!["3:10: streams[0].url: rtsp://u:***@127.0.0.1:abc/x: port `abc` is not a number from 1 to 65535".into()],
        },
        Case { name: "video with zero frames", yaml: media("audio_only.mp4"), expect: vec![format!("3:10: streams[0].url: {d}/audio_only.mp4: ")] },
        Case {
            name: "unreadable path",
            yaml: format!("streams:\n  - id: cam\n    url: /etc/hostname/inside.mp4\n{model}"),
            expect: vec!["3:10: streams[0].url: /etc/hostname/inside.mp4: Not a directory".into()],
        },
    ]
}

#[test]
fn every_malformed_config_is_refused_with_a_located_message_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    make_bad_media(dir.path());
    let all = cases(dir.path());
    assert!(all.len() >= 10);
    let mut failures = Vec::new();
    for case in all {
        let config = write_config(dir.path(), &case.yaml);
        for (verb, out) in [("check", check(&config)), ("run", run(&config))] {
            assert_no_panic(&out);
            let err = stderr(&out);
            let prefix = format!("{}:", config.display());
            let code_ok = out.status.code() == Some(2);
            let located = err.lines().any(|l| l.trim_start().starts_with(&prefix));
            let missing: Vec<&String> = case
                .expect
                .iter()
                .filter(|e| {
                    !err.lines().any(|l| {
                        l.trim_start()
                            .strip_prefix(&prefix)
                            .is_some_and(|rest| rest.contains(e.as_str()))
                    })
                })
                .collect();
            if !code_ok || !located || !missing.is_empty() || !out.stdout.is_empty() {
                failures.push(format!(
                    "[{}] vigil {verb}: exit {:?}, missing {missing:?}, stdout {:?}\n{err}",
                    case.name,
                    out.status.code(),
                    String::from_utf8_lossy(&out.stdout)
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_missing_config_file_or_a_directory_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    for (path, msg) in [
        (dir.path().join("nope.yaml"), "cannot read the config file"),
        (dir.path().to_path_buf(), "is a directory"),
    ] {
        let out = check(&path);
        assert_no_panic(&out);
        assert_eq!(out.status.code(), Some(2));
        assert!(stderr(&out).contains(msg), "{}", stderr(&out));
    }
}

#[test]
fn a_video_truncated_mid_stream_gives_its_events_then_a_clear_error() {
    // An MP4 with its index first, cut in half: it opens and decodes about 49 of 132 frames.
    let dir = tempfile::tempdir().unwrap();
    let faststart = dir.path().join("faststart.mp4");
    let st = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-i"])
        .arg(built("media/bigbuckbunny.mp4"))
        .args(["-c", "copy", "-movflags", "+faststart"])
        .arg(&faststart)
        .status()
        .unwrap();
    assert!(st.success());
    let bytes = std::fs::read(&faststart).unwrap();
    let cut = dir.path().join("cut.mp4");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let yaml = format!("streams:\n  - id: cut\n    url: {}\n{}  frames: 16\n  stride: 16\n  smoother: {{min_duration_ms: 0}}\nmetrics: {{enabled: false}}\n{}", cut.display(), action_yaml(), runtime_yaml());
    let config = write_config(dir.path(), &yaml);

    let out = run(&config);
    assert_no_panic(&out);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("the stream stopped after")
            && err.contains("of 132 frames (truncated or corrupt file)"),
        "{err}"
    );
    let ev = events(&String::from_utf8_lossy(&out.stdout));
    assert!(
        of_type(&ev, "action.started")
            .iter()
            .any(|e| e["label"] == "feeding birds"),
        "what was readable is still classified: {ev:#?}"
    );
    let down = ev.last().unwrap();
    assert_eq!(
        (down["type"].as_str(), down["reason"].as_str()),
        (Some("stream.down"), Some("error"))
    );
    assert!(
        down["detail"].as_str().unwrap().contains("truncated"),
        "{down}"
    );
}
