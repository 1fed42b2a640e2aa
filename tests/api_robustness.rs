//! The API under hostile and heavy use: thousands of malformed requests (never a panic, never
//! a 5xx), idle and half-sent connections (closed after the timeout, the pipeline unslowed),
//! and churn (1000 add/remove cycles of a file stream and 100 of a camera leave memory,
//! threads and open files flat).

mod common;

use common::*;
use serde_json::Value;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// These tests load the machine (thousands of requests, a thousand stream cycles) and one
/// measures a frame rate: they run one at a time.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

fn config(dir: &Path, api_extra: &str, streams: &str) -> PathBuf {
    let yaml = format!(
        "{streams}api:\n  listen: '127.0.0.1:0'\n  state_dir: {}\n{api_extra}action: {{enabled: false}}\n{}sinks: []\nmetrics: {{listen: '127.0.0.1:0'}}\n{}",
        dir.join("state").display(),
        faces_yaml(&dir.join("gallery.json")),
        runtime_yaml()
    );
    write_config(dir, &yaml)
}

/// xorshift: the same "random" requests in every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len())]
    }
}

/// Sends raw bytes as one request; the status line's code, or `None` when the server closed
/// without answering.
fn raw(addr: &str, req: &[u8]) -> Option<u16> {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let _ = s.write_all(req);
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out);
    text.split_whitespace().nth(1).and_then(|c| c.parse().ok())
}

fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut b = seed.to_vec();
    for _ in 0..=rng.below(6) {
        match rng.below(5) {
            0 if !b.is_empty() => {
                let i = rng.below(b.len());
                b[i] = rng.next() as u8;
            }
            1 => {
                let i = rng.below(b.len() + 1);
                b.truncate(i);
            }
            2 => {
                let i = rng.below(b.len() + 1);
                const JUNK: [&[u8]; 10] = [
                    b"{",
                    b"}",
                    b"\"",
                    b",",
                    b":",
                    b"[",
                    b"null",
                    b"\\u0000",
                    b"1e999",
                    b"\xff\xfe",
                ];
                let junk = JUNK[rng.below(JUNK.len())];
                b.splice(i..i, junk.iter().copied());
            }
            3 => {
                let copy = b.clone();
                b.extend(copy);
            }
            _ => b.extend((0..rng.below(64)).map(|_| rng.next() as u8)),
        }
    }
    b
}

#[test]
fn thousands_of_malformed_requests_get_4xx_answers_never_a_5xx_or_a_panic() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "  max_body_bytes: 1000000\n", "");
    let (mut child, _, addr, logs) = start_api(&cfg);
    let jpeg = std::fs::read(built("media/faces/obama.jpg")).unwrap();
    let seeds: Vec<Vec<u8>> = vec![
        br#"{"id": "cam1", "url": "/nonexistent/cam1.mp4", "branches": ["faces"], "loop": false}"#.to_vec(),
        br#"{"id": "x", "url": "rtsp://u:p@127.0.0.1:1/x", "realtime": true}"#.to_vec(),
        b"{}".to_vec(),
        b"[]".to_vec(),
        jpeg[..4096].to_vec(),
        b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR\0\0\x01\0\0\0\x01\0\x08\x02\0\0\0".to_vec(),
        b"--b\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.jpg\"\r\n\r\n\xff\xd8\xff\r\n--b--\r\n".to_vec(),
        Vec::new(),
    ];
    let paths = [
        "/v1/streams",
        "/v1/streams/cam1",
        "/v1/streams/%FF%FE",
        "/v1/streams/..%2F..%2Fetc",
        "/v1/streams/%00",
        "/v1/gallery/people",
        "/v1/gallery/people/Ada/photos",
        "/v1/gallery/people/%E2%80%AE/photos?face=-1",
        "/v1/gallery/people/A%2FB/photos?face=99999999999999999999",
        "/v1/gallery/people/Ada",
        "/v1/gallery/identify?top=0",
        "/v1/gallery/identify?top=abc",
        "/v1/gallery/verify?name=",
        "/v1/gallery/verify?name=Ada&face=x",
        "/v1/events?after=zzz&limit=1e9",
        "/v1/events?limit=-1",
        "/v1/snapshots/../../etc/passwd",
        "/v1/snapshots/%2e%2e",
        "/v1/status",
        "/v1/",
        "/v1",
        "//v1//streams",
        "/v1/streams?x=%zz",
        "/healthz",
        "/readyz",
    ];
    let methods = ["GET", "POST", "DELETE", "PUT", "PATCH", "HEAD", "OPTIONS"];
    let types = [
        "application/json",
        "image/jpeg",
        "image/png",
        "multipart/form-data; boundary=b",
        "multipart/form-data",
        "multipart/form-data; boundary=",
        "text/plain",
        "\u{1}\u{2}",
        "image/jpeg; charset=\u{7f}",
        "",
    ];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let long = "a".repeat(5000);
    let (mut answered, mut closed, mut fives) = (0, 0, Vec::new());
    for i in 0..3000 {
        let method = *rng.pick(&methods);
        let mut path = rng.pick(&paths).to_string();
        if rng.below(10) == 0 {
            path = format!("/v1/streams/{long}");
        }
        let body = if rng.below(4) == 0 {
            rng.pick(&seeds).clone()
        } else {
            let seed = rng.pick(&seeds).clone();
            mutate(&mut rng, &seed)
        };
        let mut req =
            format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n").into_bytes();
        let t = rng.pick(&types);
        if !t.is_empty() {
            req.extend(format!("Content-Type: {t}\r\n").into_bytes());
        }
        match rng.below(8) {
            0 => req.extend(b"Content-Length: 99999999999999999999999\r\n"),
            1 => req.extend(
                format!("Content-Length: {}\r\nContent-Length: 3\r\n", body.len()).into_bytes(),
            ),
            2 => req.extend(b"Transfer-Encoding: chunked\r\n"),
            3 => req.extend(b"Last-Event-ID: \xff\xfe\r\nAuthorization: Bearer \x01\r\n"),
            4 => req.extend(b"X-Api-Key: \r\nBad Header\r\n"),
            _ => req.extend(format!("Content-Length: {}\r\n", body.len()).into_bytes()),
        }
        req.extend(b"\r\n");
        req.extend(&body);
        if i % 50 == 0 {
            // Not HTTP at all.
            req = mutate(&mut rng, b"GET / HTTP/1.1\r\n\r\n");
        }
        match raw(&addr, &req) {
            Some(code) if code >= 500 => fives.push(format!("{code} for {method} {path}")),
            Some(_) => answered += 1,
            None => closed += 1,
        }
    }
    eprintln!("{answered} answered, {closed} closed without an answer");
    assert!(fives.is_empty(), "server errors for bad input: {fives:?}");
    assert!(answered > 2500, "{answered} answered");
    assert!(child.try_wait().unwrap().is_none(), "vigil exited");
    assert_eq!(http(&addr, "GET", "/healthz", &[], b"").unwrap().0, 200);
    let logs = logs.lock().unwrap().join("\n");
    assert!(!logs.contains("panicked"), "{logs}");
}

