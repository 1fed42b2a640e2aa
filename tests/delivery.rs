//! Network sinks against real peers: Debian's mosquitto (stopped for 30 s mid-run, and down
//! while vigil is killed with SIGKILL) and a local HTTP server that fails its first requests.
//! Every event must arrive, in order, and verify.

mod common;

use common::*;
use serde_json::Value;
use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

/// One run at a time: they share two cores with real models.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// The face demo (Obama twice, then Biden, ~7 s), paced like a camera and looped: a steady
/// trickle of face events. `sinks` follow a file sink at `dir/events.jsonl`.
fn config(dir: &Path, looped: bool, sinks: &str) -> std::path::PathBuf {
    let yaml = format!(
        "streams:\n  - {{id: demo, url: {demo}, loop: {looped}, realtime: {looped}}}\naction: {{enabled: false}}\n{faces}sinks:\n  - {{type: file, path: {f}}}\n{sinks}metrics: {{listen: '127.0.0.1:0'}}\n{rt}",
        demo = built("media/faces_demo.mp4").display(),
        faces = faces_yaml(&dir.join("gallery.json")),
        f = dir.join("events.jsonl").display(),
        rt = runtime_yaml(),
    );
    let cfg = write_config(dir, &yaml);
    enrol_obama_once(&cfg, &dir.join("gallery.json"));
    cfg
}

fn file_events(dir: &Path) -> Vec<Value> {
    events(&std::fs::read_to_string(dir.join("events.jsonl")).unwrap_or_default())
}

fn ids(ev: &[Value]) -> Vec<String> {
    ev.iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect()
}

/// `topic payload` lines from mosquitto_sub: (topic, event) for events, skipping others.
fn received(path: &Path) -> Vec<(String, Value)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (topic, payload) = l.split_once(' ')?;
            let v: Value = serde_json::from_str(payload).ok()?;
            Some((topic.to_string(), v))
        })
        .collect()
}

/// Event ids in first-arrival order, and how many arrived more than once.
fn dedup(got: &[(String, Value)]) -> (Vec<String>, usize) {
    let mut seen = HashSet::new();
    let mut order = Vec::new();
    for (_, e) in got {
        let id = e["id"].as_str().unwrap().to_string();
        if seen.insert(id.clone()) {
            order.push(id);
        }
    }
    (order.clone(), got.len() - order.len())
}

fn spool_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|d| d.map(|e| e.unwrap().metadata().unwrap().len()).sum())
        .unwrap_or(0)
}

#[test]
fn a_broker_outage_of_30_s_loses_nothing_and_keeps_order() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Broker::start(dir.path());
    let heard = dir.path().join("heard.txt");
    let _sub = subscribe(broker.port, "vigil/#", "checker", &heard);
    let spool = dir.path().join("spool");
    let max = 1 << 20;
    let sinks = format!(
        "  - {{type: mqtt, host: 127.0.0.1, port: {}, timeout_ms: 1000, spool: {{dir: {}, max_bytes: {max}, drain_ms: 10000}}}}\n",
        broker.port,
        spool.display()
    );
    let cfg = config(dir.path(), true, &sinks);
    let mut child = spawn_run(&cfg);
    let addr = metrics_addr(&mut child);
    wait_for("face events over MQTT", Duration::from_secs(60), || {
        received(&heard)
            .iter()
            .filter(|(t, _)| t.starts_with("vigil/demo/face."))
            .count()
            >= 2
    });

    broker.stop();
    let before = file_events(dir.path()).len();
    let mut largest = 0;
    let until = std::time::Instant::now() + Duration::from_secs(30);
    while std::time::Instant::now() < until {
        largest = largest.max(spool_bytes(&spool));
        std::thread::sleep(Duration::from_millis(500));
    }
    let text = scrape(&addr);
    let waiting = metric(&text, "vigil_spool_depth_events{sink=\"mqtt\"}");
    let during = file_events(dir.path()).len() - before;
    assert!(during >= 3, "only {during} events during the outage");
    assert!(waiting >= 3.0, "{waiting} events spooled");
    assert!(
        metric(
            &text,
            "vigil_sink_published_total{outcome=\"error\",sink=\"mqtt\"}"
        ) >= 1.0
    );
    assert!(
        largest <= max + 64 * 1024,
        "the spool grew to {largest} bytes"
    );

    broker.restart();
    wait_for("the spool to empty", Duration::from_secs(60), || {
        metric(&scrape(&addr), "vigil_spool_depth_events{sink=\"mqtt\"}") == 0.0
    });
    signal(&child, "-TERM");
    assert!(child.wait().unwrap().success());

    let sent = ids(&file_events(dir.path()));
    wait_for(
        "every event at the subscriber",
        Duration::from_secs(30),
        || {
            let (got, _) = dedup(&received(&heard));
            sent.iter().all(|id| got.contains(id))
        },
    );
    let got = received(&heard);
    let (order, twice) = dedup(&got);
    assert_eq!(order, sent, "in order, every one, nothing else");
    for (topic, e) in &got {
        assert_eq!(
            topic,
            &format!(
                "vigil/{}/{}",
                e["stream"].as_str().unwrap(),
                e["type"].as_str().unwrap()
            )
        );
    }
    // The availability topic: retained, online while connected, offline after a clean end.
    let last = std::fs::read_to_string(&heard)
        .unwrap()
        .lines()
        .rfind(|l| l.starts_with("vigil/available "))
        .map(String::from);
    assert_eq!(last.as_deref(), Some("vigil/available offline"));
    eprintln!(
        "{} events, {during} made during the 30 s outage ({waiting} spooled at its end, spool at most {largest} bytes); {twice} delivered twice",
        sent.len()
    );
}

