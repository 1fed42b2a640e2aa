//! The `nats` sink against Debian's nats-server with JetStream (`-js -sd <temp>`), started by
//! each test on a free loopback port and stopped at its end; a JetStream consumer in the test
//! reads what the server stored. Without nats-server (scripts/setup.sh installs it) the tests
//! are skipped with a note, except under CI, where they fail.
//!
//! Also here: streams over replicas, as `vigil check` and the API of real processes show it.

mod common;

use common::*;
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// One run at a time: they share two cores with real models.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// Debian's nats-server, or `None` with a note (a failure under CI).
fn nats_server_binary() -> Option<PathBuf> {
    for p in ["/usr/sbin/nats-server", "/usr/bin/nats-server"] {
        if Path::new(p).exists() {
            return Some(PathBuf::from(p));
        }
    }
    if std::env::var_os("CI").is_some() {
        panic!("nats-server is missing under CI: scripts/setup.sh installs Debian's nats-server");
    }
    eprintln!("skipped: nats-server is not installed (scripts/setup.sh installs it)");
    None
}

/// nats-server with JetStream on `127.0.0.1:port`, storing in `dir`; killed when dropped.
struct NatsServer {
    bin: PathBuf,
    port: u16,
    store: PathBuf,
    auth: Option<(String, String)>,
    child: Option<Running>,
}

impl NatsServer {
    fn start(bin: &Path, dir: &Path, port: u16, auth: Option<(&str, &str)>) -> NatsServer {
        let store = dir.join("jetstream");
        std::fs::create_dir_all(&store).unwrap();
        let mut s = NatsServer {
            bin: bin.to_path_buf(),
            port,
            store,
            auth: auth.map(|(u, p)| (u.to_string(), p.to_string())),
            child: None,
        };
        s.restart();
        s
    }

    /// Starts the server (again, on the same port and store) and waits until it listens.
    fn restart(&mut self) {
        assert!(self.child.is_none(), "nats-server is running already");
        let mut c = Command::new(&self.bin);
        c.args([
            "-a",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "-js",
            "-sd",
        ])
        .arg(&self.store);
        if let Some((u, p)) = &self.auth {
            c.args(["--user", u, "--pass", p]);
        }
        let child = c
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server");
        self.child = Some(Running(child));
        wait_for("nats-server to listen", Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
        });
    }

    /// A clean stop (SIGTERM), waiting until it has exited.
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            signal(&c, "-TERM");
            let _ = c.wait();
        }
    }

    fn url(&self) -> String {
        match &self.auth {
            Some((u, p)) => format!("nats://{u}:{p}@127.0.0.1:{}", self.port),
            None => format!("nats://127.0.0.1:{}", self.port),
        }
    }
}

/// What the JetStream stream `VIGIL` holds, read through a pull consumer from its start:
/// (subject, `Nats-Msg-Id`, event) per message.
fn stored(server: &NatsServer) -> Vec<(String, String, Value)> {
    use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
    use futures_util::StreamExt;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut opts = async_nats::ConnectOptions::new();
        if let Some((u, p)) = &server.auth {
            opts = opts.user_and_password(u.clone(), p.clone());
        }
        let client = opts
            .connect(format!("nats://127.0.0.1:{}", server.port))
            .await
            .expect("the test connects");
        let js = async_nats::jetstream::new(client);
        let stream = js.get_stream("VIGIL").await.expect("stream VIGIL exists");
        let consumer = stream
            .create_consumer(pull::Config {
                deliver_policy: DeliverPolicy::All,
                ack_policy: AckPolicy::Explicit,
                ..Default::default()
            })
            .await
            .expect("a consumer");
        let mut out = Vec::new();
        loop {
            let mut batch = consumer
                .batch()
                .max_messages(500)
                .expires(Duration::from_secs(2))
                .messages()
                .await
                .expect("a batch");
            let mut n = 0;
            while let Some(m) = batch.next().await {
                let m = m.expect("a message");
                let id = m
                    .headers
                    .as_ref()
                    .and_then(|h| h.get("Nats-Msg-Id"))
                    .map(|v| v.as_str().to_string())
                    .unwrap_or_default();
                let event: Value = serde_json::from_slice(&m.payload).expect("a JSON event");
                out.push((m.subject.to_string(), id, event));
                m.ack().await.expect("ack");
                n += 1;
            }
            if n == 0 {
                return out;
            }
        }
    })
}

