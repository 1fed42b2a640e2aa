//! The shared gallery (`gallery.postgres`) with a real PostgreSQL 15: two vigil processes on one
//! store name each other's enrolments in their running streams, follow removals, keep
//! identifying through an outage and catch up after it; a refused connection, a wrong password
//! and a newer schema are clear errors; the store password never appears in any output.

mod common;

use common::postgres::Postgres;
use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The store password: distinctive, so finding it anywhere in an output is a leak.
const PASSWORD: &str = "Pg-s3cret-7Qx";

/// A node: faces on the looping demo clip, the shared store, its events in a file, metrics
/// and the API on free loopback ports.
/// More keys under `gallery` go in `extra` (YAML lines indented by two).
fn node_config_with(dir: &Path, url: &str, extra: &str) -> PathBuf {
    let gallery = dir.join("gallery.json");
    let faces = faces_yaml(&gallery).replace(
        &format!("gallery: {{path: {}}}", gallery.display()),
        &format!(
            "gallery:\n  path: {}\n  postgres: {{url: '{url}', connect_timeout_ms: 1000, poll_ms: 500}}\n{extra}",
            gallery.display()
        ),
    );
    let yaml = format!(
        "streams:\n  - {{id: photos, url: {}, loop: true, branches: [faces]}}\naction: {{enabled: false}}\n{faces}sinks:\n  - {{type: file, path: {}}}\nmetrics: {{listen: '127.0.0.1:0'}}\napi: {{listen: '127.0.0.1:0', state_dir: {}}}\n{}",
        built("media/faces_demo.mp4").display(),
        dir.join("events.jsonl").display(),
        dir.join("state").display(),
        runtime_yaml()
    );
    write_config(dir, &yaml)
}