#[test]
fn idle_and_half_sent_connections_are_closed_after_the_timeout_without_slowing_the_pipeline() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let streams = format!(
        "streams:\n  - {{id: bunny, url: {}, loop: true, realtime: true, branches: []}}\n",
        built("media/bigbuckbunny.mp4").display()
    );
    let cfg = config(dir.path(), "  idle_timeout_ms: 15000\n", &streams);
    let (child, metrics, addr, _) = start_api(&cfg);
    let frames = || decoded(&metrics);
    wait_for("decoding", Duration::from_secs(30), || frames() > 25.0);
    let rate = |secs: f64| {
        let (f0, t0) = (frames(), Instant::now());
        std::thread::sleep(Duration::from_secs_f64(secs));
        (frames() - f0) / t0.elapsed().as_secs_f64()
    };
    let before = rate(2.0);
    let opened = Instant::now();
    let mut idle: Vec<std::net::TcpStream> = (0..200)
        .map(|_| std::net::TcpStream::connect(&addr).unwrap())
        .collect();
    // One sends half a request and stalls (slowloris).
    let mut slow = std::net::TcpStream::connect(&addr).unwrap();
    slow.write_all(b"GET /v1/status HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let during = rate(2.0);
    assert!(
        opened.elapsed() < Duration::from_millis(14_000),
        "the measurement overran the idle timeout"
    );
    // Every connection was still open throughout the measurement.
    for s in &idle {
        s.set_nonblocking(true).unwrap();
        let mut b = [0u8; 1];
        let open = matches!(s.peek(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
        assert!(open, "an idle connection closed before the timeout");
        s.set_nonblocking(false).unwrap();
    }
    eprintln!("decoded {before:.1} fps before, {during:.1} fps with 200 idle connections");
    assert!(
        during >= 0.8 * before,
        "{before:.1} fps before, {during:.1} during"
    );
    // The API still answers meanwhile.
    assert_eq!(api(&addr, "GET", "/v1/status", None, "").0, 200);
    // After the timeout every idle connection has been closed by vigil: the read ends (end of
    // stream, a reset, or a 408 answer and then the end), it does not time out.
    let closed = |s: &mut std::net::TcpStream| {
        s.set_read_timeout(Some(Duration::from_secs(40))).unwrap();
        let mut rest = Vec::new();
        match s.read_to_end(&mut rest) {
            Ok(_) => true,
            Err(e) => !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
        }
    };
    let all_closed = idle.iter_mut().all(closed) && closed(&mut slow);
    assert!(
        all_closed,
        "a connection was still open 40 s after the idle timeout"
    );
    drop(child);
}

fn decoded(metrics: &str) -> f64 {
    metric(
        &scrape(metrics),
        "vigil_frames_decoded_total{stream=\"bunny\"}",
    )
}

/// RSS (MiB), threads and open files of a process, after the blocking pool has idled.
fn footprint(pid: u32) -> (f64, usize, usize) {
    std::thread::sleep(Duration::from_secs(2));
    (rss_mib(pid), thread_count(pid), fd_count(pid))
}

/// The RSS pair a churn is judged by. A step in resident memory happens once (an allocator or
/// a library reaching its working size), a leak grows in every round: when `after` is over 5%
/// above `before`, `more` further cycles are measured from the new level and judged instead,
/// twice at most. `done` is the cycles run so far, for the log.
fn judged_rss(
    what: &str,
    pid: u32,
    (mut before, mut after): (f64, f64),
    done: usize,
    more: usize,
    mut cycle: impl FnMut(),
) -> (f64, f64) {
    for round in 1..=2 {
        if after <= before * 1.05 {
            break;
        }
        for _ in 0..more {
            cycle();
        }
        let (rss, _, _) = footprint(pid);
        let n = done + more * round;
        eprintln!("{what}, after {n} cycles: {rss:.1} MiB (judged from {after:.1} MiB)");
        (before, after) = (after, rss);
    }
    (before, after)
}

#[test]
fn a_thousand_add_and_remove_cycles_leave_memory_threads_and_open_files_flat() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    // A short file: 10 frames of 320x240.
    let clip = dir.path().join("short.mp4");
    lavfi("testsrc=size=320x240:rate=25", 10, &clip);
    let cfg = config(dir.path(), "", "");
    let (child, _, addr, logs) = start_api(&cfg);
    let pid = child.id();
    let file_body = format!(
        r#"{{"id": "churn", "url": "{}", "branches": ["faces"]}}"#,
        clip.display()
    );
    let cycle = |body: &str, id: &str, wait_up: bool| {
        let (code, v) = api(&addr, "POST", "/v1/streams", None, body);
        assert_eq!(code, 201, "{v}");
        if wait_up {
            wait_for("the camera to connect", Duration::from_secs(30), || {
                let (_, v) = api(&addr, "GET", &format!("/v1/streams/{id}"), None, "");
                v["frames"].as_u64().unwrap_or(0) > 0
            });
        }
        let (code, v) = api(&addr, "DELETE", &format!("/v1/streams/{id}"), None, "");
        assert_eq!(code, 204, "{v}");
    };
    for _ in 0..50 {
        cycle(&file_body, "churn", false);
    }
    let (rss0, threads0, fds0) = footprint(pid);
    for _ in 50..1000 {
        cycle(&file_body, "churn", false);
    }
    let (rss1, threads1, fds1) = footprint(pid);
    eprintln!("files, after 50 cycles: {rss0:.1} MiB, {threads0} threads, {fds0} fds; after 1000: {rss1:.1} MiB, {threads1} threads, {fds1} fds");
    // A local run once saw the files' RSS take one step (243.4 -> 257.6 MiB; 241.1 -> 244.5
    // when run again): see `judged_rss`.
    let (rss0, rss1) = judged_rss("files", pid, (rss0, rss1), 1000, 475, || {
        cycle(&file_body, "churn", false)
    });

    let rtsp = RtspServer::start(&[("cam", &built("media/live_720p.mp4"))], None);
    let cam_body = format!(
        r#"{{"id": "cam", "url": "{}", "branches": ["faces"]}}"#,
        rtsp.url("cam")
    );
    for _ in 0..20 {
        cycle(&cam_body, "cam", true);
    }
    let (rss2, threads2, fds2) = footprint(pid);
    for _ in 20..100 {
        cycle(&cam_body, "cam", true);
    }
    let (rss3, threads3, fds3) = footprint(pid);
    eprintln!("camera, after 20 cycles: {rss2:.1} MiB, {threads2} threads, {fds2} fds; after 100: {rss3:.1} MiB, {threads3} threads, {fds3} fds");
    // The first camera connections take RSS up one step (FFmpeg's RTSP machinery, the face
    // worker's arenas reaching 720p working size), usually within the first 20 cycles; once in
    // CI it came later (354.9 -> 377.1 MiB where this machine reads 372.9 -> 371.9).
    let (rss2, rss3) = judged_rss("camera", pid, (rss2, rss3), 100, 80, || {
        cycle(&cam_body, "cam", true)
    });
    assert!(rss1 <= rss0 * 1.05, "files: RSS {rss0:.1} -> {rss1:.1} MiB");
    assert!(
        threads1 <= threads0 && fds1 <= fds0,
        "files: threads {threads0} -> {threads1}, fds {fds0} -> {fds1}"
    );
    assert!(
        rss3 <= rss2 * 1.05,
        "camera: RSS {rss2:.1} -> {rss3:.1} MiB"
    );
    assert!(
        threads3 <= threads2 && fds3 <= fds2,
        "camera: threads {threads2} -> {threads3}, fds {fds2} -> {fds3}"
    );
    // Nothing is left running, and every removal was written.
    let (_, v) = api(&addr, "GET", "/v1/streams", None, "");
    assert_eq!(v["streams"], Value::Array(vec![]));
    assert!(!logs.lock().unwrap().iter().any(|l| l.contains("panicked")));
}
