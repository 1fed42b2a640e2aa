//! Live sources against a real RTSP server (Debian's GStreamer RTSP server, started and stopped
//! by each test on a free loopback port): outages and reconnection, the drop policy under a
//! slow classifier, shutdown, and credentials that never show.

mod common;

use common::*;
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};

/// These tests measure a real pipeline on two cores: one at a time, or they starve each other.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// Sections shared by the live configs: fast detection and retries, so outages are short.
fn live_yaml() -> &'static str {
    "live:\n  open_timeout_ms: 2000\n  stall_timeout_ms: 1500\n  reconnect_initial_ms: 200\n  reconnect_max_ms: 1000\n"
}

fn jsonl_events(path: &Path) -> Vec<Value> {
    events(&std::fs::read_to_string(path).unwrap_or_default())
}

fn for_stream<'a>(ev: &'a [Value], stream: &str) -> Vec<&'a Value> {
    ev.iter().filter(|e| e["stream"] == stream).collect()
}

/// What must not change between two runs of one file: the action events' labels, segments
/// and (to float noise from different batch shapes) scores.
fn file_summary(ev: &[&Value]) -> Vec<String> {
    ev.iter()
        .filter(|e| e["type"].as_str().unwrap().starts_with("action."))
        .map(|e| {
            format!(
                "{} {} {:.3} {} {}",
                e["type"],
                e["label"],
                e["score"].as_f64().unwrap(),
                e["segment"],
                e["media_time"]
            )
        })
        .collect()
}

fn up(text: &str, stream: &str) -> bool {
    metric(text, &format!("vigil_stream_up{{stream=\"{stream}\"}}")) == 1.0
}

fn state(text: &str, stream: &str, state: &str) -> f64 {
    metric(
        text,
        &format!("vigil_stream_state{{state=\"{state}\",stream=\"{stream}\"}}"),
    )
}

fn decoded(text: &str, stream: &str) -> f64 {
    metric(
        text,
        &format!("vigil_frames_decoded_total{{stream=\"{stream}\"}}"),
    )
}

fn reconnects(text: &str, stream: &str, reason: &str) -> f64 {
    metric(
        text,
        &format!("vigil_stream_reconnects_total{{reason=\"{reason}\",stream=\"{stream}\"}}"),
    )
}

/// Waits until every camera is up and has delivered frames since `since`.
fn wait_flowing(addr: &str, cams: &[&str], what: &str) {
    let before: Vec<f64> = {
        let t = scrape(addr);
        cams.iter().map(|c| decoded(&t, c)).collect()
    };
    wait_for(what, Duration::from_secs(60), || {
        let t = scrape(addr);
        cams.iter()
            .zip(&before)
            .all(|(c, b)| up(&t, c) && decoded(&t, c) > b + 10.0)
    });
}

