//! Custom actions (`vigil actions`, docs/actions.md): taught from real clips, reported at run
//! time beside the model's own labels, and their file's failure modes.
//!
//! Real media: the one arm-wrestling recording in ../shared/media (skipped when absent) is cut
//! into two parts that do not overlap: one to teach from, the other to find the action in.
//! They are two segments of one recording, not two recordings: no second arm-wrestling video
//! is available. Other activities: the Hamilton clip (a man speaking into a microphone on a
//! stage, ../shared), Big Buck Bunny and the photo slideshow (the setup's registry media).
//! Clips are 16 frames, stride 16, to keep the forward passes few on a CPU.

mod common;

use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};

fn config(dir: &Path, stream: &Path, extra: &str) -> PathBuf {
    let yaml = format!(
        "streams:\n  - id: s\n    url: {}\n{}  frames: 16\n  stride: 16\n{extra}faces: {{enabled: false}}\nsinks: [{{type: stdout}}]\n{}",
        stream.display(),
        action_yaml(),
        runtime_yaml()
    );
    write_config(dir, &yaml)
}

/// Cuts `[from, from + len)` seconds of `src` into `dst` (re-encoded, no audio).
fn cut(src: &Path, from: f64, len: f64, dst: &Path) -> PathBuf {
    let ok = std::process::Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-y",
            "-ss",
            &from.to_string(),
            "-t",
            &len.to_string(),
            "-i",
        ])
        .arg(src)
        .args(["-an"])
        .arg(dst)
        .status()
        .unwrap()
        .success();
    assert!(ok, "ffmpeg could not cut {}", src.display());
    dst.to_path_buf()
}

