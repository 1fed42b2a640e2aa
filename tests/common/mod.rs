//! Shared test fixtures: the built binary, the set-up's build folder, and ../shared media.
#![allow(dead_code)]

pub mod postgres;

use serde_json::Value;
use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A file the set-up builds. Missing means the set-up did not run: a failure, not a skip,
/// because these come from the package registries and must exist on every machine.
pub fn built(rel: &str) -> PathBuf {
    let p = repo().join("build").join(rel);
    assert!(
        p.exists(),
        "{} is missing: run `make setup` (scripts/setup.sh) first",
        p.display()
    );
    p
}

/// A file from ../shared/media, or `None` (and a note) when this checkout has no ../shared.
pub fn shared_media(rel: &str) -> Option<PathBuf> {
    let p = repo().join("../shared/media").join(rel);
    if p.exists() {
        Some(p)
    } else {
        eprintln!("skipped: {} is not here", p.display());
        None
    }
}

pub fn vigil() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vigil"));
    c.env_remove("ORT_DYLIB_PATH").env("VIGIL_LOG", "info");
    c
}

/// An `action:` section naming the built model; more `action` fields may follow it.
pub fn action_yaml() -> String {
    format!(
        "action:\n  model:\n    path: {}\n    labels: {}\n",
        built("models/i3d_kinetics400.onnx").display(),
        built("models/kinetics400_labels.txt").display()
    )
}

/// `faces:` (enabled, the built MTCNN and dlib models) and `gallery:` sections.
pub fn faces_yaml(gallery: &Path) -> String {
    format!(
        "faces:\n  enabled: true\n  detector: {{type: mtcnn, pnet: {}, rnet: {}, onet: {}}}\n  embedder: {{path: {}}}\ngallery: {{path: {}}}\n",
        built("models/mtcnn_pnet.onnx").display(),
        built("models/mtcnn_rnet.onnx").display(),
        built("models/mtcnn_onet.onnx").display(),
        built("models/dlib_resnet.onnx").display(),
        gallery.display()
    )
}

/// A `runtime:` section naming the built ONNX Runtime library.
pub fn runtime_yaml() -> String {
    format!(
        "runtime:\n  onnxruntime_library: {}\n",
        built("lib/libonnxruntime.so").display()
    )
}

/// The model, labels and runtime sections every action config needs, with absolute paths.
pub fn model_yaml() -> String {
    action_yaml() + &runtime_yaml()
}

/// Writes `yaml` as config.yaml in `dir`.
pub fn write_config(dir: &Path, yaml: &str) -> PathBuf {
    let p = dir.join("config.yaml");
    std::fs::write(&p, yaml).unwrap();
    p
}

pub fn run(config: &Path) -> Output {
    vigil()
        .args(["run", "--no-progress", "--config"])
        .arg(config)
        .output()
        .unwrap()
}

pub fn check(config: &Path) -> Output {
    vigil()
        .args(["check", "--config"])
        .arg(config)
        .output()
        .unwrap()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Parses JSON lines; every line must be a complete JSON object.
pub fn events(text: &str) -> Vec<Value> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON event: {l:?}: {e}")))
        .collect()
}

pub fn of_type<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["type"] == kind).collect()
}

/// Fails the test if the process panicked, whatever its exit code.
pub fn assert_no_panic(o: &Output) {
    let err = stderr(o);
    assert!(
        !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
        "vigil panicked:\n{err}"
    );
    assert_ne!(
        o.status.code(),
        Some(101),
        "exit code 101 is a Rust panic:\n{err}"
    );
}

/// A child process killed when the test lets go of it, also when the test fails midway: no
/// run outlives its test.
pub struct Running(pub Child);