/// The face demo, paced like a camera and looped: a steady trickle of face events from stream
/// `stream`; a file sink at `dir/events.jsonl` records what was made, and the nats sink spools
/// in `dir/spool`.
fn config(dir: &Path, stream: &str, nats_url: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let yaml = format!(
        "streams:\n  - {{id: '{stream}', url: {demo}, loop: true, realtime: true}}\naction: {{enabled: false}}\n{faces}sinks:\n  - {{type: file, path: {f}}}\n  - {{type: nats, url: '{nats_url}', timeout_ms: 1000, spool: {{dir: {spool}, drain_ms: 10000}}}}\nmetrics: {{listen: '127.0.0.1:0'}}\n{rt}",
        demo = built("media/faces_demo.mp4").display(),
        faces = faces_yaml(&dir.join("gallery.json")),
        f = dir.join("events.jsonl").display(),
        spool = dir.join("spool").display(),
        rt = runtime_yaml(),
    );
    let cfg = write_config(dir, &yaml);
    enrol_obama_once(&cfg, &dir.join("gallery.json"));
    cfg
}

fn made(dir: &Path) -> Vec<String> {
    events(&std::fs::read_to_string(dir.join("events.jsonl")).unwrap_or_default())
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect()
}

fn nats_metric(addr: &str, series: &str) -> f64 {
    metric(&scrape(addr), series)
}

const DEPTH: &str = "vigil_spool_depth_events{sink=\"nats\"}";
const OK: &str = "vigil_sink_published_total{outcome=\"ok\",sink=\"nats\"}";

/// Every stored message: its id header is the event's id, its subject is
/// `vigil.<stream, `.` as %2E>.<type>`, and no id is stored twice. Returns the ids.
fn check_stored(got: &[(String, String, Value)]) -> HashSet<String> {
    let mut seen = HashMap::new();
    for (subject, id, e) in got {
        assert_eq!(id, e["id"].as_str().unwrap(), "Nats-Msg-Id is the event id");
        let stream = e["stream"].as_str().unwrap().replace('.', "%2E");
        assert_eq!(
            subject,
            &format!("vigil.{stream}.{}", e["type"].as_str().unwrap())
        );
        *seen.entry(id.clone()).or_insert(0) += 1;
    }
    let twice: Vec<_> = seen.iter().filter(|(_, &n)| n > 1).collect();
    assert!(twice.is_empty(), "stored more than once: {twice:?}");
    seen.into_keys().collect()
}

