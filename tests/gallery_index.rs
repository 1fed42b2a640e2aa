//! `vigil gallery index`: builds the gallery's HNSW index ahead of a run and keeps it beside the
//! gallery; run again it loads it; after an enrolment made without it, it catches it up in
//! place instead of building it again. Exact search has nothing to build.

mod common;

use common::*;

fn config(dir: &std::path::Path, kind: &str) -> std::path::PathBuf {
    let gallery = dir.join("gallery.json");
    let faces = faces_yaml(&gallery).replace(
        &format!("gallery: {{path: {}}}", gallery.display()),
        &format!(
            "gallery:\n  path: {}\n  index: {{kind: {kind}}}",
            gallery.display()
        ),
    );
    write_config(dir, &format!("{faces}{}", runtime_yaml()))
}

fn enrol(cfg: &std::path::Path, name: &str, photo: &str) {
    let photo = built(&format!("media/faces/{photo}"));
    ok_json(&gallery(
        cfg,
        &["enroll", "--name", name, photo.to_str().unwrap()],
    ));
}

#[test]
fn the_index_is_built_ahead_of_a_run_then_loaded_then_caught_up_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "hnsw");
    enrol(&cfg, "Barack Obama", "obama.jpg");
    enrol(&cfg, "Joe Biden", "biden.jpg");

    let v = ok_json(&gallery(&cfg, &["index"]));
    assert_eq!(v["kind"], "hnsw", "{v}");
    assert_eq!(v["origin"], "built", "{v}");
    assert_eq!(v["rows"], 2, "{v}");
    let written = std::path::PathBuf::from(v["dir"].as_str().unwrap());
    assert_eq!(written, dir.path().join("gallery.json.index"));
    assert!(written.join("meta.json").is_file());

    let v = ok_json(&gallery(&cfg, &["index"]));
    assert_eq!(v["origin"], "loaded", "{v}");

    // Enrolled without the index: the next `index` (or `run`) adds it in place.
    enrol(&cfg, "Barack Obama", "obama2.jpg");
    let v = ok_json(&gallery(&cfg, &["index"]));
    assert_eq!(v["origin"], "caught_up", "{v}");
    assert_eq!(
        (v["rows"].as_u64(), v["added"].as_u64()),
        (Some(3), Some(1)),
        "{v}"
    );
    let v = ok_json(&gallery(&cfg, &["index"]));
    assert_eq!(v["origin"], "loaded", "{v}");

    let found = ok_json(&gallery(
        &cfg,
        &[
            "identify",
            built("media/faces/obama3.jpg").to_str().unwrap(),
        ],
    ));
    assert!(found.to_string().contains("Barack Obama"), "{found}");

    // The text form says what it did and where.
    let out = vigil()
        .args(["gallery", "index", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        text.contains("hnsw index over 3 embeddings loaded"),
        "{text}"
    );
    assert!(
        text.contains(&format!("written to {}", written.display())),
        "{text}"
    );
}

#[test]
fn exact_search_has_no_index_to_build() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "auto");
    enrol(&cfg, "Joe Biden", "biden.jpg");
    let v = ok_json(&gallery(&cfg, &["index"]));
    assert_eq!(
        (v["kind"].as_str(), v["rows"].as_u64()),
        (Some("exact"), Some(1)),
        "{v}"
    );
    assert!(v["dir"].is_null(), "{v}");
    assert!(!dir.path().join("gallery.json.index").exists());
}
