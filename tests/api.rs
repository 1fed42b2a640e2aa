//! The control plane against the real binary: streams added and removed over the API while
//! vigil runs, a person enrolled over the API (or by another process) named in a running stream,
//! the changes kept across a restart, tokens, every error answer, malformed input, idle
//! connections, and churn.

mod common;

use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A config with the API on a free loopback port, both branches (faces with snapshots), an
/// empty gallery in `dir`, events to a file, and `api_extra` (indented `api` fields) and
/// `extra` (top-level sections) added.
fn api_config(dir: &Path, api_extra: &str, extra: &str) -> PathBuf {
    let faces = faces_yaml(&dir.join("gallery.json")).replace(
        "faces:\n  enabled: true\n",
        &format!(
            "faces:\n  enabled: true\n  sample_fps: 5\n  snapshots: {}\n",
            dir.join("snaps").display()
        ),
    );
    let yaml = format!(
        "api:\n  listen: '127.0.0.1:0'\n  state_dir: {state}\n{api_extra}{action}{faces}sinks:\n  - {{type: file, path: {events}}}\nmetrics: {{listen: '127.0.0.1:0'}}\n{runtime}{extra}",
        state = dir.join("state").display(),
        action = action_yaml(),
        events = dir.join("events.jsonl").display(),
        runtime = runtime_yaml(),
    );
    std::fs::create_dir_all(dir.join("snaps")).unwrap();
    write_config(dir, &yaml)
}

fn photo(name: &str) -> Vec<u8> {
    std::fs::read(built(&format!("media/faces/{name}"))).unwrap()
}