#[test]
fn two_vigils_deliver_every_event_once_across_a_30_s_outage_and_a_kill_9() {
    let Some(bin) = nats_server_binary() else {
        return;
    };
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let mut nats = NatsServer::start(&bin, dir.path(), free_port(), None);
    let url = nats.url();
    // A dotted stream id on one of them: it becomes one subject token.
    let (da, db) = (dir.path().join("a"), dir.path().join("b"));
    let (ca, cb) = (config(&da, "hall.a", &url), config(&db, "door", &url));
    let mut a = spawn_run(&ca);
    let mut b = spawn_run(&cb);
    let mut addr_a = metrics_addr(&mut a);
    let addr_b = metrics_addr(&mut b);
    wait_for(
        "events of both acknowledged by JetStream",
        Duration::from_secs(120),
        || nats_metric(&addr_a, OK) >= 2.0 && nats_metric(&addr_b, OK) >= 2.0,
    );

    nats.stop();
    let outage = Instant::now();
    // Halfway through the outage, A is killed (its spool holds what it could not deliver)
    // and started again.
    wait_for(
        "A to spool during the outage",
        Duration::from_secs(60),
        || nats_metric(&addr_a, DEPTH) >= 1.0,
    );
    std::thread::sleep(Duration::from_secs(15).saturating_sub(outage.elapsed()));
    a.kill().unwrap();
    a.wait().unwrap();
    let killed_run = made(&da);
    let mut a = spawn_run(&ca);
    addr_a = metrics_addr(&mut a);
    std::thread::sleep(Duration::from_secs(30).saturating_sub(outage.elapsed()));
    let waiting = (nats_metric(&addr_a, DEPTH), nats_metric(&addr_b, DEPTH));
    assert!(
        waiting.0 >= 1.0 && waiting.1 >= 1.0,
        "both spool during the outage: {waiting:?}"
    );

    nats.restart();
    wait_for("both spools to empty", Duration::from_secs(90), || {
        nats_metric(&addr_a, DEPTH) == 0.0 && nats_metric(&addr_b, DEPTH) == 0.0
    });
    for child in [&mut a, &mut b] {
        signal(child, "-TERM");
        assert!(child.wait().unwrap().success());
    }

    let got = stored(&nats);
    let ids = check_stored(&got);
    let (sent_a, sent_b) = (made(&da), made(&db));
    // The file sink writes each event just before the spool does: a SIGKILL between the two
    // can miss the killed run's last event. Nothing else may be missing.
    let may_miss = killed_run.last().cloned();
    for id in sent_a.iter().chain(&sent_b) {
        assert!(
            ids.contains(id) || Some(id) == may_miss.as_ref(),
            "event {id} never reached JetStream"
        );
    }
    let sent: HashSet<&String> = sent_a.iter().chain(&sent_b).collect();
    assert!(
        ids.iter().all(|id| sent.contains(id)),
        "JetStream holds an event that no vigil made"
    );
    let faces = got
        .iter()
        .filter(|(s, _, _)| s.starts_with("vigil.hall%2Ea.face."))
        .count();
    assert!(faces >= 2, "{faces} face events of hall.a stored");
    eprintln!(
        "{} events stored once each ({} from A over two runs, {} from B); {} spooled at the outage's end",
        got.len(),
        sent_a.len(),
        sent_b.len(),
        waiting.0 + waiting.1
    );
}

#[test]
fn nats_unreachable_at_start_is_retried_and_the_spool_delivered_later() {
    let Some(bin) = nats_server_binary() else {
        return;
    };
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let secret = "s3cretNatsPw";
    let url = format!("nats://vigil:{secret}@127.0.0.1:{port}");
    let d = dir.path().join("a");
    let cfg = config(&d, "door", &url);
    let mut child = spawn_run(&cfg);
    let (addr, logs) = metrics_addr_keeping_logs(&mut child);
    wait_for("events spooled", Duration::from_secs(90), || {
        nats_metric(&addr, DEPTH) >= 3.0
    });
    assert!(
        child.try_wait().unwrap().is_none(),
        "vigil is still running"
    );
    let scraped = scrape(&addr);
    assert!(
        metric(
            &scraped,
            "vigil_sink_published_total{outcome=\"error\",sink=\"nats\"}"
        ) >= 1.0
    );

    let nats = NatsServer::start(&bin, dir.path(), port, Some(("vigil", secret)));
    wait_for("the spool to empty", Duration::from_secs(90), || {
        nats_metric(&addr, DEPTH) == 0.0
    });
    signal(&child, "-TERM");
    assert!(child.wait().unwrap().success());

    let ids = check_stored(&stored(&nats));
    let sent = made(&d);
    assert!(sent.len() >= 3);
    assert_eq!(ids, sent.iter().cloned().collect::<HashSet<_>>());
    let said = logs.lock().unwrap().join("\n");
    assert!(
        said.contains("cannot deliver") && said.contains("vigil:***@127.0.0.1"),
        "the failure is logged with the URL redacted:\n{said}"
    );
    assert!(!said.contains(secret), "the password leaked into the logs");
    assert!(
        !scraped.contains(secret),
        "the password leaked into metrics"
    );
}