impl std::ops::Deref for Running {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Running {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `vigil run` in the background: stdout discarded, stderr (the logs) piped for the test.
pub fn spawn_run(config: &Path) -> Running {
    Running(
        vigil()
            .args(["run", "--no-progress", "--config"])
            .arg(config)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    )
}

/// Reads the logs of a child started by [`spawn_run`] until vigil announces its metrics
/// endpoint, returns its `host:port`, and keeps draining the logs so vigil never blocks on them.
pub fn metrics_addr(child: &mut Child) -> String {
    let mut lines = log_lines(child);
    let addr = loop {
        let line = lines
            .next()
            .expect("vigil ended before announcing its metrics address")
            .unwrap();
        if let Some(rest) = line.split("metrics on http://").nth(1) {
            break rest.trim_end_matches("/metrics").to_string();
        }
    };
    std::thread::spawn(move || lines.for_each(drop));
    addr
}

/// A plain HTTP/1.1 GET on loopback; returns the status code and the body.
pub fn try_get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    let (code, _, body) = http(addr, "GET", path, &[], b"")?;
    Ok((code, String::from_utf8_lossy(&body).into_owned()))
}

/// The log lines of a child started by [`spawn_run`].
pub fn log_lines(
    child: &mut Child,
) -> std::io::Lines<std::io::BufReader<std::process::ChildStderr>> {
    std::io::BufReader::new(child.stderr.take().unwrap()).lines()
}

/// Debian's GStreamer RTSP server (scripts/rtsp_server.py) on a free loopback port, serving
/// files at mounts the way a camera serves its stream. Killed when dropped.
pub struct RtspServer {
    pub port: u16,
    args: Vec<String>,
    child: Option<Child>,
}

/// A TCP port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl RtspServer {
    /// Serves each `(name, file)` at `rtsp://127.0.0.1:PORT/name`; `user` is `name:password`
    /// to require authentication.
    pub fn start(mounts: &[(&str, &Path)], user: Option<&str>) -> RtspServer {
        let mut args = vec![repo().join("scripts/rtsp_server.py").display().to_string()];
        for (name, file) in mounts {
            args.push("--mount".into());
            args.push(format!("{name}={}", file.display()));
        }
        if let Some(u) = user {
            args.push("--user".into());
            args.push(u.into());
        }
        let mut s = RtspServer {
            port: free_port(),
            args,
            child: None,
        };
        s.restart();
        s
    }

    pub fn url(&self, mount: &str) -> String {
        format!("rtsp://127.0.0.1:{}/{mount}", self.port)
    }

    /// Starts the server (again) on its port and waits until it listens.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "the server is running already");
        for _ in 0..50 {
            let mut child = Command::new("/usr/bin/python3")
                .args(&self.args)
                .args(["--port", &self.port.to_string()])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("/usr/bin/python3 runs (python3-gi comes from scripts/setup.sh)");
            let mut line = String::new();
            std::io::BufReader::new(child.stdout.take().unwrap())
                .read_line(&mut line)
                .unwrap();
            if line.starts_with("ready") {
                self.child = Some(child);
                return;
            }
            // The port may still be held by the previous instance's sockets for a moment.
            let mut err = String::new();
            let _ = child.stderr.take().unwrap().read_to_string(&mut err);
            let _ = child.wait();
            assert!(
                err.contains("cannot listen"),
                "the RTSP server did not start: {err}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("the RTSP server cannot listen on port {}", self.port);
    }

    /// SIGKILL, as a camera losing power.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("running").id();
        assert!(Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .unwrap()
            .success());
    }

    /// SIGSTOP: the connection stays open but nothing more arrives, as a hung camera.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    pub fn thaw(&self) {
        self.signal("-CONT");
    }
}

impl Drop for RtspServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The value of one sample in Prometheus text, e.g.
/// `metric(&text, "vigil_stream_up{stream=\"cam\"}")`; 0 when absent.
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .filter(|rest| rest.starts_with(' '))
                .and_then(|rest| rest.trim().parse().ok())
        })
        .unwrap_or(0.0)
}

/// Scrapes `/metrics` of a running vigil.
pub fn scrape(addr: &str) -> String {
    let (code, body) = try_get(addr, "/metrics").expect("/metrics answers");
    assert_eq!(code, 200);
    body
}

/// Threads of a process, from /proc.
pub fn thread_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Each thread of a process: its name and nice (field 19 of its stat), from /proc.
pub fn thread_nices(pid: u32) -> Vec<(String, i64)> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("stat")).ok())
        .map(|s| {
            let (head, rest) = s.rsplit_once(')').unwrap();
            let name = head[head.find('(').unwrap() + 1..].to_string();
            let fields: Vec<&str> = rest.split_whitespace().collect();
            (name, fields[16].parse().unwrap())
        })
        .collect()
}

