//! `/metrics` during a real run: Prometheus' own checker accepts it, and the counters move.

mod common;

use common::*;
use std::process::Command;
use std::time::Duration;

fn get(addr: &str, path: &str) -> (u16, String) {
    try_get(addr, path).unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

#[test]
fn metrics_pass_promtool_and_count_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "streams:\n  - id: bunny\n    url: {}\n{}metrics:\n  listen: 127.0.0.1:0\n",
        built("media/bigbuckbunny.mp4").display(),
        model_yaml()
    );
    let config = write_config(dir.path(), &yaml);
    let mut child = spawn_run(&config);
    let addr = metrics_addr(&mut child);
    assert!(
        addr.starts_with("127.0.0.1:"),
        "listens on loopback by default: {addr}"
    );
    // The I3D run on this file takes many seconds; scrape while it works.
    let (code, during) = get(&addr, "/metrics");
    assert_eq!(code, 200);
    assert_eq!(get(&addr, "/healthz").0, 200);
    // Ready once the file has opened (a moment after its series exist).
    wait_for("/readyz to answer 200", Duration::from_secs(30), || {
        get(&addr, "/readyz").0 == 200
    });
    let text_file = dir.path().join("metrics.txt");
    std::fs::write(&text_file, &during).unwrap();
    let promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(&text_file).unwrap())
        .output()
        .expect("promtool (Debian package prometheus, installed by the set-up)");
    assert!(
        promtool.status.success(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&promtool.stdout),
        String::from_utf8_lossy(&promtool.stderr)
    );
    for name in [
        "vigil_frames_decoded_total",
        "vigil_frames_sampled_total",
        "vigil_clips_classified_total",
        "vigil_events_emitted_total",
        "vigil_inference_seconds_bucket",
        "vigil_queue_depth_items",
        "vigil_build_info",
        "process_resident_memory_bytes",
    ] {
        assert!(during.contains(name), "{name} missing from\n{during}");
    }
    // Scrape again near the end: decoding is done by then, so all 132 frames are counted.
    let mut last = during;
    while let Ok((200, text)) = try_get(&addr, "/metrics") {
        last = text;
        let clips = value(&last, "vigil_clips_classified_total{stream=\"bunny\"}")
            + value(&last, "vigil_clips_skipped_total{stream=\"bunny\"}");
        if clips >= 7.0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        value(&last, "vigil_frames_decoded_total{stream=\"bunny\"}"),
        132.0
    );
    assert_eq!(
        value(
            &last,
            "vigil_frames_sampled_total{stage=\"action\",stream=\"bunny\"}"
        ),
        132.0,
        "25 fps in, 25 fps out"
    );
    assert!(
        value(
            &last,
            "vigil_inference_seconds_count{model=\"i3d_kinetics400\"}"
        ) >= 1.0
    );
    let status = child.wait().unwrap();
    assert!(status.success());
}

#[test]
fn every_stage_reports_what_it_processed() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "streams:\n  - {{id: bunny, url: {}, loop: true, branches: [action]}}\n  - {{id: photos, url: {}, loop: true, branches: [faces]}}\n{}{}sinks: []\nmetrics: {{listen: '127.0.0.1:0'}}\n{}",
        built("media/bigbuckbunny.mp4").display(),
        built("media/faces_demo.mp4").display(),
        action_yaml(),
        faces_yaml(&dir.path().join("gallery.json")),
        runtime_yaml()
    );
    let mut child = spawn_run(&write_config(dir.path(), &yaml));
    let addr = metrics_addr(&mut child);
    let stages: Vec<&str> = vigil::metrics::Stage::ALL
        .iter()
        .map(|s| s.as_str())
        .collect();
    let processed = |text: &str, s: &str| {
        metric(
            text,
            &format!("vigil_stage_processed_total{{stage=\"{s}\"}}"),
        )
    };
    // Every stage's series exist from the first scrape.
    let first = scrape(&addr);
    for s in &stages {
        for name in ["vigil_stage_processed_total", "vigil_stage_seconds_count"] {
            assert!(
                first.contains(&format!("{name}{{stage=\"{s}\"}}")),
                "no {name} for stage {s}"
            );
        }
    }
    wait_for(
        "every stage to process something",
        Duration::from_secs(90),
        || {
            let text = scrape(&addr);
            stages.iter().all(|s| {
                processed(&text, s) > 0.0
                    && metric(
                        &text,
                        &format!("vigil_stage_seconds_count{{stage=\"{s}\"}}"),
                    ) > 0.0
            })
        },
    );
    signal(&child, "-TERM");
    assert!(child.wait().unwrap().success());
}