struct Node {
    dir: PathBuf,
    cfg: PathBuf,
    _child: Running,
    metrics: String,
    api: String,
    logs: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Node {
    fn start(dir: &Path, url: &str) -> Node {
        Node::start_with(dir, url, "")
    }

    fn start_with(dir: &Path, url: &str, extra: &str) -> Node {
        let cfg = node_config_with(dir, url, extra);
        let (child, metrics, api, logs) = start_api(&cfg);
        Node {
            dir: dir.to_path_buf(),
            cfg,
            _child: child,
            metrics,
            api,
            logs,
        }
    }

    fn events(&self) -> Vec<Value> {
        events(&std::fs::read_to_string(self.dir.join("events.jsonl")).unwrap_or_default())
    }

    /// The first face event after `since` (RFC 3339) matching `pred`.
    fn event_after(&self, since: &str, pred: impl Fn(&Value) -> bool) -> Option<Value> {
        let since = chrono::DateTime::parse_from_rfc3339(since).unwrap();
        self.events().into_iter().find(|e| {
            e["type"].as_str().is_some_and(|t| t.starts_with("face."))
                && e["wall_time"]
                    .as_str()
                    .and_then(|w| chrono::DateTime::parse_from_rfc3339(w).ok())
                    .is_some_and(|w| w > since)
                && pred(e)
        })
    }

    /// Right after an enrolment of `name` returned on A (`how`: "enrolment", "API enrolment"):
    /// waits (30 s) for this node to list them and (60 s) to name them in its stream; prints
    /// both delays, naming this node `who`.
    fn wait_until_it_names(&self, name: &'static str, who: &str, how: &str) {
        let short = name.split(' ').next_back().unwrap();
        let t0 = now();
        let started = std::time::Instant::now();
        wait_for(
            &format!("B to list {short}"),
            Duration::from_secs(30),
            || self.people().contains(&name.to_string()),
        );
        eprintln!(
            "{who} had {short} {:.2} s after the {how} on A returned",
            started.elapsed().as_secs_f64()
        );
        let mut seen = None;
        wait_for(
            &format!("B to name {short}"),
            Duration::from_secs(60),
            || {
                seen = self.event_after(&t0, named(name));
                seen.is_some()
            },
        );
        eprintln!(
            "{who} named {short} {:.2} s after the {how} on A returned",
            after(&t0, &seen.unwrap())
        );
    }

    fn people(&self) -> Vec<String> {
        let (code, v) = api(&self.api, "GET", "/v1/gallery/people", None, "");
        assert_eq!(code, 200, "{v}");
        v["people"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap().to_string())
            .collect()
    }

    fn log_text(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }
}

fn named(name: &'static str) -> impl Fn(&Value) -> bool {
    move |e: &Value| e["type"] == "face.identified" && e["identity"] == name
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339()
}

/// Seconds from `from` to the event's wall time.
fn after(from: &str, e: &Value) -> f64 {
    let a = chrono::DateTime::parse_from_rfc3339(from).unwrap();
    let b = chrono::DateTime::parse_from_rfc3339(e["wall_time"].as_str().unwrap()).unwrap();
    (b - a).num_milliseconds() as f64 / 1000.0
}

/// An enrolment over the API: the photo's bytes as the body.
fn api_enrol(node: &Node, name: &str, file: &str) -> (u16, Value) {
    let bytes = std::fs::read(built(&format!("media/faces/{file}"))).unwrap();
    let path = format!("/v1/gallery/people/{}/photos", name.replace(' ', "%20"));
    let (code, _, body) = http(
        &node.api,
        "POST",
        &path,
        &["Content-Type: image/jpeg"],
        &bytes,
    )
    .unwrap();
    (code, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

/// Node B searches an HNSW index (`gallery.index.kind: hnsw`): an enrolment on A is added to
/// it in place, not by building it again, and B names the person within the same deadlines as
/// with exact search.
#[test]
fn a_node_on_the_hnsw_index_names_an_enrolment_made_on_another_node() {
    let Some(pg) = Postgres::start() else {
        return;
    };
    pg.user("vigil", PASSWORD);
    let url = pg.url("vigil", PASSWORD);
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Node::start(da.path(), &url);
    let b = Node::start_with(db.path(), &url, "  index: {kind: hnsw}\n");
    wait_for("a face reported unknown", Duration::from_secs(120), || {
        b.events().iter().any(|e| e["type"] == "face.unknown")
    });
    let builds = |log: &str| log.matches("gallery HNSW index built").count();
    assert_eq!(builds(&b.log_text()), 1, "{}", b.log_text());

    let out = gallery(
        &a.cfg,
        &[
            "enroll",
            "--name",
            "Barack Obama",
            built("media/faces/obama.jpg").to_str().unwrap(),
        ],
    );
    ok_json(&out);
    b.wait_until_it_names("Barack Obama", "B (HNSW)", "enrolment");
    let log = b.log_text();
    assert!(log.contains("brought up to date in place"), "{log}");
    for line in log.lines().filter(|l| l.contains("in place in")) {
        eprintln!("B: {line}");
    }
    assert_eq!(builds(&log), 1, "changed in place, not rebuilt: {log}");
}

#[test]
fn two_nodes_share_enrolments_and_removals_and_ride_out_a_store_outage() {
    let Some(mut pg) = Postgres::start() else {
        return;
    };
    pg.user("vigil", PASSWORD);
    let url = pg.url("vigil", PASSWORD);
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Node::start(da.path(), &url);
    let b = Node::start(db.path(), &url);
    let mut outputs: Vec<String> = Vec::new();
    for n in [&a, &b] {
        wait_for("a face reported unknown", Duration::from_secs(120), || {
            n.events().iter().any(|e| e["type"] == "face.unknown")
        });
    }

    // Enrolled on A from the command line: B names him in its running stream.
    let out = gallery(
        &a.cfg,
        &[
            "enroll",
            "--name",
            "Barack Obama",
            built("media/faces/obama.jpg").to_str().unwrap(),
        ],
    );
    outputs.push(format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    ));
    ok_json(&out);
    b.wait_until_it_names("Barack Obama", "B", "enrolment");

    // Enrolled on A over the API: B names him too.
    let (code, v) = api_enrol(&a, "Joe Biden", "biden.jpg");
    outputs.push(v.to_string());
    assert_eq!(code, 201, "{v}");
    b.wait_until_it_names("Joe Biden", "B", "API enrolment");
    assert!(a.people().contains(&"Barack Obama".to_string()));

    // Removed on B: A drops him from its index at once. A track decides on its last few
    // searches, so a face already followed may still be named from searches made before; one
    // loop of the clip later every track is new, and A never names him again.
    let (code, v) = api(
        &b.api,
        "DELETE",
        "/v1/gallery/people/Barack%20Obama",
        None,
        "",
    );
    outputs.push(v.to_string());
    assert_eq!(code, 200, "{v}");
    wait_for("A to drop Obama", Duration::from_secs(30), || {
        !a.people().contains(&"Barack Obama".to_string())
    });
    let media = |e: &Value| e["media_time"].as_f64().unwrap_or(0.0);
    let at_removal = a.events().iter().map(media).fold(0.0, f64::max);
    let clip = 8.4;
    wait_for(
        "A to decide faces two loops after the removal",
        Duration::from_secs(120),
        || {
            a.events().iter().any(|e| {
                e["type"].as_str().is_some_and(|t| t.starts_with("face."))
                    && media(e) > at_removal + 2.0 * clip
            })
        },
    );
    let events = a.events();
    let late: Vec<&Value> = events
        .iter()
        .filter(|e| named("Barack Obama")(e) && media(e) > at_removal + clip)
        .collect();
    assert!(
        late.is_empty(),
        "A named a removed person a loop after the removal: {late:#?}"
    );
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "face.unknown" && media(e) > at_removal + clip),
        "his face is reported unknown now: {events:#?}"
    );