/// Resident memory of a process in MiB, from /proc.
pub fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Polls `cond` every 100 ms until it holds; panics with `what` after `limit`. The limit only
/// guards against a hang: what is being tested is that the condition comes true at all.
pub fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let until = std::time::Instant::now() + limit;
    while !cond() {
        assert!(
            std::time::Instant::now() < until,
            "waited {limit:?} for: {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Like [`metrics_addr`], but keeps every log line for the test to read later.
pub fn metrics_addr_keeping_logs(
    child: &mut Child,
) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    let mut lines = log_lines(child);
    let kept = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let addr = loop {
        let line = lines
            .next()
            .expect("vigil ended before announcing its metrics address")
            .unwrap();
        let found = line
            .split("metrics on http://")
            .nth(1)
            .map(|rest| rest.trim_end_matches("/metrics").to_string());
        kept.lock().unwrap().push(line);
        if let Some(a) = found {
            break a;
        }
    };
    let k = kept.clone();
    std::thread::spawn(move || {
        for l in lines.map_while(Result::ok) {
            k.lock().unwrap().push(l);
        }
    });
    (addr, kept)
}

/// Sends `sig` (`-TERM`, `-INT`) to a child.
pub fn signal(child: &Child, sig: &str) {
    assert!(Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap()
        .success());
}

/// Debian's mosquitto on a free loopback port, with persistence in `dir` (so a subscriber's
/// session and its queued messages survive a restart of the broker). Killed when dropped.
pub struct Broker {
    pub port: u16,
    conf: PathBuf,
    child: Option<Running>,
}

impl Broker {
    pub fn start(dir: &Path) -> Broker {
        Broker::start_on(dir, free_port())
    }

    pub fn start_on(dir: &Path, port: u16) -> Broker {
        let data = dir.join("mosquitto");
        std::fs::create_dir_all(&data).unwrap();
        let conf = dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {}/\n",
                data.display()
            ),
        )
        .unwrap();
        let mut b = Broker {
            port,
            conf,
            child: None,
        };
        b.restart();
        b
    }

    /// Starts the broker (again) and waits until it accepts connections.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "the broker is running already");
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&self.conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto (Debian package, installed by scripts/setup.sh)");
        self.child = Some(Running(child));
        wait_for("mosquitto to listen", Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
        });
    }

    /// A clean stop (SIGTERM: mosquitto saves its sessions), waiting until it has exited.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            signal(&c, "-TERM");
            let _ = c.wait();
        }
    }
}

/// `mosquitto_sub` with a persistent QoS 1 session, printing `topic payload` lines to a file.
pub fn subscribe(port: u16, topic: &str, client_id: &str, out: &Path) -> Running {
    let file = std::fs::File::create(out).unwrap();
    Running(
        Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(["-t", topic, "-q", "1", "-c", "-i", client_id, "-v"])
            .stdout(file)
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto_sub (Debian package mosquitto-clients)"),
    )
}

/// One HTTP/1.1 request on loopback (`Connection: close`); returns the status, the head (lower
/// case) and the body. `headers` are `Name: value` lines.
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[&str],
    body: &[u8],
) -> std::io::Result<(u16, String, Vec<u8>)> {
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    s.write_all(body)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or(std::io::ErrorKind::InvalidData)?;
    let head = String::from_utf8_lossy(&raw[..split]).to_lowercase();
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or(std::io::ErrorKind::InvalidData)?;
    let mut body = raw[split + 4..].to_vec();
    if head.contains("transfer-encoding: chunked") {
        body = dechunk(&body);
    }
    Ok((code, head, body))
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(i) = b.windows(2).position(|w| w == b"\r\n") {
        let len = usize::from_str_radix(String::from_utf8_lossy(&b[..i]).trim(), 16).unwrap_or(0);
        if len == 0 || b.len() < i + 2 + len {
            break;
        }
        out.extend_from_slice(&b[i + 2..i + 2 + len]);
        b = &b[(i + 4 + len).min(b.len())..];
    }
    out
}

