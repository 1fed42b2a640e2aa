//! A signal mid-run: vigil stops reading, finishes what is queued, closes every segment and
//! exits 0 with complete JSON lines.

mod common;

use common::*;
use std::process::Command;

#[test]
fn sigint_mid_run_drains_and_exits_0_with_complete_events() {
    let dir = tempfile::tempdir().unwrap();
    let jsonl = dir.path().join("events.jsonl");
    let yaml = format!(
        "streams:\n  - id: bunny\n    url: {}\n{}  frames: 16\n  stride: 8\n  smoother: {{min_duration_ms: 0}}\nsinks:\n  - type: file\n    path: {}\nmetrics: {{enabled: false}}\n{}",
        built("media/bigbuckbunny.mp4").display(),
        action_yaml(),
        jsonl.display(),
        runtime_yaml()
    );
    let config = write_config(dir.path(), &yaml);
    let mut child = spawn_run(&config);
    let logs = log_lines(&mut child);
    // Wait until the first segment is out, then interrupt: clips are still queued by then.
    while !std::fs::read_to_string(&jsonl)
        .unwrap_or_default()
        .contains("action.started")
    {
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert!(
            child.try_wait().unwrap().is_none(),
            "vigil ended before the signal"
        );
    }
    let st = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let logs: Vec<String> = logs.map_while(Result::ok).collect();
    let status = child.wait().unwrap();
    assert!(status.success(), "exit {status:?}\n{}", logs.join("\n"));
    assert!(logs.iter().any(|l| l.contains("stopping")), "{logs:?}");

    let text = std::fs::read_to_string(&jsonl).unwrap();
    assert!(text.ends_with('\n'), "the last line is complete");
    let ev = events(&text);
    let down = ev.last().unwrap();
    assert_eq!(
        (down["type"].as_str(), down["reason"].as_str()),
        (Some("stream.down"), Some("shutdown")),
        "{ev:#?}"
    );
    assert!(
        down["media_time"].as_f64().unwrap() < 5.2,
        "it stopped before the end of the file: {down}"
    );
    assert_eq!(
        of_type(&ev, "action.started").len(),
        of_type(&ev, "action.ended").len(),
        "every segment is closed"
    );
}

#[test]
fn a_closed_stderr_does_not_stop_a_signal_from_working() {
    // `vigil run 2>&1 | some-reader` where the reader dies: every later log line fails to
    // write. Logging must not take a thread down with it (it once killed the signal thread).
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let yaml = format!(
        "streams:\n  - {{id: loop, url: {}, loop: true}}\naction: {{enabled: false}}\nsinks: []\nmetrics: {{listen: '127.0.0.1:{port}'}}\n{}",
        built("media/bigbuckbunny.mp4").display(),
        runtime_yaml()
    );
    let config = write_config(dir.path(), &yaml);
    let mut child = spawn_run(&config);
    drop(child.stderr.take());
    let addr = format!("127.0.0.1:{port}");
    wait_for(
        "vigil to serve metrics",
        std::time::Duration::from_secs(30),
        || {
            try_get(&addr, "/metrics").is_ok_and(|(_, body)| {
                metric(&body, "vigil_frames_decoded_total{stream=\"loop\"}") > 100.0
            })
        },
    );
    signal(&child, "-TERM");
    let mut status = None;
    wait_for(
        "vigil to exit after SIGTERM",
        std::time::Duration::from_secs(30),
        || {
            status = child.try_wait().unwrap();
            status.is_some()
        },
    );
    assert!(status.unwrap().success(), "{status:?}");
}

/// Issue 16 item 10: the second signal exits at once, without draining: exit code 130 (the
/// first alone drains and exits 0), while the classifier still has queued clips to score.
#[test]
fn a_second_signal_exits_at_once_with_130() {
    let dir = tempfile::tempdir().unwrap();
    let jsonl = dir.path().join("events.jsonl");
    let yaml = format!(
        "streams:\n  - {{id: bunny, url: {}, loop: true}}\n{}  frames: 16\n  stride: 8\n  smoother: {{min_duration_ms: 0}}\nsinks:\n  - type: file\n    path: {}\nmetrics: {{enabled: false}}\n{}",
        built("media/bigbuckbunny.mp4").display(),
        action_yaml(),
        jsonl.display(),
        runtime_yaml()
    );
    let mut child = spawn_run(&write_config(dir.path(), &yaml));
    let mut logs = log_lines(&mut child);
    // Mid-run: the first clip has been scored, more are queued behind the slow classifier.
    wait_for(
        "a first scored clip",
        std::time::Duration::from_secs(120),
        || {
            std::fs::read_to_string(&jsonl)
                .unwrap_or_default()
                .contains("action.started")
        },
    );
    signal(&child, "-INT");
    let stopping = logs
        .by_ref()
        .map_while(Result::ok)
        .any(|l| l.contains("signal again to exit at once"));
    assert!(stopping, "no `stopping` line after the first signal");
    signal(&child, "-INT");
    std::thread::spawn(move || logs.for_each(drop));
    let mut status = None;
    wait_for(
        "vigil to exit after the second signal",
        std::time::Duration::from_secs(60),
        || {
            status = child.try_wait().unwrap();
            status.is_some()
        },
    );
    assert_eq!(status.unwrap().code(), Some(130), "{status:?}");
}