fn teach(cfg: &Path, name: &str, clips: &[&Path], negatives: &[&Path]) -> Value {
    let mut c = vigil();
    c.args(["actions", "teach", "--json", "--name", name, "--config"])
        .arg(cfg);
    for p in clips {
        c.arg(p);
    }
    for n in negatives {
        c.arg("--negative").arg(n);
    }
    let out = c.output().unwrap();
    assert!(out.status.success(), "teach failed: {}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn action_events(cfg: &Path) -> Vec<Value> {
    let out = run(cfg);
    assert_no_panic(&out);
    assert!(out.status.success(), "{}", stderr(&out));
    events(&String::from_utf8_lossy(&out.stdout))
        .into_iter()
        .filter(|e| e["type"] == "action.started")
        .collect()
}

fn started(evs: &[Value], label: &str, source: &str) -> usize {
    evs.iter()
        .filter(|e| e["label"] == label && e["source"] == source)
        .count()
}

#[test]
fn one_shot_action_is_found_in_another_segment_and_not_in_other_activities() {
    let (Some(arm), Some(ham)) = (
        shared_media("action/arm_wrestling.mp4"),
        shared_media("faces/short_hamilton_clip.mp4"),
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let teach_from = cut(&arm, 0.0, 2.6, &dir.path().join("arm_a.mp4"));
    let other_part = cut(&arm, 3.0, 6.0, &dir.path().join("arm_b.mp4"));
    let (bunny, photos) = (
        built("media/bigbuckbunny.mp4"),
        built("media/faces_demo.mp4"),
    );

    // One example clip; the negatives only set the threshold.
    let cfg = config(dir.path(), &teach_from, "");
    let t = teach(&cfg, "arm contest", &[&teach_from], &[&bunny, &photos]);
    eprintln!("taught: {t}");
    assert_eq!(t["method"], "leave_one_out");
    let thr = t["threshold"].as_f64().unwrap();
    assert!(t["file"].as_str().unwrap().ends_with("config.actions.json"));

    // The other part of the recording: reported as the custom action (and, by default, the
    // model's own label too, each with its source).
    let cfg = config(dir.path(), &other_part, "");
    let evs = action_events(&cfg);
    eprintln!("other part: {evs:?}");
    assert!(started(&evs, "arm contest", "custom") >= 1, "{evs:?}");
    assert!(
        started(&evs, "arm wrestling", "kinetics400") >= 1,
        "{evs:?}"
    );

    // Custom-only reporting keeps the custom action and drops the model's labels.
    let cfg = config(dir.path(), &other_part, "  custom: {only: true}\n");
    let evs = action_events(&cfg);
    assert!(started(&evs, "arm contest", "custom") >= 1, "{evs:?}");
    assert!(evs.iter().all(|e| e["source"] == "custom"), "{evs:?}");

    // Another activity, not among the negatives: not reported.
    let cfg = config(dir.path(), &ham, "");
    let evs = action_events(&cfg);
    eprintln!("hamilton: {evs:?} (threshold {thr})");
    assert_eq!(started(&evs, "arm contest", "custom"), 0, "{evs:?}");

    // list and remove.
    let out = vigil()
        .args(["actions", "list", "--json", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["actions"][0]["name"], "arm contest");
    let out = vigil()
        .args(["actions", "remove", "--name", "arm contest", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let out = vigil()
        .args(["actions", "remove", "--name", "arm contest", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("no custom action \"arm contest\""));
}

#[test]
fn few_shot_leave_one_out_accuracy_on_an_action_kinetics_does_not_name() {
    // "Speaking into a hand-held microphone on a stage": Kinetics-400 has no such label (its
    // nearest, "singing", reached 0.5 on one of the clip's fifteen 16-frame windows).
    let (Some(arm), Some(ham)) = (
        shared_media("action/arm_wrestling.mp4"),
        shared_media("faces/short_hamilton_clip.mp4"),
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let examples: Vec<PathBuf> = (0..3)
        .map(|i| cut(&ham, i as f64 * 3.3, 3.3, &d.join(format!("mic{i}.mp4"))))
        .collect();
    let negatives = [
        cut(&arm, 0.0, 4.0, &d.join("arm_a.mp4")),
        cut(&arm, 5.0, 4.0, &d.join("arm_b.mp4")),
        built("media/bigbuckbunny.mp4"),
        built("media/faces_demo.mp4"),
    ];
    let cfg = config(d, &examples[0], "");
    let ex: Vec<&Path> = examples.iter().map(PathBuf::as_path).collect();
    let neg: Vec<&Path> = negatives.iter().map(PathBuf::as_path).collect();
    let t = teach(&cfg, "mic on stage", &ex, &neg);
    let acc = t["loo_accuracy"]
        .as_f64()
        .expect("three examples and negatives: measured");
    let (p, n) = (
        t["positive_scores"].as_array().unwrap().len() as f64,
        t["negative_scores"].as_array().unwrap().len() as f64,
    );
    eprintln!(
        "leave-one-out accuracy {acc:.3} over {p} example and {n} negative clips; threshold {}",
        t["threshold"]
    );
    // Each example and each negative file is held out whole, so a held-out negative is a kind
    // of scene the fit never saw. Measured: 0.714 (35 of 49 clips); the clips missed are the
    // photo slideshow's when it is held out (stills of faces sit at cosine 0.87-0.90 to the
    // prototype). The bar: better than always answering the larger class.
    let baseline = p.max(n) / (p + n);
    assert!(
        acc > baseline,
        "leave-one-out accuracy {acc} is no better than {baseline}: {t}"
    );
    // With every source seen, the fitted threshold separates the held-out example clips from
    // most negative clips.
    assert_eq!(t["positives_above"].as_f64().unwrap(), p, "{t}");
}

#[test]
fn a_damaged_custom_actions_file_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &built("media/bigbuckbunny.mp4"), "");
    let file = dir.path().join("config.actions.json");
    std::fs::write(&file, "{\"version\": 1, \"model\": \"i3d_kin").unwrap();
    for args in [&["actions", "list"][..], &["check"][..]] {
        let out = vigil()
            .args(args)
            .arg("--config")
            .arg(&cfg)
            .output()
            .unwrap();
        assert_no_panic(&out);
        assert!(!out.status.success());
        let err = stderr(&out);
        assert!(
            err.contains(&file.display().to_string()) && err.contains("damaged"),
            "{args:?}: {err}"
        );
    }
    // The file is left as it was.
    assert!(std::fs::read_to_string(&file).unwrap().ends_with("i3d_kin"));
}

#[test]
fn a_model_without_the_features_output_is_refused_when_custom_actions_exist() {
    // Stands for an I3D converted before the `features` output existed: the configured
    // features output is one the model does not have.
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &built("media/bigbuckbunny.mp4"), "");
    let yaml = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("    labels:", "    features: pooled\n    labels:");
    std::fs::write(&cfg, yaml).unwrap();
    let proto: Vec<f32> = (0..1024).map(|i| if i == 0 { 1.0 } else { 0.0 }).collect();
    let file = serde_json::json!({"version": 1, "model": "i3d_kinetics400", "dim": 1024, "actions": [{
        "name": "x", "prototype": proto, "threshold": 0.5, "examples": ["a.mp4"], "negatives": [],
        "calibration": {"method": "no_negatives", "positive_scores": [0.55], "negative_scores": [],
            "positives_above": 1, "negatives_below": 0, "loo_accuracy": null}}]});
    std::fs::write(dir.path().join("config.actions.json"), file.to_string()).unwrap();
    let out = check(&cfg);
    assert_no_panic(&out);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("i3d_kinetics400.onnx")
            && err.contains("no output `pooled`")
            && err.contains("action.model.features"),
        "{err}"
    );
    // Without custom actions the same model and config are fine.
    std::fs::remove_file(dir.path().join("config.actions.json")).unwrap();
    let out = check(&cfg);
    assert!(out.status.success(), "{}", stderr(&out));
}