#[test]
fn outages_are_reported_streams_come_back_and_a_file_beside_them_is_untouched() {
    let _serial = serial();
    let live = built("media/live_720p.mp4");
    let bunny = built("media/bigbuckbunny.mp4");
    let dir = tempfile::tempdir().unwrap();
    let action = format!(
        "{}  frames: 16\n  stride: 16\n  smoother: {{min_duration_ms: 0}}\n",
        action_yaml()
    );
    let common = |jsonl: &Path| {
        format!(
            "{action}sinks:\n  - type: file\n    path: {}\nmetrics: {{listen: '127.0.0.1:0'}}\n{}{}",
            jsonl.display(),
            live_yaml(),
            runtime_yaml()
        )
    };

    // The file alone, no cameras: the events an outage elsewhere must not change.
    let alone = dir.path().join("alone.jsonl");
    let yaml = format!(
        "streams:\n  - {{id: file, url: {}}}\n{}",
        bunny.display(),
        common(&alone)
    );
    let out = run(&write_config(dir.path(), &yaml));
    assert!(out.status.success(), "{}", stderr(&out));
    let reference = file_summary(&for_stream(&jsonl_events(&alone), "file"));
    assert!(reference.len() >= 2, "{reference:?}");

    let mut server = RtspServer::start(&[("cam1", &live), ("cam2", &live)], None);
    let jsonl = dir.path().join("events.jsonl");
    let yaml = format!(
        "streams:\n  - {{id: cam1, url: '{}'}}\n  - {{id: cam2, url: '{}'}}\n  - {{id: file, url: {}}}\n{}",
        server.url("cam1"),
        server.url("cam2"),
        bunny.display(),
        common(&jsonl)
    );
    let config = write_config(dir.path(), &yaml);
    let mut child = spawn_run(&config);
    let pid = child.id();
    let (addr, logs) = metrics_addr_keeping_logs(&mut child);
    let cams = ["cam1", "cam2"];

    // The file ends first; after that the thread count is the steady state of two cameras.
    wait_for("the file to end", Duration::from_secs(120), || {
        for_stream(&jsonl_events(&jsonl), "file")
            .iter()
            .any(|e| e["type"] == "stream.down")
    });
    wait_flowing(&addr, &cams, "both cameras to deliver frames");
    let baseline = thread_count(pid);

    for k in 1..=3 {
        server.kill();
        wait_for(
            &format!("outage {k} to be noticed"),
            Duration::from_secs(30),
            || {
                let t = scrape(&addr);
                cams.iter().all(|c| {
                    reconnects(&t, c, "disconnected") >= k as f64
                        && !up(&t, c)
                        && state(&t, c, "retrying") + state(&t, c, "connecting") == 1.0
                })
            },
        );
        std::thread::sleep(Duration::from_millis(700));
        server.restart();
        wait_flowing(&addr, &cams, &format!("both cameras back after outage {k}"));
        assert!(child.try_wait().unwrap().is_none(), "vigil exited");
    }
    server.freeze();
    wait_for("the freeze to be noticed", Duration::from_secs(30), || {
        let t = scrape(&addr);
        cams.iter().all(|c| reconnects(&t, c, "stalled") >= 1.0)
    });
    // Attempts while frozen time out on the open.
    std::thread::sleep(Duration::from_millis(2500));
    server.thaw();
    wait_flowing(&addr, &cams, "both cameras back after the freeze");

    // Reconnections leave no thread behind (allow a moment for the last one to settle).
    let mut threads = 0;
    let settled = (0..50).any(|_| {
        threads = thread_count(pid);
        std::thread::sleep(Duration::from_millis(100));
        threads == baseline
    });
    assert!(
        settled,
        "threads: {baseline} before the outages, {threads} after"
    );
    let metrics_text = scrape(&addr);
    assert!(child.try_wait().unwrap().is_none(), "vigil exited");
    assert_eq!(state(&metrics_text, "file", "down"), 1.0);
    for cam in cams {
        assert_eq!(state(&metrics_text, cam, "up"), 1.0);
        let all: f64 = ["connecting", "up", "blocked", "stalled", "retrying", "down"]
            .iter()
            .map(|s| state(&metrics_text, cam, s))
            .sum();
        assert_eq!(all, 1.0, "one state at a time");
    }

    signal(&child, "-TERM");
    let status = child.wait().unwrap();
    let logs = logs.lock().unwrap().join("\n");
    assert!(status.success(), "exit {status:?}\n{logs}");
    assert!(!logs.contains("panicked"), "{logs}");

    let ev = jsonl_events(&jsonl);
    for cam in cams {
        let mine = for_stream(&ev, cam);
        let downs: Vec<&str> = mine
            .iter()
            .filter(|e| e["type"] == "stream.down" && e["retrying"] == true)
            .map(|e| e["reason"].as_str().unwrap())
            .collect();
        let lost = |r: &str| downs.iter().filter(|d| **d == r).count();
        assert!(lost("disconnected") >= 3, "{cam}: {downs:?}");
        assert!(lost("stalled") >= 1, "{cam}: {downs:?}");
        // Events and counters tell the same story.
        for reason in ["disconnected", "stalled", "error"] {
            assert_eq!(
                lost(reason) as f64,
                reconnects(&metrics_text, cam, reason),
                "{cam} {reason}"
            );
        }
        let ups: Vec<&str> = mine
            .iter()
            .filter(|e| e["type"] == "stream.up")
            .map(|e| e["reason"].as_str().unwrap())
            .collect();
        let losses = downs.iter().filter(|d| **d != "open_failed").count();
        assert_eq!(ups.len(), 1 + losses, "{cam}: up {ups:?}, down {downs:?}");
        assert_eq!(ups[0], "opened");
        assert!(ups[1..].iter().all(|u| *u == "reconnected"), "{ups:?}");
        let last = mine.last().unwrap();
        assert_eq!(
            (last["type"].as_str(), last["reason"].as_str()),
            (Some("stream.down"), Some("shutdown"))
        );
        // Media time keeps counting across reconnections.
        let times: Vec<f64> = mine
            .iter()
            .filter(|e| e["type"].as_str().unwrap().starts_with("stream."))
            .map(|e| e["media_time"].as_f64().unwrap())
            .collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "{cam}: {times:?}");
        eprintln!("{cam}: {downs:?}");
    }
    let file = file_summary(&for_stream(&ev, "file"));
    assert_eq!(file, reference, "the file's events changed");
    eprintln!(
        "threads {baseline}; file events {}; decoded cam1 {} cam2 {}",
        file.len(),
        decoded(&metrics_text, "cam1"),
        decoded(&metrics_text, "cam2")
    );
}

/// p-quantile from Prometheus histogram buckets (upper bound of the bucket holding it).
fn quantile(buckets: &[(f64, f64)], q: f64) -> f64 {
    let total = buckets.last().map_or(0.0, |b| b.1);
    buckets
        .iter()
        .find(|(_, n)| *n >= q * total)
        .map_or(f64::NAN, |b| b.0)
}

fn latency_buckets(text: &str) -> Vec<(f64, f64)> {
    text.lines()
        .filter_map(|l| l.strip_prefix("vigil_capture_latency_seconds_bucket{"))
        .filter(|l| l.contains("stage=\"action\""))
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, l.rsplit(' ').next()?.parse().ok()?))
        })
        .collect()
}