/// Issue 16 item 9: `/healthz` and `/readyz` answer from the start of `vigil run`, and `/readyz`
/// says 503 with the reason until every stream has opened or is retrying. The camera here is a
/// TCP port that accepts and never answers, held by the test: vigil cannot be ready while it
/// waits on it (the open deadline is 10 minutes), and is once the connection is refused (the
/// stream then retries).
#[test]
fn readyz_answers_503_with_the_reason_until_every_stream_has_opened_or_is_retrying() {
    let dir = tempfile::tempdir().unwrap();
    let camera = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = camera.local_addr().unwrap().port();
    camera.set_nonblocking(true).unwrap();
    let held = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let closing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (h, c) = (held.clone(), closing.clone());
    // Accepts and holds every connection until `closing`, then stops listening.
    let camera = std::thread::spawn(move || {
        while !c.load(std::sync::atomic::Ordering::SeqCst) {
            match camera.accept() {
                Ok((conn, _)) => h.lock().unwrap().push(conn),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    });
    let yaml = format!(
        "streams:\n  - {{id: silent, url: 'rtsp://127.0.0.1:{port}/cam'}}\naction: {{enabled: false}}\nsinks: []\nmetrics: {{listen: '127.0.0.1:0'}}\nlive: {{open_timeout_ms: 600000, reconnect_initial_ms: 200, reconnect_max_ms: 1000}}\n{}",
        runtime_yaml()
    );
    let mut child = spawn_run(&write_config(dir.path(), &yaml));
    let lines = log_lines(&mut child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            if let Some(rest) = line.split("health on http://").nth(1) {
                let _ = tx.send(rest.split("/healthz").next().unwrap().to_string());
            }
        }
    });
    // A guard against a hang only: the line comes before anything is loaded.
    let addr = rx
        .recv_timeout(Duration::from_secs(120))
        .expect("vigil announces its health endpoint while it connects to the camera");
    assert_eq!(get(&addr, "/healthz").0, 200);
    let (code, why) = get(&addr, "/readyz");
    assert_eq!(code, 503, "{why}");
    assert!(why.starts_with("not ready: "), "{why}");
    // Still not ready once vigil is connecting to the camera, and saying so.
    wait_for("vigil to connect", Duration::from_secs(60), || {
        !held.lock().unwrap().is_empty()
    });
    wait_for(
        "the reason to name the stream",
        Duration::from_secs(60),
        || {
            get(&addr, "/readyz")
                .1
                .contains("stream silent has not opened yet")
        },
    );
    let (code, why) = get(&addr, "/readyz");
    assert_eq!(code, 503, "{why}");
    let (code, text) = get(&addr, "/metrics");
    assert_eq!(code, 200, "the series exist once the streams started");
    assert_eq!(value(&text, "vigil_ready"), 0.0);
    // The camera refuses from now on: the stream is retrying, which is ready.
    closing.store(true, std::sync::atomic::Ordering::SeqCst);
    camera.join().unwrap();
    held.lock().unwrap().clear();
    wait_for("/readyz to answer 200", Duration::from_secs(60), || {
        get(&addr, "/readyz") == (200, "ready\n".to_string())
    });
    assert_eq!(value(&get(&addr, "/metrics").1, "vigil_ready"), 1.0);
    signal(&child, "-TERM");
    assert!(child.wait().unwrap().success());
}