    // The store stops: both nodes keep naming from their caches; changes are refused clearly;
    // the lag grows and the store reads as down.
    pg.stop();
    let t3 = now();
    for n in [&a, &b] {
        wait_for(
            "a node to name Biden with the store down",
            Duration::from_secs(60),
            || n.event_after(&t3, named("Joe Biden")).is_some(),
        );
        wait_for("the store to read as down", Duration::from_secs(30), || {
            metric(&scrape(&n.metrics), "vigil_gallery_store_up") == 0.0
        });
    }
    let lag = metric(&scrape(&a.metrics), "vigil_gallery_sync_lag_seconds");
    wait_for("the lag to grow", Duration::from_secs(30), || {
        metric(&scrape(&a.metrics), "vigil_gallery_sync_lag_seconds") >= lag + 1.0
    });
    let out = gallery(
        &a.cfg,
        &[
            "enroll",
            "--name",
            "Barack Obama",
            built("media/faces/obama.jpg").to_str().unwrap(),
        ],
    );
    let err = stderr(&out);
    outputs.push(format!("{}{err}", String::from_utf8_lossy(&out.stdout)));
    assert!(!out.status.success(), "enrolled with the store down: {err}");
    assert!(
        err.contains("cannot connect to the gallery store postgres://vigil:***@127.0.0.1")
            && err.contains("nothing was changed"),
        "{err}"
    );
    let (code, v) = api_enrol(&b, "Barack Obama", "obama.jpg");
    outputs.push(v.to_string());
    assert_eq!(code, 503, "{v}");
    assert_eq!(v["error"]["code"], "store_unavailable", "{v}");
    outputs.push(scrape(&a.metrics) + &scrape(&b.metrics));

    // The store is back: a new enrolment reaches both, and both read as up again.
    pg.start_server();
    wait_for("B to reconnect", Duration::from_secs(30), || {
        metric(&scrape(&b.metrics), "vigil_gallery_store_up") == 1.0
    });
    let (code, v) = api_enrol(&b, "Barack Obama", "obama.jpg");
    outputs.push(v.to_string());
    assert_eq!(code, 201, "{v}");
    let t4 = now();
    for n in [&a, &b] {
        wait_for("Obama named again", Duration::from_secs(60), || {
            n.event_after(&t4, named("Barack Obama")).is_some()
        });
        assert_eq!(metric(&scrape(&n.metrics), "vigil_gallery_store_up"), 1.0);
        assert_eq!(
            metric(&scrape(&n.metrics), "vigil_gallery_sync_lag_seconds"),
            0.0
        );
    }
    // The store holds what both nodes saw, in one log: enrol, enrol, remove, enrol.
    let log = pg.sql(
        "vigil",
        "SELECT string_agg(kind || ':' || name, ',' ORDER BY id) FROM vigil_changes",
    );
    assert_eq!(
        log.trim(),
        "enroll:Barack Obama,enroll:Joe Biden,remove:Barack Obama,enroll:Barack Obama"
    );

    // The password never shows: not in logs, command output, API answers or metrics.
    outputs.push(a.log_text());
    outputs.push(b.log_text());
    outputs.push(scrape(&a.metrics) + &scrape(&b.metrics));
    for text in &outputs {
        assert!(!text.contains(PASSWORD), "the password leaked: {text}");
    }
    assert!(
        a.log_text().contains("postgres://vigil:***@127.0.0.1"),
        "the store is named (redacted) in the logs"
    );

    // A node restarted while the store is down starts from its cache, says so, and names.
    pg.stop();
    drop(a);
    let t5 = now();
    let a = Node::start(da.path(), &url);
    wait_for(
        "the restarted node to name Obama from its cache",
        Duration::from_secs(120),
        || a.event_after(&t5, named("Barack Obama")).is_some(),
    );
    let text = a.log_text();
    assert!(text.contains("starting from the local cache"), "{text}");
    assert_eq!(metric(&scrape(&a.metrics), "vigil_gallery_store_up"), 0.0);
    assert!(!text.contains(PASSWORD), "{text}");
}