#[test]
fn a_slow_classifier_drops_old_work_and_keeps_memory_and_latency_bounded() {
    let _serial = serial();
    let live = built("media/live_720p.mp4");
    let server = RtspServer::start(&[("cam", &live)], None);
    let dir = tempfile::tempdir().unwrap();
    // 32-frame clips every 4 frames at 25 fps need 6.25 clips/s; I3D on this machine's two
    // cores manages about one: the classifier is far slower than real time. (At the default
    // stride of 16, 1.6 clips/s, a CI run once saw it keep up for 90 s while the machine
    // was slow to decode too.)
    let yaml = format!(
        "streams:\n  - {{id: cam, url: '{}'}}\n{}  stride: 4\nsinks: []\nmetrics: {{listen: '127.0.0.1:0'}}\n{}{}",
        server.url("cam"),
        action_yaml(),
        live_yaml(),
        runtime_yaml()
    );
    let mut child = spawn_run(&write_config(dir.path(), &yaml));
    let pid = child.id();
    let addr = metrics_addr(&mut child);
    // Steady state: the classifier has run full batches (its memory arena has grown to
    // their size) and has started to fall behind.
    wait_for(
        "the classifier to fall behind",
        Duration::from_secs(90),
        || {
            let t = scrape(&addr);
            metric(
                &t,
                "vigil_clips_dropped_total{reason=\"classifier_busy\",stream=\"cam\"}",
            ) >= 1.0
                && metric(
                    &t,
                    "vigil_inference_batch_clips_count{model=\"i3d_kinetics400\"}",
                ) >= 3.0
        },
    );

    // RSS over both windows, as (seconds since the first sample, MiB), for its slope.
    let t0 = Instant::now();
    let mut rss_points: Vec<(f64, f64)> = Vec::new();
    // Samples RSS for `secs` into `points`; gives back the window's highest RSS and a scrape.
    let sample = |secs: u64, points: &mut Vec<(f64, f64)>| {
        let mut rss: Vec<f64> = Vec::new();
        let until = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < until {
            let now = rss_mib(pid);
            rss.push(now);
            points.push((t0.elapsed().as_secs_f64(), now));
            std::thread::sleep(Duration::from_millis(250));
        }
        (rss.into_iter().fold(0.0, f64::max), scrape(&addr))
    };
    let (rss_early, early) = sample(15, &mut rss_points);
    let (mut rss_late, late) = sample(25, &mut rss_points);
    // A step in RSS (ONNX Runtime's arena or glibc's heap growing once to a new working size;
    // CI runs saw 133 MiB inside the late window, and once about 200 MiB ramping over two
    // windows) looks like growth over a window that holds it; a leak grows in every window.
    // So while the latest 25 s are over the limit, up to four more windows of 25 s are
    // measured, and the slope is judged on the newest.
    let late_from = rss_points.len().saturating_sub(100);
    let mut mib_per_s = slope(&rss_points[late_from..]);
    for _ in 0..4 {
        if mib_per_s < 0.5 {
            break;
        }
        eprintln!("rss slope {mib_per_s:.3} MiB/s over the latest window: measuring 25 s more");
        let (again, _) = sample(25, &mut rss_points);
        rss_late = again;
        mib_per_s = slope(&rss_points[rss_points.len().saturating_sub(100)..]);
    }
    assert!(child.try_wait().unwrap().is_none(), "vigil exited");
    signal(&child, "-TERM");
    assert!(child.wait().unwrap().success());

    let busy = metric(
        &late,
        "vigil_clips_dropped_total{reason=\"classifier_busy\",stream=\"cam\"}",
    );
    let classified = metric(&late, "vigil_clips_classified_total{stream=\"cam\"}");
    assert!(busy > 0.0, "no clip was dropped: the classifier kept up?");
    assert!(classified > 5.0, "{classified} clips classified");

    // Latency over the late window only (buckets are cumulative counts).
    let (a, b) = (latency_buckets(&early), latency_buckets(&late));
    let window: Vec<(f64, f64)> = b.iter().zip(&a).map(|(l, e)| (l.0, l.1 - e.1)).collect();
    // The window's own deltas: clips were classified in it, so its histogram is not empty
    // (cumulative counters alone would pass with a classifier stuck since the early window).
    let in_window = window.last().map_or(0.0, |b| b.1);
    let classified_in_window =
        classified - metric(&early, "vigil_clips_classified_total{stream=\"cam\"}");
    assert!(
        in_window >= 1.0 && classified_in_window >= 1.0,
        "nothing classified in the late window: {in_window} latencies, {classified_in_window} clips"
    );
    let (p50, p99) = (quantile(&window, 0.5), quantile(&window, 0.99));
    // The bound: a live stream's newest clip waits at most for the call in flight, then for
    // its own: two calls; three mean calls and a second allow for calls slower than the mean.
    // A backlog of queued clips would add a call per clip (4-clip batches measured 10-15 s).
    let sum = metric(
        &late,
        "vigil_inference_seconds_sum{model=\"i3d_kinetics400\"}",
    );
    let calls = metric(
        &late,
        "vigil_inference_seconds_count{model=\"i3d_kinetics400\"}",
    );
    let batch = sum / calls;
    let bound = 3.0 * batch + 1.0;
    eprintln!(
        "latency p50 <= {p50} s, p99 <= {p99} s (bound {bound:.2} s; mean call {batch:.2} s); \
         dropped {busy} clips, classified {classified}; rss max {rss_early:.0} MiB then {rss_late:.0} MiB"
    );
    // Buckets only say p99 is at most their upper bound; it is over the bound only if the
    // bucket below it already is.
    let below = window
        .iter()
        .take_while(|b| b.0 < p99)
        .last()
        .map_or(0.0, |b| b.0);
    assert!(
        below < bound,
        "p99 in ({below}, {p99}] s, over {bound:.2} s: {window:?}"
    );
    // Unbounded queues of 720p frames would grow by ~67 MB/s. The slope over the late window
    // (25 s, 100 samples, see above) must stay under 0.5 MiB/s, where the old check allowed 256 MiB of
    // slack and could not see a slow leak. (The early window can still hold a step of ONNX
    // Runtime's arenas reaching their working size; the long both-branch test below waits it
    // out.)
    eprintln!(
        "rss slope {mib_per_s:.3} MiB/s over {} samples",
        rss_points.len()
    );
    assert!(
        mib_per_s < 0.5,
        "memory grows {mib_per_s:.2} MiB/s: {rss_early:.0} MiB then {rss_late:.0} MiB"
    );
    // The classifier's queue holds tokens, never a backlog of clips.
    let depth = metric(&late, "vigil_queue_depth_items{stage=\"classifier\"}");
    assert!(depth <= 4.0, "the classifier's queue holds {depth}");
}