#[test]
fn spooled_events_survive_kill_9_and_reach_the_broker_later() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let spool = dir.path().join("spool");
    let sinks = format!(
        "  - {{type: mqtt, host: 127.0.0.1, port: {port}, timeout_ms: 1000, spool: {{dir: {}}}}}\n",
        spool.display()
    );
    let cfg = config(dir.path(), true, &sinks);
    // No broker: everything is spooled.
    let mut child = spawn_run(&cfg);
    let addr = metrics_addr(&mut child);
    wait_for("events spooled", Duration::from_secs(60), || {
        metric(&scrape(&addr), "vigil_spool_depth_events{sink=\"mqtt\"}") >= 4.0
    });
    child.kill().unwrap();
    child.wait().unwrap();
    let first = ids(&file_events(dir.path()));

    let broker = Broker::start_on(dir.path(), port);
    let heard = dir.path().join("heard.txt");
    let _sub = subscribe(broker.port, "vigil/#", "checker", &heard);
    std::thread::sleep(Duration::from_millis(500));
    let mut again = spawn_run(&cfg);
    let _ = metrics_addr(&mut again);
    // The file sink wrote each event just before the spool did: a SIGKILL between the two can
    // miss the last one.
    let must = &first[..first.len() - 1];
    wait_for(
        "the first run's events at the broker",
        Duration::from_secs(60),
        || {
            let (got, _) = dedup(&received(&heard));
            must.iter().all(|id| got.contains(id))
        },
    );
    signal(&again, "-TERM");
    assert!(again.wait().unwrap().success());
    let (got, _) = dedup(&received(&heard));
    let pos: Vec<usize> = must
        .iter()
        .map(|id| got.iter().position(|g| g == id).unwrap())
        .collect();
    assert!(pos.windows(2).all(|w| w[0] < w[1]), "replayed in order");
    eprintln!(
        "{} events of the killed run delivered by the next",
        must.len()
    );
}

#[test]
fn a_webhook_that_fails_at_first_gets_every_event_signed() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let log = dir.path().join("posts.jsonl");
    // A server that answers 500 to its first three requests, then 200, and records each body
    // with whether its signature verifies (Python's own hmac, not vigil's).
    let script = format!(
        r#"
import hashlib, hmac, http.server, json
fails = [3]
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers['Content-Length']))
        want = 'sha256=' + hmac.new(b's3cret-key', body, hashlib.sha256).hexdigest()
        ok = hmac.compare_digest(want, self.headers.get('X-Vigil-Signature', ''))
        status = 500 if fails[0] > 0 else 200
        fails[0] -= 1
        with open({log:?}, 'a') as f:
            f.write(json.dumps({{'status': status, 'signed': ok, 'body': body.decode()}}) + '\n')
        self.send_response(status)
        self.send_header('Content-Length', '0')
        self.end_headers()
    def log_message(self, *a):
        pass
s = http.server.HTTPServer(('127.0.0.1', {port}), H)
print('ready', flush=True)
s.serve_forever()
"#,
        log = log.display().to_string()
    );
    let mut server = Running(
        std::process::Command::new("python3")
            .args(["-u", "-c", &script])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(server.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert!(line.starts_with("ready"));
    let sinks = format!(
        "  - {{type: webhook, url: 'http://127.0.0.1:{port}/events', secret: s3cret-key, timeout_ms: 2000, spool: {{dir: {}, drain_ms: 30000}}}}\n",
        dir.path().join("spool").display()
    );
    let cfg = config(dir.path(), false, &sinks);
    let out = run(&cfg);
    assert!(out.status.success(), "{}", stderr(&out));
    let sent = ids(&file_events(dir.path()));
    let posts: Vec<Value> = events(&std::fs::read_to_string(&log).unwrap());
    assert!(posts.iter().all(|p| p["signed"] == true), "{posts:#?}");
    assert_eq!(posts.iter().filter(|p| p["status"] == 500).count(), 3);
    let accepted: Vec<String> = posts
        .iter()
        .filter(|p| p["status"] == 200)
        .map(|p| {
            let e: Value = serde_json::from_str(p["body"].as_str().unwrap()).unwrap();
            e["id"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(accepted, sent, "every event, once, in order");
    eprintln!("{} events delivered after 3 refusals", sent.len());
}

/// Issue 16 item 10: the MQTT last will. vigil killed with SIGKILL sends no `offline` itself;
/// the broker must publish the will vigil registered, so `vigil/available` reads `offline`
/// after `online`.
#[test]
fn a_killed_vigil_is_marked_offline_by_its_mqtt_last_will() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    let heard = dir.path().join("heard.txt");
    let _sub = subscribe(broker.port, "vigil/available", "checker", &heard);
    let sinks = format!(
        "  - {{type: mqtt, host: 127.0.0.1, port: {}, timeout_ms: 1000}}\n",
        broker.port
    );
    let cfg = config(dir.path(), true, &sinks);
    let mut child = spawn_run(&cfg);
    let _ = metrics_addr(&mut child);
    let availability = || -> Vec<String> {
        std::fs::read_to_string(&heard)
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect()
    };
    wait_for("vigil to say it is online", Duration::from_secs(60), || {
        availability().last().map(String::as_str) == Some("vigil/available online")
    });
    child.kill().unwrap();
    child.wait().unwrap();
    wait_for(
        "the broker to publish the last will",
        Duration::from_secs(60),
        || availability().last().map(String::as_str) == Some("vigil/available offline"),
    );
    let seen = availability();
    assert_eq!(
        seen.iter().filter(|l| l.ends_with("offline")).count(),
        1,
        "offline only once, from the will: {seen:?}"
    );
}
