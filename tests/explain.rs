//! `vigil explain`: occlusion maps on real clips are faithful (hiding the most important cells
//! lowers the label's probability more than hiding random ones, averaged over clips), and two
//! labels' maps on one clip differ. A coarse grid (2x3x3: 18 forward passes, plus 4 per label
//! for the deletion check) and 16-frame clips keep the forward passes few.

mod common;

use common::*;
use serde_json::Value;
use std::path::Path;

fn explain(video: &Path, at: f64, labels: &[&str], out: &Path) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "streams:\n  - id: s\n    url: {}\n{}  frames: 16\n  stride: 16\nfaces: {{enabled: false}}\nsinks: [{{type: stdout}}]\n{}",
        video.display(),
        action_yaml(),
        runtime_yaml()
    );
    let cfg = write_config(dir.path(), &yaml);
    let mut c = vigil();
    c.args([
        "explain",
        "--json",
        "--deletion",
        "--grid",
        "2x3x3",
        "--config",
    ])
    .arg(&cfg)
    .arg("--stream")
    .arg(video)
    .args(["--at", &at.to_string(), "--out"])
    .arg(out);
    for l in labels {
        c.args(["--label", l]);
    }
    let o = c.output().unwrap();
    assert_no_panic(&o);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&std::fs::read_to_string(out.join("explain.json")).unwrap())
            .unwrap(),
        v
    );
    let png = std::fs::read(out.join("explain.png")).unwrap();
    assert_eq!(&png[1..4], b"PNG");
    v
}

fn cells(map: &Value) -> Vec<f64> {
    map["importance"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| t.as_array().unwrap().iter())
        .flat_map(|r| r.as_array().unwrap().iter())
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn correlation(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len() as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let cov: f64 = a.iter().zip(b).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let va: f64 = a.iter().map(|x| (x - ma).powi(2)).sum();
    let vb: f64 = b.iter().map(|y| (y - mb).powi(2)).sum();
    cov / (va * vb).sqrt().max(1e-12)
}

#[test]
fn masking_the_important_cells_hurts_more_than_random_ones_and_labels_differ() {
    let Some(arm) = shared_media("action/arm_wrestling.mp4") else {
        return;
    };
    let bunny = built("media/bigbuckbunny.mp4");
    let out = tempfile::tempdir().unwrap();
    let a = explain(&arm, 1.0, &["arm wrestling"], &out.path().join("arm"));
    let b = explain(
        &bunny,
        0.3,
        &["feeding birds", "petting cat"],
        &out.path().join("bunny"),
    );
    let maps: Vec<&Value> = a["maps"]
        .as_array()
        .unwrap()
        .iter()
        .chain(b["maps"].as_array().unwrap())
        .collect();
    assert_eq!(maps[0]["source"], "kinetics400");
    assert_eq!(cells(maps[0]).len(), 18);

    // Deletion: averaged over the real clips' top labels (arm wrestling, feeding birds).
    let (mut top, mut random) = (0.0, 0.0);
    for m in [maps[0], maps[1]] {
        let d = &m["deletion"];
        eprintln!(
            "{}: p={:.4}, top 20% hidden {:.4}, random 20% hidden {:.4} (draws {})",
            m["label"], m["score"], d["top"], d["random_mean"], d["random"]
        );
        top += d["top"].as_f64().unwrap();
        random += d["random_mean"].as_f64().unwrap();
    }
    assert!(
        top / 2.0 < random / 2.0,
        "hiding the most important cells left p={} on average, random cells {}",
        top / 2.0,
        random / 2.0
    );

    // Two labels on one clip: both maps say something, and not the same thing.
    let (fb, pc) = (cells(maps[1]), cells(maps[2]));
    let r = correlation(&fb, &pc);
    eprintln!(
        "feeding birds vs petting cat on one clip: correlation {r:.3}, p {} and {}",
        maps[1]["score"], maps[2]["score"]
    );
    assert!(fb.iter().any(|x| x.abs() > 1e-4) && pc.iter().any(|x| x.abs() > 1e-4));
    assert!(r < 0.9, "the two labels' maps correlate at {r}");
}