#[test]
fn sigterm_mid_run_exits_promptly_with_every_event_written() {
    let _serial = serial();
    let live = built("media/live_720p.mp4");
    let server = RtspServer::start(&[("cam", &live)], None);
    let dir = tempfile::tempdir().unwrap();
    let jsonl = dir.path().join("events.jsonl");
    let yaml = format!(
        "streams:\n  - {{id: cam, url: '{}'}}\n{}  stride: 4\n  smoother: {{min_duration_ms: 0}}\nsinks:\n  - type: file\n    path: {}\nmetrics: {{listen: '127.0.0.1:0'}}\n{}{}",
        server.url("cam"),
        action_yaml(),
        jsonl.display(),
        live_yaml(),
        runtime_yaml()
    );
    let mut child = spawn_run(&write_config(dir.path(), &yaml));
    let (addr, logs) = metrics_addr_keeping_logs(&mut child);
    wait_for("a first action event", Duration::from_secs(60), || {
        jsonl_events(&jsonl)
            .iter()
            .any(|e| e["type"] == "action.started")
    });
    // Mid-run: the classifier is busy (it is slower than the camera).
    wait_for(
        "clips dropped as the classifier is busy",
        Duration::from_secs(60),
        || {
            metric(
                &scrape(&addr),
                "vigil_clips_dropped_total{reason=\"classifier_busy\",stream=\"cam\"}",
            ) >= 1.0
        },
    );
    let sent = Instant::now();
    signal(&child, "-TERM");
    let mut status = None;
    while sent.elapsed() < Duration::from_secs(5) {
        status = child.try_wait().unwrap();
        if status.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = sent.elapsed();
    let Some(status) = status else {
        let _ = child.kill();
        panic!("still running 5 s after SIGTERM");
    };
    std::thread::sleep(Duration::from_millis(200));
    let logs = logs.lock().unwrap().join("\n");
    assert!(status.success(), "exit {status:?}\n{logs}");
    let text = std::fs::read_to_string(&jsonl).unwrap();
    assert!(text.ends_with('\n'), "the last line is complete");
    let ev = events(&text);
    let done: u64 = logs
        .split("done: ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no summary line:\n{logs}"));
    assert_eq!(ev.len() as u64, done, "every event produced is in the file");
    let last = ev.last().unwrap();
    assert_eq!(
        (last["type"].as_str(), last["reason"].as_str()),
        (Some("stream.down"), Some("shutdown"))
    );
    assert_eq!(
        of_type(&ev, "action.started").len(),
        of_type(&ev, "action.ended").len(),
        "every segment is closed"
    );
    eprintln!("exited {took:?} after SIGTERM with {done} events");
}

