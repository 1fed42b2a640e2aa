//! A real Prometheus (Debian's package) scrapes a running vigil: the target is up and a query
//! for decoded frames returns a positive value.

mod common;

use common::*;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn http_get(addr: &str, path: &str) -> Option<String> {
    try_get(addr, path).ok().map(|(_, body)| body)
}

#[test]
fn prometheus_scrapes_vigil_and_sees_decoded_frames() {
    let dir = tempfile::tempdir().unwrap();
    // A longer input (the demo film four times over, copied without re-encoding) keeps vigil
    // running while Prometheus starts; the test stops it when done.
    let looped = dir.path().join("looped.mp4");
    let st = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-stream_loop", "3", "-i"])
        .arg(built("media/bigbuckbunny.mp4"))
        .args(["-c", "copy"])
        .arg(&looped)
        .status()
        .unwrap();
    assert!(st.success());
    let yaml = format!(
        "streams:\n  - id: bunny\n    url: {}\n{}metrics:\n  listen: 127.0.0.1:0\n",
        looped.display(),
        model_yaml()
    );
    let cfg = write_config(dir.path(), &yaml);
    let mut child = spawn_run(&cfg);
    let target = metrics_addr(&mut child);
    let _vigil = child;

    let prom_addr = format!("127.0.0.1:{}", free_port());
    let prom_cfg = dir.path().join("prometheus.yml");
    std::fs::write(&prom_cfg, format!("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: vigil\n    static_configs:\n      - targets: ['{target}']\n")).unwrap();
    let prom = Command::new("prometheus")
        .arg(format!("--config.file={}", prom_cfg.display()))
        .arg(format!("--web.listen-address={prom_addr}"))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("tsdb").display()
        ))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus (Debian package, installed by the set-up)");
    let _prom = Running(prom);

    let deadline = Instant::now() + Duration::from_secs(60);
    let query = "/api/v1/query?query=sum(vigil_frames_decoded_total)";
    let value = loop {
        assert!(
            Instant::now() < deadline,
            "Prometheus never reported decoded frames"
        );
        std::thread::sleep(Duration::from_millis(500));
        let Some(body) = http_get(&prom_addr, query) else {
            continue;
        };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&body) else {
            continue;
        };
        if let Some(x) = v["data"]["result"][0]["value"][1]
            .as_str()
            .and_then(|x| x.parse::<f64>().ok())
        {
            break x;
        }
    };
    assert!(value > 0.0, "decoded frames: {value}");
    let up = http_get(&prom_addr, "/api/v1/query?query=up%7Bjob%3D%22vigil%22%7D").unwrap();
    let v: serde_json::Value = serde_json::from_str(&up).unwrap();
    assert_eq!(v["data"]["result"][0]["value"][1], "1", "{up}");
}
