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
    assert_eq!(
        get(&addr, "/readyz").0,
        200,
        "models are loaded before the server starts"
    );
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
        if value(&last, "vigil_clips_classified_total{stream=\"bunny\"}") >= 7.0 {
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