#[test]
fn a_password_in_a_url_never_shows() {
    let _serial = serial();
    let live = built("media/live_720p.mp4");
    let server = RtspServer::start(&[("cam", &live)], Some("admin:right-pw-4242"));
    let secret = "wrong-pw-7f3a9";
    let dir = tempfile::tempdir().unwrap();
    let jsonl = dir.path().join("events.jsonl");
    let bad = server
        .url("cam")
        .replace("rtsp://", &format!("rtsp://admin:{secret}@"));
    let good = server
        .url("cam")
        .replace("rtsp://", "rtsp://admin:right-pw-4242@");
    let yaml = format!(
        "streams:\n  - {{id: bad, url: '{bad}'}}\n  - {{id: good, url: '{good}'}}\n  - {{id: usb, url: /dev/video97}}\naction: {{enabled: false}}\nsinks:\n  - type: file\n    path: {}\n  - type: stdout\nmetrics: {{listen: '127.0.0.1:0'}}\n{}{}",
        jsonl.display(),
        live_yaml(),
        runtime_yaml()
    );
    let config = write_config(dir.path(), &yaml);
    let checked = check(&config);
    let check_out = format!(
        "{}{}",
        String::from_utf8_lossy(&checked.stdout),
        stderr(&checked)
    );
    assert!(checked.status.success(), "{check_out}");
    assert!(check_out.contains("bad: not reachable now"), "{check_out}");
    // The camera answers 401: say so, not "refused, unreachable, or not a video stream".
    assert!(
        check_out.contains("authentication failed: the camera answered 401"),
        "{check_out}"
    );
    assert!(
        check_out.contains("good: reachable, 1280x720"),
        "{check_out}"
    );

    let mut child = Running(
        vigil()
            .args(["run", "--no-progress", "--config"])
            .arg(&config)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut stdout = child.stdout.take().unwrap();
    let out_thread = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut s).unwrap();
        s
    });
    let (addr, logs) = metrics_addr_keeping_logs(&mut child);
    wait_for(
        "the good camera to deliver",
        Duration::from_secs(30),
        || decoded(&scrape(&addr), "good") > 25.0,
    );
    wait_for("retries of the bad camera", Duration::from_secs(30), || {
        metric(
            &scrape(&addr),
            "vigil_stream_connect_failures_total{stream=\"bad\"}",
        ) >= 3.0
    });
    let metrics_text = scrape(&addr);
    signal(&child, "-TERM");
    assert!(child.wait().unwrap().success());
    let stdout = out_thread.join().unwrap();
    let logs = logs.lock().unwrap().join("\n");
    let file = std::fs::read_to_string(&jsonl).unwrap();

    for (what, text) in [
        ("check", &check_out),
        ("logs", &logs),
        ("stdout", &stdout),
        ("events file", &file),
        ("metrics", &metrics_text),
    ] {
        for pw in [secret, "right-pw-4242"] {
            assert!(!text.contains(pw), "{what} shows a password:\n{text}");
        }
    }
    let ev = events(&file);
    let down = for_stream(&ev, "bad")
        .into_iter()
        .find(|e| e["type"] == "stream.down" && e["reason"] == "open_failed")
        .expect("the failed connection is reported");
    let detail = down["detail"].as_str().unwrap();
    assert!(detail.contains("rtsp://admin:***@127.0.0.1"), "{detail}");
    assert!(
        detail.contains("authentication failed") && !detail.contains("refused, unreachable"),
        "{detail}"
    );
    assert_eq!(down["retrying"], true);
    // A camera that is not plugged in is retried like any other.
    let usb = for_stream(&ev, "usb")
        .into_iter()
        .find(|e| e["type"] == "stream.down" && e["reason"] == "open_failed")
        .expect("the missing camera is reported");
    assert!(
        usb["detail"]
            .as_str()
            .unwrap()
            .contains("/dev/video97: cannot be opened"),
        "{usb}"
    );
    assert!(of_type(&ev, "stream.up")
        .iter()
        .any(|e| e["stream"] == "good"));
}

#[test]
fn a_looped_file_never_puts_two_passes_in_one_clip() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let jsonl = dir.path().join("events.jsonl");
    let yaml = format!(
        "streams:\n  - {{id: loop, url: {}, loop: true}}\n{}  frames: 16\n  stride: 8\n  smoother: {{min_duration_ms: 0}}\nsinks:\n  - type: file\n    path: {}\nmetrics: {{listen: '127.0.0.1:0'}}\n{}",
        built("media/bigbuckbunny.mp4").display(),
        action_yaml(),
        jsonl.display(),
        runtime_yaml()
    );
    let mut child = spawn_run(&write_config(dir.path(), &yaml));
    let addr = metrics_addr(&mut child);
    // Three passes of 132 frames.
    wait_for("three passes", Duration::from_secs(120), || {
        // Classified or skipped as stable (action.schedule): each clip is one or the other.
        let t = scrape(&addr);
        metric(&t, "vigil_clips_classified_total{stream=\"loop\"}")
            + metric(&t, "vigil_clips_skipped_total{stream=\"loop\"}")
            >= 3.0 * 15.0
    });
    signal(&child, "-TERM");
    assert!(child.wait().unwrap().success());
    let ev = events(&std::fs::read_to_string(&jsonl).unwrap());
    let pass = 132.0 / 25.0;
    let clips: Vec<(f64, f64)> = ev
        .iter()
        .filter(|e| e["type"] == "action.started" || e["type"] == "action.ended")
        .map(|e| {
            (
                e["clip"]["start"].as_f64().unwrap(),
                e["clip"]["end"].as_f64().unwrap(),
            )
        })
        .collect();
    assert!(
        clips.iter().any(|c| c.0 > pass),
        "media time continues past the first pass: {clips:?}"
    );
    for (start, end) in &clips {
        let k = (start / pass + 1e-6).floor();
        assert!(
            *end <= (k + 1.0) * pass + 1e-3,
            "clip {start}..{end} spans the end of pass {k}"
        );
    }
    // Each pass's segment ends at the gap, so each pass opens its own.
    let starts: Vec<f64> = of_type(&ev, "action.started")
        .iter()
        .map(|e| e["segment"]["start"].as_f64().unwrap())
        .collect();
    for k in 0..3 {
        let t = k as f64 * pass;
        assert!(
            starts.iter().any(|s| (s - t).abs() < 0.05),
            "no segment starts at pass {k} ({t} s): {starts:?}"
        );
    }
}

