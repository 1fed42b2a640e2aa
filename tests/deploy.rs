//! deploy/ checked without a Docker engine: Prometheus' own checker on the scrape config and
//! alert rules, YAML and JSON that parse, configs vigil accepts, probes on the real endpoints,
//! and every metric the dashboard and the alerts name is one vigil exports.

mod common;

use common::*;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

fn deploy(rel: &str) -> PathBuf {
    repo().join("deploy").join(rel)
}

fn yaml_docs(rel: &str) -> Vec<serde_yaml::Value> {
    let text = std::fs::read_to_string(deploy(rel)).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| {
            serde::Deserialize::deserialize(d)
                .unwrap_or_else(|e| panic!("deploy/{rel} does not parse: {e}"))
        })
        .collect()
}

#[test]
fn promtool_accepts_the_scrape_config_and_the_alert_rules() {
    for args in [
        ["check", "config", "prometheus/prometheus.yml"],
        ["check", "rules", "prometheus/alerts.yml"],
    ] {
        let out = Command::new("promtool")
            .args(args)
            .current_dir(repo().join("deploy"))
            .output()
            .expect("promtool (Debian package prometheus, installed by the set-up)");
        assert!(
            out.status.success(),
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn compose_and_kubernetes_files_parse_and_wire_the_real_endpoints() {
    let compose = &yaml_docs("docker-compose.yml")[0];
    for service in ["vigil", "prometheus", "grafana", "mosquitto"] {
        assert!(
            compose["services"][service].is_mapping(),
            "compose has no {service}"
        );
    }
    assert_eq!(
        compose["services"]["vigil"]["build"]["dockerfile"].as_str(),
        Some("deploy/Dockerfile")
    );
    let mut kinds = BTreeSet::new();
    let mut probes = Vec::new();
    let mut configs = Vec::new();
    for file in [
        "k8s/configmap.yaml",
        "k8s/statefulset.yaml",
        "k8s/service.yaml",
    ] {
        for doc in yaml_docs(file) {
            let kind = doc["kind"].as_str().unwrap().to_string();
            if kind == "StatefulSet" {
                let c = &doc["spec"]["template"]["spec"]["containers"][0];
                for p in ["livenessProbe", "readinessProbe"] {
                    probes.push(c[p]["httpGet"]["path"].as_str().unwrap().to_string());
                }
            }
            if kind == "Service" {
                let a = &doc["metadata"]["annotations"];
                assert_eq!(a["prometheus.io/scrape"].as_str(), Some("true"));
                assert_eq!(a["prometheus.io/port"].as_str(), Some("9464"));
            }
            if kind == "ConfigMap" {
                configs.push(doc["data"]["config.yaml"].as_str().unwrap().to_string());
            }
            kinds.insert(kind);
        }
    }
    assert_eq!(
        kinds.into_iter().collect::<Vec<_>>(),
        ["ConfigMap", "Service", "StatefulSet"]
    );
    assert_eq!(probes, ["/healthz", "/readyz"]);
    // The configs shipped here are ones vigil parses (their model paths exist in the image).
    configs.push(std::fs::read_to_string(deploy("config.yaml")).unwrap());
    for text in configs {
        if let Err(p) = vigil::config::parse(&deploy("config.yaml"), &text) {
            panic!("a deploy config does not parse:\n{p}");
        }
    }
    // And vigil serves the probed paths.
    let src = std::fs::read_to_string(repo().join("src/metrics/http.rs")).unwrap();
    for p in ["/healthz", "/readyz", "/metrics"] {
        assert!(src.contains(&format!("\"{p}\"")), "vigil serves no {p}");
    }
}

/// Metric families vigil exports, with a series for every configured label set.
fn exported() -> BTreeSet<String> {
    let m = vigil::metrics::Metrics::new();
    use vigil::config::Branch;
    m.init_stream("cam", &[Branch::Action, Branch::Faces]);
    m.init_shared(
        &[Branch::Action, Branch::Faces],
        &["i3d_kinetics400"],
        vigil::event::EventType::ALL,
    );
    m.init_sinks(&["stdout", "mqtt", "webhook"]);
    let mut names = BTreeSet::new();
    for line in m.render().lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split_whitespace();
            let (name, kind) = (it.next().unwrap(), it.next().unwrap());
            names.insert(name.to_string());
            if kind == "histogram" {
                for s in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{s}"));
                }
            }
        }
    }
    names
}

fn vigil_names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let b = expr.as_bytes();
    let mut i = 0;
    while let Some(at) = expr[i..].find("vigil_") {
        let start = i + at;
        let mut end = start;
        while end < b.len() && (b[end].is_ascii_alphanumeric() || b[end] == b'_') {
            end += 1;
        }
        out.push(expr[start..end].to_string());
        i = end;
    }
    out
}

#[test]
fn every_metric_the_dashboard_and_alerts_use_is_exported() {
    let have = exported();
    let dash: Value = serde_json::from_str(
        &std::fs::read_to_string(deploy("grafana/dashboards/vigil.json")).unwrap(),
    )
    .expect("the dashboard is JSON");
    let mut exprs: Vec<String> = dash["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap().iter())
        .map(|t| t["expr"].as_str().unwrap().to_string())
        .collect();
    assert!(exprs.len() >= 10, "{exprs:?}");
    for group in yaml_docs("prometheus/alerts.yml")[0]["groups"]
        .as_sequence()
        .unwrap()
    {
        for rule in group["rules"].as_sequence().unwrap() {
            exprs.push(rule["expr"].as_str().unwrap().to_string());
        }
    }
    let mut used = BTreeSet::new();
    for e in &exprs {
        for name in vigil_names(e) {
            assert!(
                have.contains(&name),
                "{name} (in {e:?}) is not exported:\n{have:#?}"
            );
            used.insert(name);
        }
    }
    // The important families are on the dashboard at all.
    for family in [
        "vigil_stream_up",
        "vigil_stream_state",
        "vigil_frames_decoded_total",
        "vigil_frames_dropped_total",
        "vigil_capture_latency_seconds_bucket",
        "vigil_spool_depth_events",
    ] {
        assert!(
            used.contains(family),
            "the dashboard does not show {family}"
        );
    }
}