/// A config for gallery commands only (no stream runs).
fn cli_config(dir: &Path, url: &str) -> PathBuf {
    let gallery = dir.join("gallery.json");
    let faces = faces_yaml(&gallery).replace(
        &format!("gallery: {{path: {}}}", gallery.display()),
        &format!(
            "gallery:\n  path: {}\n  postgres: {{url: '{url}', connect_timeout_ms: 1000}}",
            gallery.display()
        ),
    );
    write_config(
        dir,
        &format!(
            "streams:\n  - {{id: photos, url: {}}}\n{faces}{}",
            built("media/faces_demo.mp4").display(),
            runtime_yaml()
        ),
    )
}

fn both(out: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(out))
}

#[test]
fn a_refused_connection_a_wrong_password_and_a_newer_schema_are_clear_errors() {
    let Some(pg) = Postgres::start() else {
        return;
    };
    pg.user("vigil", PASSWORD);
    let dir = tempfile::tempdir().unwrap();
    let obama = built("media/faces/obama.jpg");

    // Nobody listens: a clear error, no cache to start from, nothing written.
    let refused = format!(
        "postgres://vigil:{PASSWORD}@127.0.0.1:{}/vigil",
        free_port()
    );
    let cfg = cli_config(dir.path(), &refused);
    let out = gallery(&cfg, &["list"]);
    let text = both(&out);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("cannot connect to the gallery store postgres://vigil:***@127.0.0.1")
            && text.contains("no local cache"),
        "{text}"
    );
    assert!(!text.contains(PASSWORD), "{text}");
    assert!(!dir.path().join("gallery.json").exists());
    let out = check(&cfg);
    assert_no_panic(&out);
    assert!(!both(&out).contains(PASSWORD), "{}", both(&out));

    // The right password: the schema is made, an enrolment lands, the cache holds it.
    let cfg = cli_config(dir.path(), &pg.url("vigil", PASSWORD));
    ok_json(&gallery(
        &cfg,
        &["enroll", "--name", "Barack Obama", obama.to_str().unwrap()],
    ));
    assert_eq!(
        pg.sql("vigil", "SELECT version FROM vigil_schema_version")
            .trim(),
        "1"
    );
    assert_eq!(
        pg.sql("vigil", "SELECT count(*) FROM vigil_embeddings")
            .trim(),
        "1"
    );

    // A wrong password: the login failure is said; the cache still answers reads; an
    // enrolment is refused and nothing changes.
    let wrong = "Wr0ng-pass-9Zt";
    let cfg = cli_config(dir.path(), &pg.url("vigil", wrong));
    let out = gallery(&cfg, &["list"]);
    let text = both(&out);
    let v = ok_json(&out);
    assert_eq!(v["people"][0]["name"], "Barack Obama", "{v}");
    assert!(
        text.contains("password authentication failed") && text.contains("local cache"),
        "{text}"
    );
    let out = gallery(
        &cfg,
        &[
            "enroll",
            "--name",
            "Joe Biden",
            built("media/faces/biden.jpg").to_str().unwrap(),
        ],
    );
    let text = both(&out);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("password authentication failed") && text.contains("nothing was changed"),
        "{text}"
    );
    assert!(!text.contains(wrong) && !text.contains(PASSWORD), "{text}");
    assert_eq!(
        pg.sql("vigil", "SELECT count(*) FROM vigil_people").trim(),
        "1"
    );

    // A schema from a newer vigil: refused, and left as it is.
    pg.sql("vigil", "UPDATE vigil_schema_version SET version = 99");
    let cfg = cli_config(dir.path(), &pg.url("vigil", PASSWORD));
    let out = gallery(&cfg, &["list"]);
    let text = both(&out);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("schema version 99, newer than this vigil knows (1)")
            && text.contains("upgrade vigil"),
        "{text}"
    );
    assert!(!text.contains(PASSWORD), "{text}");
    assert_eq!(
        pg.sql("vigil", "SELECT version FROM vigil_schema_version")
            .trim(),
        "99"
    );
}