/// Starts `cmd` (a server that prints `ready ...` when it listens) and waits for that line.
fn start_server(cmd: &mut std::process::Command) -> Running {
    use std::io::BufRead;
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("the test server starts");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("ready"), "server said {line:?}");
    Running(child)
}

/// A decode-only run (no branch) of `streams`, with its events in a file.
fn decode_only(dir: &Path, streams: &str) -> (Running, String, std::path::PathBuf) {
    let jsonl = dir.join("events.jsonl");
    let yaml = format!(
        "streams:\n{streams}action: {{enabled: false}}\nsinks:\n  - type: file\n    path: {}\nmetrics: {{listen: '127.0.0.1:0'}}\n{}{}",
        jsonl.display(),
        live_yaml(),
        runtime_yaml()
    );
    let mut child = spawn_run(&write_config(dir, &yaml));
    let addr = metrics_addr(&mut child);
    (child, addr, jsonl)
}

#[test]
fn an_mjpeg_camera_over_http_is_read_and_reconnected() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let st = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(built("media/bigbuckbunny.mp4"))
        .args([
            "-vf",
            "fps=10,scale=640:360",
            "-frames:v",
            "20",
            "-q:v",
            "5",
        ])
        .arg(dir.path().join("f%02d.jpg"))
        .status()
        .unwrap();
    assert!(st.success());
    let mut jpgs: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jpg"))
        .collect();
    jpgs.sort();
    let port = free_port();
    let server = || {
        start_server(
            std::process::Command::new("python3")
                .arg(repo().join("scripts/mjpeg_server.py"))
                .args(["--port", &port.to_string(), "--fps", "10"])
                .args(&jpgs),
        )
    };
    let mut camera = server();
    let streams = format!("  - {{id: mjpeg, url: 'http://127.0.0.1:{port}/video.mjpg'}}\n");
    let (mut child, addr, jsonl) = decode_only(dir.path(), &streams);
    wait_for("MJPEG frames", Duration::from_secs(30), || {
        decoded(&scrape(&addr), "mjpeg") >= 20.0
    });
    camera.kill().unwrap();
    camera.wait().unwrap();
    wait_for("the outage to be noticed", Duration::from_secs(30), || {
        !up(&scrape(&addr), "mjpeg")
    });
    let mut camera = server();
    wait_flowing(&addr, &["mjpeg"], "MJPEG frames after the restart");
    signal(&child, "-TERM");
    assert!(child.wait().unwrap().success());
    camera.kill().unwrap();
    let ev = jsonl_events(&jsonl);
    let ups: Vec<&Value> = of_type(&ev, "stream.up");
    assert_eq!(ups.len(), 2, "{ev:#?}");
    assert!(
        ups[0]["detail"].as_str().unwrap().contains("640x360"),
        "{}",
        ups[0]
    );
    assert_eq!(ups[1]["reason"], "reconnected");
    assert!(of_type(&ev, "stream.down")
        .iter()
        .any(|e| e["retrying"] == true));
}

#[test]
fn an_hls_stream_over_http_is_read_to_its_end_and_reopened() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let hls = dir.path().join("hls");
    std::fs::create_dir(&hls).unwrap();
    let st = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(built("media/bigbuckbunny.mp4"))
        .args(["-an", "-c", "copy", "-f", "hls", "-hls_time", "1"])
        .args(["-hls_playlist_type", "vod"])
        .arg(hls.join("index.m3u8"))
        .status()
        .unwrap();
    assert!(st.success());
    let port = free_port();
    // The standard library's file server, announced once it listens.
    let mut web = start_server(
        std::process::Command::new("python3")
            .args([
                "-u",
                "-c",
                &format!(
                    "import functools, http.server as h\n\
             s = h.ThreadingHTTPServer(('127.0.0.1', {port}), functools.partial(\
             h.SimpleHTTPRequestHandler, directory={:?}))\n\
             print('ready', flush=True)\ns.serve_forever()",
                    hls.display().to_string()
                ),
            ])
            .stderr(std::process::Stdio::null()),
    );
    let streams = format!("  - {{id: hls, url: 'http://127.0.0.1:{port}/index.m3u8'}}\n");
    let (mut child, addr, jsonl) = decode_only(dir.path(), &streams);
    // A finished (VOD) playlist ends like a camera that hung up: it is opened again.
    wait_for(
        "two passes over the playlist",
        Duration::from_secs(60),
        || {
            let t = scrape(&addr);
            decoded(&t, "hls") >= 140.0 && reconnects(&t, "hls", "disconnected") >= 1.0
        },
    );
    signal(&child, "-TERM");
    assert!(child.wait().unwrap().success());
    web.kill().unwrap();
    let ev = jsonl_events(&jsonl);
    let up = of_type(&ev, "stream.up")[0];
    assert!(up["detail"].as_str().unwrap().contains("1280x720"), "{up}");
    let down = of_type(&ev, "stream.down")[0];
    assert_eq!(down["reason"], "disconnected");
    assert!(
        down["detail"]
            .as_str()
            .unwrap()
            .contains("after 132 frames"),
        "{down}"
    );
}

