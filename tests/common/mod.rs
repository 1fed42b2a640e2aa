//! Shared test fixtures: the built binary, the set-up's build folder, and ../shared media.
#![allow(dead_code)]

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

/// `vigil run` in the background: stdout discarded, stderr (the logs) piped for the test.
pub fn spawn_run(config: &Path) -> Child {
    vigil()
        .args(["run", "--no-progress", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
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
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .ok_or(std::io::ErrorKind::InvalidData)?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or(std::io::ErrorKind::InvalidData)?;
    Ok((code, body.to_string()))
}

/// The log lines of a child started by [`spawn_run`].
pub fn log_lines(
    child: &mut Child,
) -> std::io::Lines<std::io::BufReader<std::process::ChildStderr>> {
    std::io::BufReader::new(child.stderr.take().unwrap()).lines()
}