/// A JSON call to the API: status and parsed body (`Null` when the body is not JSON).
pub fn api(addr: &str, method: &str, path: &str, token: Option<&str>, body: &str) -> (u16, Value) {
    let auth = token.map(|t| format!("Authorization: Bearer {t}"));
    let mut headers = vec!["Content-Type: application/json"];
    if let Some(a) = &auth {
        headers.push(a);
    }
    let (code, _, body) = http(addr, method, path, &headers, body.as_bytes()).unwrap();
    (code, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

/// Waits for the `API on http://ADDR/v1` log line among `logs`; returns `ADDR`.
pub fn api_addr(logs: &std::sync::Arc<std::sync::Mutex<Vec<String>>>) -> String {
    let mut addr = None;
    wait_for("the API to listen", Duration::from_secs(120), || {
        addr = logs.lock().unwrap().iter().find_map(|l| {
            l.split("API on http://")
                .nth(1)
                .map(|r| r.trim_end_matches("/v1").to_string())
        });
        addr.is_some()
    });
    addr.unwrap()
}

/// A Server-Sent Events subscription: every `data:` event received, with its id, kept for the
/// test to read.
/// One received event: its id, its `event:` type (none for a plain event) and its data.
pub type SseRecord = (Option<String>, Option<String>, String);

pub struct Sse {
    pub events: std::sync::Arc<std::sync::Mutex<Vec<SseRecord>>>,
}

impl Sse {
    /// Subscribes to `path` (with `Last-Event-ID: last` when given).
    pub fn open(addr: &str, path: &str, token: Option<&str>, last: Option<&str>) -> Sse {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        let mut req =
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n");
        if let Some(t) = token {
            req += &format!("Authorization: Bearer {t}\r\n");
        }
        if let Some(l) = last {
            req += &format!("Last-Event-ID: {l}\r\n");
        }
        req += "\r\n";
        s.write_all(req.as_bytes()).unwrap();
        let events = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let out = events.clone();
        std::thread::spawn(move || {
            let r = std::io::BufReader::new(s);
            let (mut id, mut kind, mut data) = (None, None, String::new());
            for line in r.lines().map_while(Result::ok) {
                if let Some(v) = line.strip_prefix("id:") {
                    id = Some(v.trim().to_string());
                } else if let Some(v) = line.strip_prefix("event:") {
                    kind = Some(v.trim().to_string());
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim_start());
                } else if line.is_empty() && !data.is_empty() {
                    out.lock()
                        .unwrap()
                        .push((id.take(), kind.take(), std::mem::take(&mut data)));
                }
            }
        });
        Sse { events }
    }

    /// The JSON of every plain (`message`) event so far.
    pub fn json(&self) -> Vec<Value> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, k, _)| k.is_none())
            .filter_map(|(_, _, d)| serde_json::from_str(d).ok())
            .collect()
    }

    /// Waits until an event satisfies `pred`; returns it.
    pub fn wait(&self, what: &str, limit: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        let mut found = None;
        wait_for(what, limit, || {
            found = self.json().into_iter().find(|e| pred(e));
            found.is_some()
        });
        found.unwrap()
    }
}

/// Open file descriptors of a process, from /proc.
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// A file from ../shared/media: `None` (with a note) when this checkout has no ../shared, and a
/// failure under CI (`CI` set), where it is always there.
pub fn shared_media_or_ci(rel: &str) -> Option<PathBuf> {
    let p = shared_media(rel);
    if p.is_none() && std::env::var_os("CI").is_some() {
        panic!("../shared/media/{rel} is missing under CI, where ../shared is always present");
    }
    p
}

/// Makes `out` with ffmpeg from a lavfi source (`color=gray:s=96x96`, `testsrc=...`), `frames`
/// frames of it.
pub fn lavfi(source: &str, frames: u32, out: &Path) {
    let ok = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-f", "lavfi", "-i", source])
        .args(["-frames:v", &frames.to_string(), "-pix_fmt", "yuv420p"])
        .arg(out)
        .status()
        .expect("ffmpeg (installed by the set-up)")
        .success();
    assert!(ok, "ffmpeg could not make {}", out.display());
}

/// Starts `vigil run` on a config with an `api` section; returns the child, the metrics and
/// API addresses, and its logs.
pub fn start_api(
    cfg: &Path,
) -> (
    Running,
    String,
    String,
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) {
    let mut child = spawn_run(cfg);
    let (metrics, logs) = metrics_addr_keeping_logs(&mut child);
    let api = api_addr(&logs);
    (child, metrics, api, logs)
}

/// `vigil token new` for a holder named after its scope: (the token, its config line).
pub fn new_token(scope: &str) -> (String, String) {
    let out = vigil()
        .args(["token", "new", "--name", scope, "--scope", scope])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    let token = lines.next().unwrap().to_string();
    let line = lines.next().unwrap().to_string();
    assert!(line.contains(&format!("scope: {scope}")) && !line.contains(&token));
    (token, line)
}

/// `vigil gallery VERB --config CONFIG --json ARGS...` (no panic allowed).
pub fn gallery(config: &Path, args: &[&str]) -> Output {
    let out = vigil()
        .arg("gallery")
        .arg(args[0])
        .arg("--config")
        .arg(config)
        .arg("--json")
        .args(&args[1..])
        .output()
        .unwrap();
    assert_no_panic(&out);
    out
}

/// Enrols obama.jpg as `obama` through `config` unless its gallery file already exists.
pub fn enrol_obama_once(config: &Path, gallery_file: &Path) {
    if !gallery_file.exists() {
        let obama = built("media/faces/obama.jpg");
        ok_json(&gallery(
            config,
            &["enroll", "--name", "obama", obama.to_str().unwrap()],
        ));
    }
}

/// The JSON printed by a command that succeeded.
pub fn ok_json(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status.code(),
        stderr(out)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}