/// How fast resident memory grows: the least-squares slope through the upper quartiles of
/// four consecutive quarters of the samples. Between inference calls, freed tensors go back to
/// the system (ONNX Runtime's CPU arena is off by default and the classifier trims the heap
/// before each call), so a sample taken then dips by tens of MiB; and a sample taken inside a
/// call can stand a few MiB above the rest. A leak raises every sample and so the quartile; a
/// dip or a lone high sample does not. (The quarters' highest sample did not hold: a CI run
/// over 600 reconnections read 26.8 and 19.1 KiB each in two windows from single samples 5 MiB
/// above their quarter, while the quartiles' fit read 1.9 and 2.0.)
fn slope(points: &[(f64, f64)]) -> f64 {
    if points.len() < 8 {
        return fit(points);
    }
    let q = points.len() / 4;
    let quartiles: Vec<(f64, f64)> = (0..4)
        .map(|i| {
            let part = &points[i * q..if i == 3 { points.len() } else { (i + 1) * q }];
            let x = part.iter().map(|p| p.0).sum::<f64>() / part.len() as f64;
            let mut ys: Vec<f64> = part.iter().map(|p| p.1).collect();
            ys.sort_by(f64::total_cmp);
            (x, ys[ys.len() * 3 / 4])
        })
        .collect();
    fit(&quartiles)
}

/// The least-squares slope of y over x.
fn fit(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    let (mx, my) = points
        .iter()
        .fold((0.0, 0.0), |(a, b), (x, y)| (a + x / n, b + y / n));
    let (num, den) = points.iter().fold((0.0, 0.0), |(a, b), (x, y)| {
        (a + (x - mx) * (y - my), b + (x - mx) * (x - mx))
    });
    num / den
}

/// Issue 16 item 5: a camera that drops the connection again and again must not cost memory
/// per reconnection (the probe saw about 1.2 MB each over its first 30). The camera is the real
/// RTSP server serving an 8-frame clip: each connection ends at the clip's end, so vigil
/// reconnects several times a second, each time a new OpenCV capture, FFmpeg context and
/// reader thread, and a new epoch for both branches (the action window is classified and
/// reset, the face tracker finished). RSS is sampled every 5 reconnections after a warm-up of
/// 100 (the models' buffers grow to their working size over the first 100 or so: a CI run
/// sampling every 25 after 50 saw the peaks still rising from 382 to 411 MiB at 125); the
/// slope over the next 300 must be under 16 KiB per reconnection (4.7 MiB over the window: a
/// leak of one 320x240 frame per connection would be 225 KiB). Samples swing by tens of MiB
/// with inference calls, so the slope goes through each quarter's upper quartile (`slope`),
/// which many samples a quarter make the working size's. A window over the limit is followed
/// by a second one of 300, judged alone: a CI run saw the peak take one step of 3.4 MiB at 290
/// (413 -> 416 MiB, flat on both sides), which the quarters' fit read as 18 KiB each; a leak
/// grows in both windows.
#[test]
fn memory_stays_flat_over_300_rtsp_reconnects() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let clip = dir.path().join("short.mp4");
    lavfi("testsrc=size=320x240:rate=25", 8, &clip);
    let server = RtspServer::start(&[("cam", &clip)], None);
    let yaml = format!(
        "streams:\n  - {{id: cam, url: '{}'}}\n{}{}sinks: []\nmetrics: {{listen: '127.0.0.1:0'}}\nlive: {{open_timeout_ms: 2000, stall_timeout_ms: 1000, reconnect_initial_ms: 10, reconnect_max_ms: 10}}\n{}",
        server.url("cam"),
        action_yaml(),
        faces_yaml(&dir.path().join("gallery.json")),
        runtime_yaml()
    );
    let mut child = spawn_run(&write_config(dir.path(), &yaml));
    let addr = metrics_addr(&mut child);
    let pid = child.id();
    let count = |text: &str| reconnects(text, "cam", "disconnected");
    let (warm_up, window, every) = (100.0, 300.0, 5.0);
    let mut start = warm_up;
    let mut judged = Vec::new();
    loop {
        let mut points = Vec::new();
        let mut next = start;
        while next <= start + window {
            wait_for(
                &format!("{next} reconnections"),
                Duration::from_secs(300),
                || count(&scrape(&addr)) >= next,
            );
            points.push((count(&scrape(&addr)), rss_mib(pid) * 1024.0));
            next += every;
        }
        let kib = slope(&points);
        let (first, last) = (points[0], points[points.len() - 1]);
        eprintln!(
            "RSS {:.1} MiB at {} reconnections, {:.1} MiB at {}: {kib:.2} KiB per reconnection",
            first.1 / 1024.0,
            first.0,
            last.1 / 1024.0,
            last.0
        );
        judged.push((kib, points));
        if kib < 16.0 || judged.len() == 2 {
            break;
        }
        start = last.0;
    }
    let kib = judged[judged.len() - 1].0;
    assert!(
        kib < 16.0,
        "RSS grows {kib:.1} KiB per reconnection in each of {} windows: {judged:?}",
        judged.len()
    );
    assert_eq!(
        metric(
            &scrape(&addr),
            "vigil_stream_connect_failures_total{stream=\"cam\"}"
        ),
        0.0,
        "every reconnection succeeded"
    );
    signal(&child, "-TERM");
    assert!(child.wait().unwrap().success());
}