/// A small file every stream of the sharding tests names; nothing is run.
fn twelve_streams(dir: &Path, cluster: &str, extra: &str) -> PathBuf {
    let clip = dir.join("gray.mp4");
    if !clip.exists() {
        lavfi("color=gray:s=64x64", 5, &clip);
    }
    let mut yaml = String::from("streams:\n");
    for i in 0..12 {
        yaml += &format!("  - {{id: cam-{i:02}, url: {}}}\n", clip.display());
    }
    yaml += &format!("action: {{enabled: false}}\n{cluster}{extra}");
    write_config(dir, &yaml)
}

/// `vigil check`'s cluster line: (the streams this replica runs, the others with their owner).
fn cluster_line(cfg: &Path, hostname: Option<&str>) -> (Vec<String>, Vec<(String, u32)>) {
    let mut c = vigil();
    c.args(["check", "--config"]).arg(cfg);
    if let Some(h) = hostname {
        c.env("HOSTNAME", h);
    }
    let out = c.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}{}", stderr(&out));
    let line = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("cluster: "))
        .unwrap_or_else(|| panic!("no cluster line in:\n{text}"))
        .to_string();
    let (mine, others) = line.split_once("; the others run: ").unwrap();
    let mine: Vec<String> = mine
        .split_once("streams: ")
        .unwrap()
        .1
        .split(", ")
        .filter(|s| *s != "none")
        .map(String::from)
        .collect();
    let others = others
        .split(", ")
        .filter(|s| *s != "none")
        .map(|s| {
            let (id, o) = s.split_once(" (replica ").unwrap();
            (id.to_string(), o.trim_end_matches(')').parse().unwrap())
        })
        .collect();
    (mine, others)
}

#[test]
fn twelve_streams_over_three_replicas_run_each_on_exactly_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut runs: HashMap<String, Vec<u32>> = HashMap::new();
    let mut said_owner: HashMap<String, HashSet<u32>> = HashMap::new();
    for k in 0..3u32 {
        // The ordinal from a StatefulSet pod's host name.
        let cfg = twelve_streams(dir.path(), "cluster: {replicas: 3}\n", "");
        let (mine, others) = cluster_line(&cfg, Some(&format!("vigil-{k}")));
        for id in mine {
            runs.entry(id.clone()).or_default().push(k);
            said_owner.entry(id).or_default().insert(k);
        }
        for (id, o) in others {
            assert_ne!(o, k, "{id} is said to run elsewhere, on this replica");
            said_owner.entry(id).or_default().insert(o);
        }
    }
    assert_eq!(runs.len(), 12, "every stream runs somewhere: {runs:?}");
    for (id, on) in &runs {
        assert_eq!(on.len(), 1, "{id} runs on {on:?}");
        assert_eq!(
            said_owner[id],
            HashSet::from([on[0]]),
            "every replica names the same owner for {id}"
        );
    }
    let load: HashSet<u32> = runs.values().map(|v| v[0]).collect();
    assert!(load.len() >= 2, "12 streams all on one replica: {runs:?}");

    // No ordinal and a host name without one: a clear error, exit 2.
    let cfg = twelve_streams(dir.path(), "cluster: {replicas: 3}\n", "");
    let out = vigil()
        .args(["check", "--config"])
        .arg(&cfg)
        .env("HOSTNAME", "laptop")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("cluster.ordinal") && err.contains("\"laptop\""),
        "{err}"
    );
}

