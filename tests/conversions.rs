//! Each converted face model against its original, on real photos from the registry: the dlib
//! embedder against dlib itself (PyPI `dlib-bin`) on identical chips, and the three MTCNN
//! networks against a numpy forward pass of facenet-pytorch's layers on the same weights. The
//! I3D check needs JAX and is opt-in (`make parity`).

mod common;

use common::*;
use std::path::PathBuf;
use std::process::Command;

fn cache() -> PathBuf {
    std::env::var_os("VIGIL_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/vigil"))
}

fn check_python() -> PathBuf {
    let p = cache().join("check-venv/bin/python");
    assert!(
        p.exists(),
        "{} is missing: run `make setup` (scripts/setup.sh) first",
        p.display()
    );
    p
}

/// The number after `marker` on the line that has it.
fn number_after(text: &str, marker: &str) -> f64 {
    let line = text
        .lines()
        .find(|l| l.contains(marker))
        .unwrap_or_else(|| panic!("no {marker:?} in\n{text}"));
    line.split(marker)
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn the_onnx_face_embedder_matches_dlib_on_identical_chips() {
    let photos: Vec<PathBuf> = ["obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg"]
        .iter()
        .map(|p| built(&format!("media/faces/{p}")))
        .collect();
    let out = Command::new(check_python())
        .arg(repo().join("models/check_dlib_resnet.py"))
        .arg("--cache")
        .arg(cache().join("downloads"))
        .arg("--out")
        .arg(repo().join("build"))
        .arg("--images")
        .args(&photos)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    let diff = number_after(&text, "OK: max difference");
    assert!(diff < 1e-4, "largest descriptor difference {diff}\n{text}");
    assert_eq!(
        number_after(&text, "errors at threshold 0.6:"),
        0.0,
        "{text}"
    );
}

#[test]
fn the_onnx_mtcnn_networks_match_facenet_layers_and_find_the_face() {
    let pt = cache()
        .join("downloads/extracted/facenet_pytorch-2.6.0-py3-none-any.whl/facenet_pytorch/data");
    let out = Command::new(check_python())
        .arg(repo().join("models/check_mtcnn.py"))
        .arg("--parity")
        .arg("--pt-dir")
        .arg(&pt)
        .arg("--models")
        .arg(repo().join("build/models"))
        .arg(built("media/faces/obama.jpg"))
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    let worst = number_after(&text, "parity: worst max |diff|");
    assert!(worst < 1e-4, "{text}");
    // The reference cascade over the ONNX networks finds Obama's face with p > 0.99.
    let face = text
        .lines()
        .find(|l| l.trim_start().starts_with("box (") && !l.contains("below 0.95"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(number_after(face, "p=") > 0.99, "{face}");
}