/// Memory with both branches on a live camera, over two minutes after warm-up: the slope of
/// resident memory (least squares over samples every half second) stays under 1% of the
/// resident size per minute. The classifier is slower than real time here, so this is the
/// steady state a camera runs in for months: every queue full, old work dropped. Warm-up is a
/// minute: ONNX Runtime's arenas take one step of about 200 MiB in the first minute (seen at
/// 40-60 s: 640 -> 858 MiB, flat for the two minutes after), which is growth to a working
/// size, not a leak.
#[test]
fn memory_stays_flat_with_both_branches_on_a_camera_over_two_minutes() {
    let _serial = serial();
    let server = RtspServer::start(&[("cam", &built("media/live_720p.mp4"))], None);
    let dir = tempfile::tempdir().unwrap();
    let gallery = dir.path().join("gallery.json");
    let yaml = format!(
        "streams:\n  - {{id: cam, url: '{}'}}\n{}{}sinks: []\nmetrics: {{listen: '127.0.0.1:0'}}\n{}{}",
        server.url("cam"),
        action_yaml(),
        faces_yaml(&gallery),
        live_yaml(),
        runtime_yaml()
    );
    let mut child = spawn_run(&write_config(dir.path(), &yaml));
    let pid = child.id();
    let addr = metrics_addr(&mut child);
    // Classified clips, not clips dropped while the classifier was busy: with clips skipped
    // while the label is stable, a fast enough machine keeps up with one camera (a CI-like run
    // waited 120 s for a drop that never came).
    wait_for("both branches at work", Duration::from_secs(120), || {
        let t = scrape(&addr);
        metric(&t, "vigil_clips_classified_total{stream=\"cam\"}") >= 3.0
            && metric(
                &t,
                "vigil_frames_sampled_total{stage=\"faces\",stream=\"cam\"}",
            ) >= 20.0
    });
    // Warm-up: arenas and caches reach their working size.
    std::thread::sleep(Duration::from_secs(60));
    // Two minutes of RSS with both branches at work: (slope MiB/min, mean MiB).
    let window = || {
        let t0 = Instant::now();
        let mut points = Vec::new();
        let (faces0, clips0) = {
            let t = scrape(&addr);
            (
                metric(
                    &t,
                    "vigil_frames_sampled_total{stage=\"faces\",stream=\"cam\"}",
                ),
                metric(&t, "vigil_clips_classified_total{stream=\"cam\"}"),
            )
        };
        while t0.elapsed() < Duration::from_secs(120) {
            points.push((t0.elapsed().as_secs_f64(), rss_mib(pid)));
            std::thread::sleep(Duration::from_millis(500));
        }
        let t = scrape(&addr);
        let faces = metric(
            &t,
            "vigil_frames_sampled_total{stage=\"faces\",stream=\"cam\"}",
        ) - faces0;
        let clips = metric(&t, "vigil_clips_classified_total{stream=\"cam\"}") - clips0;
        let mib_per_min = slope(&points) * 60.0;
        let mean = points.iter().map(|p| p.1).sum::<f64>() / points.len() as f64;
        eprintln!(
            "rss {mean:.0} MiB, slope {mib_per_min:.3} MiB/min over {} samples; {faces} face frames and {clips} clips in the window",
            points.len()
        );
        // Both branches worked throughout the window.
        assert!(
            faces >= 50.0 && clips >= 10.0,
            "{faces} face frames, {clips} clips"
        );
        (mib_per_min, mean)
    };
    let (mut mib_per_min, mut mean) = window();
    // The one-time step of about 200 MiB (ONNX Runtime's arenas reaching their working size)
    // usually comes in the first minute, but once in CI it fell inside the window (46 MiB/min
    // at 806 MiB). A step happens once, a leak in every window: over the limit, the next two
    // minutes are measured and judged instead (twice at most).
    for _ in 0..2 {
        if mib_per_min < 0.01 * mean {
            break;
        }
        eprintln!("over the limit: measuring the next two minutes");
        (mib_per_min, mean) = window();
    }
    assert!(
        mib_per_min < 0.01 * mean,
        "memory grows {mib_per_min:.2} MiB/min at {mean:.0} MiB"
    );
}