#[test]
fn a_stream_added_over_the_api_to_the_wrong_replica_is_refused_naming_its_owner() {
    let dir = tempfile::tempdir().unwrap();
    let clip = dir.path().join("gray.mp4");
    lavfi("color=gray:s=64x64", 5, &clip);
    let yaml = format!(
        "streams: []\naction: {{enabled: false}}\ncluster: {{replicas: 2, ordinal: 0}}\nmetrics: {{listen: '127.0.0.1:0'}}\napi: {{listen: '127.0.0.1:0', state_dir: {}}}\n",
        dir.path().join("state").display()
    );
    let cfg = write_config(dir.path(), &yaml);
    let (mut child, _metrics, api_at, _logs) = start_api(&cfg);
    // Ids that hash to replica 0 and to replica 1, as `vigil check` of replica 0 tells them.
    let probe = dir.path().join("probe");
    std::fs::create_dir_all(&probe).unwrap();
    let cfg2 = twelve_streams(&probe, "cluster: {replicas: 2, ordinal: 0}\n", "");
    let (mine, others) = cluster_line(&cfg2, None);
    let (here, there) = (mine[0].clone(), others[0].0.clone());
    assert_eq!(others[0].1, 1);

    let body = |id: &str| format!("{{\"id\": \"{id}\", \"url\": \"{}\"}}", clip.display());
    let (code, v) = api(&api_at, "POST", "/v1/streams", None, &body(&there));
    assert_eq!(code, 409, "{v}");
    assert_eq!(v["error"]["code"], "other_replica", "{v}");
    assert_eq!(v["error"]["owner"], 1, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("replica 1 of 2"),
        "{v}"
    );
    let (code, v) = api(&api_at, "POST", "/v1/streams", None, &body(&here));
    assert_eq!(code, 201, "{v}");
    signal(&child, "-TERM");
    assert!(child.wait().unwrap().success());
}

fn deploy_docs(rel: &str) -> Vec<serde_yaml::Value> {
    let text = std::fs::read_to_string(repo().join("deploy").join(rel)).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| {
            <serde_yaml::Value as serde::Deserialize>::deserialize(d)
                .unwrap_or_else(|e| panic!("deploy/{rel} does not parse: {e}"))
        })
        .collect()
}

#[test]
fn the_cluster_deploy_files_give_each_replica_its_own_ordinal_and_share_one_config() {
    let path = repo().join("deploy/cluster/config.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let loaded = vigil::config::parse(&path, &text).unwrap_or_else(|p| panic!("{p}"));
    let replicas = loaded.config.cluster.replicas;
    assert!(replicas > 1);
    assert!(loaded
        .config
        .sinks
        .iter()
        .any(|s| matches!(s, vigil::config::SinkConfig::Nats(_))));

    // Compose: one service per replica, each host name a distinct ordinal 0..replicas.
    let compose = &deploy_docs("cluster/docker-compose.yml")[0];
    assert!(compose["services"]["nats"].is_mapping());
    let mut ordinals: Vec<u32> = compose["services"]
        .as_mapping()
        .unwrap()
        .values()
        .filter_map(|s| s["hostname"].as_str())
        .map(|h| vigil::cluster::ordinal_from_hostname(h).expect("an ordinal in the host name"))
        .collect();
    ordinals.sort();
    assert_eq!(ordinals, (0..replicas).collect::<Vec<_>>());

    // Kubernetes: the StatefulSet's replicas match the ConfigMap's config, which is the same
    // file as the compose one.
    let docs = deploy_docs("cluster/k8s/vigil.yaml");
    let kind = |k: &str| docs.iter().find(|d| d["kind"] == k).unwrap().clone();
    let set = kind("StatefulSet");
    assert_eq!(set["spec"]["replicas"].as_u64(), Some(replicas as u64));
    let shipped = kind("ConfigMap")["data"]["config.yaml"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        shipped, text,
        "k8s/vigil.yaml embeds deploy/cluster/config.yaml as it is"
    );
    let nats = deploy_docs("cluster/k8s/nats.yaml");
    let args = &nats[0]["spec"]["template"]["spec"]["containers"][0]["args"];
    assert!(args.as_sequence().unwrap().iter().any(|a| a == "-js"));
}