fn post_image(addr: &str, path: &str, token: Option<&str>, ct: &str, body: &[u8]) -> (u16, Value) {
    let auth = token.map(|t| format!("Authorization: Bearer {t}"));
    let ct = format!("Content-Type: {ct}");
    let mut h = vec![ct.as_str()];
    if let Some(a) = &auth {
        h.push(a);
    }
    let (code, _, body) = http(addr, "POST", path, &h, body).unwrap();
    (code, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

fn decoded(metrics: &str, stream: &str) -> f64 {
    metric(
        &scrape(metrics),
        &format!("vigil_frames_decoded_total{{stream=\"{stream}\"}}"),
    )
}

#[test]
fn streams_and_people_change_while_vigil_runs_and_the_changes_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = api_config(dir.path(), "", "");
    let (mut child, metrics, addr, logs) = start_api(&cfg);
    let sse = Sse::open(&addr, "/v1/events/stream", None, None);
    let (code, v) = api(&addr, "GET", "/v1/streams", None, "");
    assert_eq!(
        (code, v["streams"].as_array().unwrap().len()),
        (200, 0),
        "{v}"
    );

    // A recorded file (looped, faces) and a camera on the test RTSP server (actions).
    let photos = built("media/faces_demo.mp4");
    let body = format!(
        r#"{{"id": "photos", "url": "{}", "branches": ["faces"], "loop": true}}"#,
        photos.display()
    );
    let (code, v) = api(&addr, "POST", "/v1/streams", None, &body);
    assert_eq!(code, 201, "{v}");
    assert_eq!(v["source"], "api");
    let rtsp = RtspServer::start(&[("cam", &built("media/live_720p.mp4"))], None);
    let body = format!(
        r#"{{"id": "cam", "url": "{}", "branches": ["action"]}}"#,
        rtsp.url("cam")
    );
    let (code, v) = api(&addr, "POST", "/v1/streams", None, &body);
    assert_eq!(code, 201, "{v}");

    // Their events arrive over SSE.
    for id in ["photos", "cam"] {
        sse.wait(&format!("{id} up"), Duration::from_secs(60), |e| {
            e["type"] == "stream.up" && e["stream"] == id
        });
    }
    sse.wait("an action on the camera", Duration::from_secs(120), |e| {
        e["type"] == "action.started" && e["stream"] == "cam"
    });
    let unknown = sse.wait("an unknown face", Duration::from_secs(60), |e| {
        e["type"] == "face.unknown" && e["stream"] == "photos"
    });
    // Its snapshot is served by event id.
    let (code, head, jpeg) = http(
        &addr,
        "GET",
        &format!("/v1/snapshots/{}", unknown["id"].as_str().unwrap()),
        &[],
        b"",
    )
    .unwrap();
    assert_eq!(code, 200);
    assert!(head.contains("content-type: image/jpeg") && jpeg.starts_with(&[0xFF, 0xD8]));

    // A client that reconnects with Last-Event-ID gets what it missed, in order; one whose id
    // is no longer kept is told so first. The list endpoint pages the same way.
    let seen = sse.json();
    let first_id = seen[0]["id"].as_str().unwrap().to_string();
    let resumed = Sse::open(
        &addr,
        "/v1/events/stream?stream=photos",
        None,
        Some(&first_id),
    );
    let want: Vec<Value> = seen[1..]
        .iter()
        .filter(|e| e["stream"] == "photos")
        .cloned()
        .collect();
    wait_for(
        "the resumed stream to catch up",
        Duration::from_secs(30),
        || resumed.json().len() >= want.len(),
    );
    assert_eq!(&resumed.json()[..want.len()], &want[..]);
    let gap = Sse::open(&addr, "/v1/events/stream", None, Some("no-such-id"));
    wait_for("a gap event", Duration::from_secs(30), || {
        !gap.events.lock().unwrap().is_empty()
    });
    assert_eq!(gap.events.lock().unwrap()[0].1.as_deref(), Some("gap"));
    let (code, v) = api(
        &addr,
        "GET",
        &format!("/v1/events?after={first_id}&limit=2"),
        None,
        "",
    );
    assert_eq!(code, 200);
    assert_eq!(v["gap"], false);
    assert_eq!(v["events"].as_array().unwrap()[..], seen[1..3]);

    // Enrolled from one photo over the API: named in the running stream, no restart.
    let (code, v) = post_image(
        &addr,
        "/v1/gallery/people/Barack%20Obama/photos",
        None,
        "image/jpeg",
        &photo("obama.jpg"),
    );
    assert_eq!(code, 201, "{v}");
    assert_eq!(v["enrolled"], "Barack Obama");
    let enrolled_at = chrono::Utc::now();
    let named = sse.wait("Obama named", Duration::from_secs(60), |e| {
        e["type"] == "face.identified" && e["identity"] == "Barack Obama"
    });
    let at = chrono::DateTime::parse_from_rfc3339(named["wall_time"].as_str().unwrap()).unwrap();
    eprintln!(
        "named {:.2} s after the enrolment answered",
        (at.with_timezone(&chrono::Utc) - enrolled_at).num_milliseconds() as f64 / 1000.0
    );

    // Removing the camera: its stream.down (reason removed) comes, and the file stream's frame
    // counter keeps rising (the removal can answer within one frame of the file, so only
    // "not backwards" is asked of the reading taken as it answers).
    let before = decoded(&metrics, "photos");
    let (code, _) = api(&addr, "DELETE", "/v1/streams/cam", None, "");
    assert_eq!(code, 204);
    let during = decoded(&metrics, "photos");
    sse.wait("cam removed", Duration::from_secs(30), |e| {
        e["type"] == "stream.down" && e["stream"] == "cam" && e["reason"] == "removed"
    });
    std::thread::sleep(Duration::from_millis(500));
    let after = decoded(&metrics, "photos");
    assert!(
        before <= during && during < after,
        "{before} {during} {after}"
    );
    let (code, v) = api(&addr, "GET", "/v1/streams/cam", None, "");
    assert_eq!(
        (code, v["error"]["code"].as_str()),
        (404, Some("not_found"))
    );
    let (code, v) = api(&addr, "GET", "/v1/streams/photos", None, "");
    assert_eq!(code, 200);
    // A file read as fast as the pipeline takes it is `up` or `blocked` (waiting for room).
    assert!(v["state"] == "up" || v["state"] == "blocked", "{v}");
    assert!(
        v["frames"].as_u64().unwrap() > 0 && v["since"].is_string(),
        "{v}"
    );

    // Every event of the run also went to the file sink, in the same order.
    signal(&child, "-INT");
    assert!(child.0.wait().unwrap().success());
    let written = events(&std::fs::read_to_string(dir.path().join("events.jsonl")).unwrap());
    let streamed: Vec<Value> = sse.json();
    let ids = |v: &[Value]| -> Vec<String> { v.iter().map(|e| e["id"].to_string()).collect() };
    assert!(ids(&written).starts_with(&ids(&streamed)[..streamed.len().min(written.len())]));
    assert!(!logs.lock().unwrap().iter().any(|l| l.contains("panicked")));

    // After a restart the added stream is back, the removed one is not.
    let (_child, _, addr, _) = start_api(&cfg);
    let (_, v) = api(&addr, "GET", "/v1/streams", None, "");
    let ids: Vec<&str> = v["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["photos"], "{v}");
    let (_, v) = api(&addr, "GET", "/v1/gallery/people", None, "");
    assert_eq!(v["people"][0]["name"], "Barack Obama", "{v}");
}

#[test]
fn a_person_enrolled_by_another_process_is_named_by_the_running_vigil_and_concurrent_enrolments_are_kept(
) {
    let dir = tempfile::tempdir().unwrap();
    let gallery = dir.path().join("gallery.json");
    let events_path = dir.path().join("events.jsonl");
    let yaml = format!(
        "streams:\n  - {{id: photos, url: {}, loop: true, branches: [faces]}}\naction: {{enabled: false}}\n{}sinks:\n  - {{type: file, path: {}}}\nmetrics: {{listen: '127.0.0.1:0'}}\n{}",
        built("media/faces_demo.mp4").display(),
        faces_yaml(&gallery),
        events_path.display(),
        runtime_yaml()
    );
    let cfg = write_config(dir.path(), &yaml);
    let mut child = spawn_run(&cfg);
    let (_, logs) = metrics_addr_keeping_logs(&mut child);
    let read = || events(&std::fs::read_to_string(&events_path).unwrap_or_default());
    wait_for("a face reported unknown", Duration::from_secs(60), || {
        !of_type(&read(), "face.unknown").is_empty()
    });
    // Two enrolments at the same moment, from two processes: both kept.
    let enrol = |name: &str, file: &str| {
        vigil()
            .args(["gallery", "enroll", "--config"])
            .arg(&cfg)
            .args(["--name", name])
            .arg(built(&format!("media/faces/{file}")))
            .spawn()
            .unwrap()
    };
    let (mut a, mut b) = (
        enrol("Barack Obama", "obama.jpg"),
        enrol("Joe Biden", "biden.jpg"),
    );
    assert!(a.wait().unwrap().success() && b.wait().unwrap().success());
    let enrolled_at = chrono::Utc::now();
    let out = vigil()
        .args(["gallery", "list", "--json", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut names: Vec<&str> = v["people"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["Barack Obama", "Joe Biden"]);

    // The running vigil sees the file change and names both from then on.
    wait_for(
        "the running vigil to reload the gallery",
        Duration::from_secs(30),
        || {
            logs.lock()
                .unwrap()
                .iter()
                .any(|l| l.contains("changed on disk"))
        },
    );
    wait_for("Obama and Biden named", Duration::from_secs(60), || {
        let ev = read();
        let named: Vec<&str> = of_type(&ev, "face.identified")
            .iter()
            .filter_map(|e| e["identity"].as_str())
            .collect();
        named.contains(&"Barack Obama") && named.contains(&"Joe Biden")
    });
    let first = of_type(&read(), "face.identified")
        .iter()
        .filter_map(|e| e["wall_time"].as_str().map(str::to_string))
        .next()
        .unwrap();
    let at = chrono::DateTime::parse_from_rfc3339(&first).unwrap();
    eprintln!(
        "first named {:.2} s after both enrolments finished",
        (at.with_timezone(&chrono::Utc) - enrolled_at).num_milliseconds() as f64 / 1000.0
    );
}

#[test]
fn tokens_are_required_scoped_never_logged_and_a_public_listener_needs_them() {
    let dir = tempfile::tempdir().unwrap();
    let (write, wline) = new_token("write");
    let (read, rline) = new_token("read");
    let tokens = format!("  tokens:\n{wline}\n{rline}\n").replace("    - ", "    - ");
    let cfg = api_config(dir.path(), &tokens, "");
    let (child, _, addr, logs) = start_api(&cfg);

    let (code, _, _) = http(&addr, "GET", "/v1/streams", &[], b"").unwrap();
    assert_eq!(code, 401);
    let (code, head, body) = http(
        &addr,
        "GET",
        "/v1/status",
        &["Authorization: Bearer nope"],
        b"",
    )
    .unwrap();
    assert_eq!(code, 401);
    assert!(head.contains("www-authenticate: bearer"), "{head}");
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["error"]["code"], "unauthorized");
    assert_eq!(api(&addr, "GET", "/v1/streams", Some(&read), "").0, 200);
    let key = format!("X-Api-Key: {read}");
    assert_eq!(
        http(&addr, "GET", "/v1/status", &[&key], b"").unwrap().0,
        200
    );
    let body = format!(
        r#"{{"id": "x", "url": "{}"}}"#,
        built("media/bigbuckbunny.mp4").display()
    );
    let (code, v) = api(&addr, "POST", "/v1/streams", Some(&read), &body);
    assert_eq!(
        (code, v["error"]["code"].as_str()),
        (403, Some("forbidden"))
    );
    let (code, _) = api(&addr, "DELETE", "/v1/streams/x", Some(&read), "");
    assert_eq!(code, 403);
    let (code, _) = api(&addr, "POST", "/v1/streams", Some(&write), &body);
    assert_eq!(code, 201);
    // Health stays open.
    assert_eq!(http(&addr, "GET", "/healthz", &[], b"").unwrap().0, 200);
    drop(child);
    let logs = logs.lock().unwrap().join("\n");
    assert!(
        !logs.contains(&write) && !logs.contains(&read),
        "a token was logged"
    );

    // Reachable from other machines without tokens: refused at start, exit 2.
    let dir2 = tempfile::tempdir().unwrap();
    let cfg = api_config(dir2.path(), "", "")
        .to_string_lossy()
        .to_string();
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("'127.0.0.1:0'\n  state_dir", "'0.0.0.0:0'\n  state_dir");
    std::fs::write(&cfg, &text).unwrap();
    for verb in ["check", "run"] {
        let out = vigil().args([verb, "--config", &cfg]).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{verb}: {}", stderr(&out));
        assert!(stderr(&out).contains("api.listen: 0.0.0.0:0 is reachable from other machines, so `api.tokens` is required"), "{}", stderr(&out));
    }
}

/// A small PNG with no face in it (a grey square).
fn grey_png(dir: &Path) -> Vec<u8> {
    let p = dir.join("grey.png");
    lavfi("color=gray:s=96x96", 1, &p);
    std::fs::read(p).unwrap()
}

#[test]
fn every_error_answer_has_its_status_code_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = api_config(dir.path(), "  max_body_bytes: 2000000\n", "");
    let text = std::fs::read_to_string(&cfg).unwrap();
    let text = text.replace(
        "gallery: {path:",
        "gallery: {max_image_pixels: 50000000, path:",
    );
    std::fs::write(&cfg, text).unwrap();
    let (_child, _, addr, _) = start_api(&cfg);
    let code_of = |(c, v): (u16, Value)| {
        (
            c,
            v["error"]["code"].as_str().unwrap_or("").to_string(),
            v["error"]["field"].as_str().map(str::to_string),
        )
    };

    // 400: malformed JSON, an unknown field (named).
    let (c, code, _) = code_of(api(&addr, "POST", "/v1/streams", None, "{\"id\": "));
    assert_eq!((c, code.as_str()), (400, "bad_json"));
    let (c, code, field) = code_of(api(
        &addr,
        "POST",
        "/v1/streams",
        None,
        r#"{"id": "a", "url": "x", "colour": 1}"#,
    ));
    assert_eq!(
        (c, code.as_str(), field.as_deref()),
        (400, "bad_json", Some("colour"))
    );
    // 422: an invalid field, named; a URL with credentials is not echoed.
    let (c, v) = api(
        &addr,
        "POST",
        "/v1/streams",
        None,
        r#"{"id": "bad id", "url": "/nonexistent.mp4"}"#,
    );
    assert_eq!((c, v["error"]["field"].as_str()), (422, Some("id")), "{v}");
    let (c, v) = api(
        &addr,
        "POST",
        "/v1/streams",
        None,
        r#"{"id": "a", "url": "ftp://admin:hunter2@10.0.0.1/x"}"#,
    );
    assert_eq!((c, v["error"]["field"].as_str()), (422, Some("url")), "{v}");
    assert!(!v.to_string().contains("hunter2"), "{v}");
    let (c, v) = api(
        &addr,
        "POST",
        "/v1/streams",
        None,
        r#"{"id": "a", "url": "/nonexistent/a.mp4"}"#,
    );
    assert_eq!((c, v["error"]["field"].as_str()), (422, Some("url")), "{v}");
    // 409: a duplicate id; the camera URL's password never shows in answers.
    let body = r#"{"id": "door", "url": "rtsp://viewer:secret@127.0.0.1:9/x"}"#;
    assert_eq!(api(&addr, "POST", "/v1/streams", None, body).0, 201);
    let (c, v) = api(&addr, "POST", "/v1/streams", None, body);
    assert_eq!((c, v["error"]["code"].as_str()), (409, Some("duplicate")));
    let (_, v) = api(&addr, "GET", "/v1/streams", None, "");
    assert!(
        v.to_string().contains("viewer:***@") && !v.to_string().contains("secret"),
        "{v}"
    );
    // 404: unknown stream, person, event, path; 405 wrong method.
    assert_eq!(api(&addr, "DELETE", "/v1/streams/nope", None, "").0, 404);
    assert_eq!(
        api(&addr, "DELETE", "/v1/gallery/people/Nobody", None, "").0,
        404
    );
    assert_eq!(api(&addr, "GET", "/v1/snapshots/0000", None, "").0, 404);
    let (c, code, _) = code_of(api(&addr, "GET", "/v1/nothing", None, ""));
    assert_eq!((c, code.as_str()), (404, "not_found"));
    let (c, code, _) = code_of(api(&addr, "PUT", "/v1/streams", None, ""));
    assert_eq!((c, code.as_str()), (405, "method_not_allowed"));
    // 413: a body over max_body_bytes; an image over gallery.max_image_pixels.
    let (c, v) = post_image(
        &addr,
        "/v1/gallery/identify",
        None,
        "image/jpeg",
        &vec![0xFF; 3_000_000],
    );
    assert_eq!(
        (c, v["error"]["code"].as_str()),
        (413, Some("too_large")),
        "{v}"
    );
    let mut huge = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
    huge.extend(20000u32.to_be_bytes());
    huge.extend(20000u32.to_be_bytes());
    huge.extend([8, 2, 0, 0, 0, 0, 0, 0, 0]);
    let (c, v) = post_image(&addr, "/v1/gallery/identify", None, "image/png", &huge);
    assert_eq!(
        (c, v["error"]["code"].as_str()),
        (413, Some("too_many_pixels")),
        "{v}"
    );
    // 415: not an image (by content type, or by its bytes).
    let (c, v) = post_image(&addr, "/v1/gallery/identify", None, "text/plain", b"hello");
    assert_eq!(
        (c, v["error"]["code"].as_str()),
        (415, Some("not_an_image")),
        "{v}"
    );
    let (c, _) = post_image(
        &addr,
        "/v1/gallery/people/A/photos",
        None,
        "image/jpeg",
        b"hello",
    );
    assert_eq!(c, 415);
    // 422: no face, an invalid name; identify with no face is an empty answer.
    let grey = grey_png(dir.path());
    let (c, v) = post_image(
        &addr,
        "/v1/gallery/people/Ada/photos",
        None,
        "image/png",
        &grey,
    );
    assert_eq!(
        (c, v["error"]["code"].as_str()),
        (422, Some("no_face")),
        "{v}"
    );
    let (c, v) = post_image(
        &addr,
        "/v1/gallery/people/%20Ada/photos",
        None,
        "image/jpeg",
        &photo("obama.jpg"),
    );
    assert_eq!(
        (c, v["error"]["field"].as_str()),
        (422, Some("name")),
        "{v}"
    );
    let (c, v) = post_image(&addr, "/v1/gallery/identify", None, "image/png", &grey);
    assert_eq!(c, 200);
    assert_eq!(v["faces"], serde_json::json!([]));
    assert!(v["threshold"].as_f64().unwrap() > 0.0);
    // Multipart upload, then identify and verify against it.
    let mut mp = b"--XyZ\r\nContent-Disposition: form-data; name=\"image\"; filename=\"o.jpg\"\r\nContent-Type: image/jpeg\r\n\r\n".to_vec();
    mp.extend(photo("obama.jpg"));
    mp.extend(b"\r\n--XyZ--\r\n");
    let (c, v) = post_image(
        &addr,
        "/v1/gallery/people/Obama/photos",
        None,
        "multipart/form-data; boundary=XyZ",
        &mp,
    );
    assert_eq!(c, 201, "{v}");
    let (c, v) = post_image(
        &addr,
        "/v1/gallery/identify",
        None,
        "image/jpeg",
        &photo("obama2.jpg"),
    );
    assert_eq!(c, 200);
    assert_eq!(v["faces"][0]["identity"], "Obama", "{v}");
    assert!(v["faces"][0]["distance"].as_f64().unwrap() < 0.6);
    assert_eq!(v["faces"][0]["candidates"][0]["identity"], "Obama");
    let (c, v) = post_image(
        &addr,
        "/v1/gallery/verify?name=Obama",
        None,
        "image/jpeg",
        &photo("obama3.jpg"),
    );
    assert_eq!((c, v["same"].as_bool()), (200, Some(true)), "{v}");
    let (c, v) = post_image(
        &addr,
        "/v1/gallery/verify?name=Obama",
        None,
        "image/jpeg",
        &photo("biden.jpg"),
    );
    assert_eq!((c, v["same"].as_bool()), (200, Some(false)), "{v}");
    let (c, v) = post_image(
        &addr,
        "/v1/gallery/verify",
        None,
        "image/jpeg",
        &photo("biden.jpg"),
    );
    assert_eq!(
        (c, v["error"]["field"].as_str()),
        (422, Some("name")),
        "{v}"
    );
    // 422 several_faces with the boxes; ?face=N picks one.
    if let Some(group) = shared_media_or_ci("faces/two_people.jpg") {
        let group = std::fs::read(group).unwrap();
        let (c, v) = post_image(
            &addr,
            "/v1/gallery/people/Someone/photos",
            None,
            "image/jpeg",
            &group,
        );
        assert_eq!(
            (c, v["error"]["code"].as_str()),
            (422, Some("several_faces")),
            "{v}"
        );
        assert_eq!(v["error"]["boxes"].as_array().unwrap().len(), 2, "{v}");
        let (c, v) = post_image(
            &addr,
            "/v1/gallery/people/Someone/photos?face=5",
            None,
            "image/jpeg",
            &group,
        );
        assert_eq!(
            (c, v["error"]["code"].as_str()),
            (422, Some("no_such_face")),
            "{v}"
        );
        let (c, v) = post_image(
            &addr,
            "/v1/gallery/people/Someone/photos?face=x",
            None,
            "image/jpeg",
            &group,
        );
        assert_eq!(
            (c, v["error"]["field"].as_str()),
            (422, Some("face")),
            "{v}"
        );
        let (c, _) = post_image(
            &addr,
            "/v1/gallery/people/Someone/photos?face=1",
            None,
            "image/jpeg",
            &group,
        );
        assert_eq!(c, 201);
    }
    // Events: a bad filter and a bad limit are named.
    let (c, v) = api(&addr, "GET", "/v1/events?limit=0", None, "");
    assert_eq!((c, v["error"]["field"].as_str()), (422, Some("limit")));
    let (c, v) = api(&addr, "GET", "/v1/events/stream?type=face.nope", None, "");
    assert_eq!((c, v["error"]["field"].as_str()), (422, Some("type")));
    let (c, v) = api(&addr, "GET", "/v1/status", None, "");
    assert_eq!(c, 200);
    assert_eq!(v["gallery"]["people"], 2, "{v}");
}

/// The bytes of a GET with a token: status, head (lower case), body.
fn get_bytes(addr: &str, path: &str, token: &str) -> (u16, String, Vec<u8>) {
    let auth = format!("Authorization: Bearer {token}");
    http(addr, "GET", path, &[&auth], b"").unwrap()
}

#[test]
fn an_action_event_of_a_running_file_is_explained_over_the_api_and_other_ids_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (write, wline) = new_token("write");
    let (read, rline) = new_token("read");
    let streams = format!(
        "streams:\n  - {{id: bunny, url: {}, branches: [action]}}\n  - {{id: photos, url: {}, branches: [faces]}}\n",
        built("media/bigbuckbunny.mp4").display(),
        built("media/faces_demo.mp4").display()
    );
    let cfg = api_config(
        dir.path(),
        &format!("  tokens:\n{wline}\n{rline}\n"),
        &streams,
    );
    // 16-frame clips, as in the CLI's explain test, keep each forward pass cheap.
    let text = std::fs::read_to_string(&cfg).unwrap().replacen(
        "faces:\n  enabled: true\n",
        "  frames: 16\n  stride: 16\nfaces:\n  enabled: true\n",
        1,
    );
    std::fs::write(&cfg, text).unwrap();
    let (_child, _, addr, logs) = start_api(&cfg);

    // An action event of the file and a face event of the other, from the event list.
    let (mut action, mut face) = (Value::Null, Value::Null);
    wait_for(
        "an action event and a face event",
        Duration::from_secs(120),
        || {
            let (_, v) = api(&addr, "GET", "/v1/events?limit=1000", Some(&read), "");
            for e in v["events"].as_array().into_iter().flatten() {
                if e["type"] == "action.started" && action.is_null() {
                    action = e.clone();
                }
                if e["type"] == "face.unknown" && face.is_null() {
                    face = e.clone();
                }
            }
            !action.is_null() && !face.is_null()
        },
    );
    let id = action["id"].as_str().unwrap();
    let path = format!("/v1/events/{id}/explanation");

    // Refusals: an unknown id, a face event, a label the model does not have, a read token.
    let (c, v) = api(
        &addr,
        "POST",
        "/v1/events/no-such-event/explanation",
        Some(&write),
        "",
    );
    assert_eq!(
        (c, v["error"]["code"].as_str()),
        (404, Some("not_found")),
        "{v}"
    );
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no event `no-such-event`"),
        "{v}"
    );
    let face_path = format!("/v1/events/{}/explanation", face["id"].as_str().unwrap());
    let (c, v) = api(&addr, "POST", &face_path, Some(&write), "");
    assert_eq!(
        (c, v["error"]["code"].as_str()),
        (422, Some("not_an_action")),
        "{v}"
    );
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("face.unknown"),
        "{v}"
    );
    let (c, v) = api(
        &addr,
        "POST",
        &format!("{path}?label=juggling%20kittens"),
        Some(&write),
        "",
    );
    assert_eq!(
        (c, v["error"]["field"].as_str()),
        (422, Some("label")),
        "{v}"
    );
    let (c, v) = api(
        &addr,
        "POST",
        &format!("{path}?grid=2x99x2"),
        Some(&write),
        "",
    );
    assert_eq!(
        (c, v["error"]["field"].as_str()),
        (422, Some("grid")),
        "{v}"
    );
    assert_eq!(api(&addr, "POST", &path, Some(&read), "").0, 403);
    let (c, _) = api(&addr, "GET", &path, Some(&read), "");
    assert_eq!(c, 404, "nothing asked yet");

    // Asked (a 2x2x2 grid: 9 forward passes), then polled with the read token.
    let auth = format!("Authorization: Bearer {write}");
    let (c, head, body) =
        http(&addr, "POST", &format!("{path}?grid=2x2x2"), &[&auth], b"").unwrap();
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert!(c == 202 || c == 200, "{c} {v}");
    assert!(head.contains(&format!("location: {path}")), "{head}");
    assert_eq!(
        (v["grid"].as_str(), v["forward_passes"].as_u64()),
        (Some("2x2x2"), Some(9))
    );
    let mut done = Value::Null;
    wait_for("the explanation", Duration::from_secs(300), || {
        let (c, v) = api(&addr, "GET", &path, Some(&read), "");
        assert!(c == 200 || c == 202, "{c} {v}");
        if c == 200 {
            done = v;
        }
        c == 200
    });
    eprintln!(
        "{}",
        logs.lock()
            .unwrap()
            .iter()
            .rev()
            .find(|l| l.contains("explained in"))
            .cloned()
            .unwrap_or_default()
    );

    // The CLI's JSON for the event's own clip and label: a 2x2x2 grid of importances that are
    // not all the same.
    assert_eq!(done["event"], action["id"]);
    assert_eq!(done["stream"], "bunny");
    assert_eq!(done["clip"], action["clip"]);
    assert_eq!(
        done["grid"],
        serde_json::json!({"t": 2, "h": 2, "w": 2, "frames": 16, "side": 224})
    );
    let map = &done["maps"][0];
    assert_eq!(
        (&map["label"], &map["source"]),
        (&action["label"], &action["source"])
    );
    let cells: Vec<f64> = map["importance"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| t.as_array().unwrap())
        .flat_map(|r| r.as_array().unwrap())
        .map(|x| x.as_f64().unwrap())
        .collect();
    assert_eq!(cells.len(), 8, "{map}");
    let (lo, hi) = cells
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), &x| (a.min(x), b.max(x)));
    eprintln!("importances of {}: {cells:?}", map["label"]);
    assert!(hi - lo > 1e-4, "every cell matters the same: {cells:?}");
    assert!(
        (map["score"].as_f64().unwrap() - action["score"].as_f64().unwrap()).abs() < 0.05,
        "{map} {action}"
    );

    // The contact sheet: a PNG of two 224-pixel tiles under a 28-pixel caption.
    let (c, head, png) = get_bytes(&addr, &format!("{path}.png"), &read);
    assert_eq!(c, 200);
    assert!(head.contains("content-type: image/png"), "{head}");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    assert_eq!((be(&png[16..20]), be(&png[20..24])), (2 * 224, 224 + 28));
    // The video: an MP4 (an `ftyp` box first).
    let (c, head, mp4) = get_bytes(&addr, &format!("{path}.mp4"), &read);
    assert_eq!(c, 200, "{}", String::from_utf8_lossy(&mp4));
    assert!(head.contains("content-type: video/mp4"), "{head}");
    assert_eq!(&mp4[4..8], b"ftyp");
    assert_eq!(done["mp4"], format!("{path}.mp4"));

    // Asking again the same way answers from what was computed.
    let (c, v) = api(
        &addr,
        "POST",
        &format!("{path}?grid=2x2x2"),
        Some(&write),
        "",
    );
    assert_eq!((c, v["state"].as_str()), (200, Some("done")), "{v}");
}