#[test]
fn a_restarted_node_replays_only_the_changes_after_its_watermark() {
    let Some(pg) = Postgres::start() else {
        return;
    };
    pg.user("vigil", PASSWORD);
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let url = pg.url("vigil", PASSWORD);
    let (a, b) = (cli_config(da.path(), &url), cli_config(db.path(), &url));
    let photo = |f: &str| built(&format!("media/faces/{f}")).display().to_string();
    ok_json(&gallery(
        &a,
        &["enroll", "--name", "Barack Obama", &photo("obama.jpg")],
    ));
    // B's first start reads the store whole and keeps the watermark in its cache.
    let v = ok_json(&gallery(&b, &["list"]));
    assert_eq!(v["people"].as_array().unwrap().len(), 1, "{v}");
    let cache: Value =
        serde_json::from_slice(&std::fs::read(db.path().join("gallery.json")).unwrap()).unwrap();
    assert_eq!(cache["sync"]["change"], 1, "{cache}");
    // Two more changes on A; B replays those two (its log says from which change).
    ok_json(&gallery(
        &a,
        &["enroll", "--name", "Joe Biden", &photo("biden.jpg")],
    ));
    ok_json(&gallery(&a, &["remove", "--name", "Barack Obama"]));
    let out = gallery(&b, &["list"]);
    let v = ok_json(&out);
    let names: Vec<&str> = v["people"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Joe Biden"]);
    let err = stderr(&out);
    assert!(
        err.contains("2 changes after change 1") && !err.contains("whole"),
        "{err}"
    );
    let cache: Value =
        serde_json::from_slice(&std::fs::read(db.path().join("gallery.json")).unwrap()).unwrap();
    assert_eq!(cache["sync"]["change"], 3, "{cache}");
}

#[test]
fn concurrent_enrolments_on_two_nodes_are_all_kept_and_every_node_holds_them_all() {
    let Some(pg) = Postgres::start() else {
        return;
    };
    pg.user("vigil", PASSWORD);
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let url = pg.url("vigil", PASSWORD);
    let cfgs = [cli_config(da.path(), &url), cli_config(db.path(), &url)];
    let photo = built("media/faces/obama.jpg");
    // Six enrolments at once, three from each node: each its own transaction.
    let children: Vec<_> = (0..6)
        .map(|i| {
            vigil()
                .args(["gallery", "enroll", "--config"])
                .arg(&cfgs[i % 2])
                .args(["--name", &format!("person {i}")])
                .arg(&photo)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    }
    assert_eq!(
        pg.sql(
            "vigil",
            "SELECT count(*), min(id), max(id) FROM vigil_changes"
        )
        .trim(),
        "6|1|6"
    );
    for cfg in &cfgs {
        let v = ok_json(&gallery(cfg, &["list"]));
        let mut names: Vec<&str> = v["people"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        names.sort();
        assert_eq!(
            names,
            (0..6).map(|i| format!("person {i}")).collect::<Vec<_>>()
        );
    }
}

#[test]
fn a_gallery_file_seeds_an_empty_store_and_is_refused_beside_a_store_with_people() {
    let Some(pg) = Postgres::start() else {
        return;
    };
    pg.user("vigil", PASSWORD);
    let url = pg.url("vigil", PASSWORD);
    let photo = |f: &str| built(&format!("media/faces/{f}")).display().to_string();
    // Two plain gallery files, one person each.
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    for (dir, name, file) in [
        (&da, "Barack Obama", "obama.jpg"),
        (&db, "Joe Biden", "biden.jpg"),
    ] {
        let plain = write_config(
            dir.path(),
            &format!(
                "streams:\n  - {{id: photos, url: {}}}\n{}{}",
                built("media/faces_demo.mp4").display(),
                faces_yaml(&dir.path().join("gallery.json")),
                runtime_yaml()
            ),
        );
        ok_json(&gallery(&plain, &["enroll", "--name", name, &photo(file)]));
    }
    // The first becomes the store's content; its file becomes its cache.
    let a = cli_config(da.path(), &url);
    let out = gallery(&a, &["list"]);
    let v = ok_json(&out);
    assert_eq!(v["people"][0]["name"], "Barack Obama", "{v}");
    assert!(
        stderr(&out).contains("seeded it with the 1 people"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        pg.sql("vigil", "SELECT name FROM vigil_people").trim(),
        "Barack Obama"
    );
    // The second is refused, and neither it nor the store changes.
    let before = std::fs::read(db.path().join("gallery.json")).unwrap();
    let b = cli_config(db.path(), &url);
    let out = gallery(&b, &["list"]);
    let text = both(&out);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("holds 1 people but is not a cache of the gallery store")
            && text.contains("nothing was changed"),
        "{text}"
    );
    assert_eq!(
        std::fs::read(db.path().join("gallery.json")).unwrap(),
        before
    );
    assert_eq!(
        pg.sql("vigil", "SELECT count(*) FROM vigil_people").trim(),
        "1"
    );
}
