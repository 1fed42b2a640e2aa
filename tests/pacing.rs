//! `realtime: true`: a file read at its own frame rate, as a camera would deliver it.
//!
//! No wall-clock bound is asserted: a busy machine only makes a run slower. What is checked is
//! the one direction load cannot fake: a paced run never gets through media time faster than
//! real time (media seconds per wall second at most 1.1), where the same file unpaced decodes
//! several times faster than real time.

mod common;

use common::*;
use std::time::Instant;

/// Runs the 5.3 s Big Buck Bunny clip decode-only; returns (media seconds reached, wall
/// seconds the run took).
fn run_bunny(realtime: bool) -> (f64, f64) {
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "streams:\n  - {{id: bunny, url: {}, realtime: {realtime}}}\naction: {{enabled: false}}\nsinks: [{{type: stdout}}]\nmetrics: {{enabled: false}}\n{}",
        built("media/bigbuckbunny.mp4").display(),
        runtime_yaml()
    );
    let cfg = write_config(dir.path(), &yaml);
    let started = Instant::now();
    let out = run(&cfg);
    let wall = started.elapsed().as_secs_f64();
    assert_no_panic(&out);
    assert!(out.status.success(), "{}", stderr(&out));
    let ev = events(&String::from_utf8_lossy(&out.stdout));
    let end = of_type(&ev, "stream.down")
        .into_iter()
        .find(|e| e["reason"] == "end_of_file")
        .unwrap_or_else(|| panic!("no end of file: {ev:?}"));
    (end["media_time"].as_f64().unwrap(), wall)
}

#[test]
fn a_realtime_file_is_never_read_faster_than_real_time() {
    let (media, wall) = run_bunny(true);
    assert!(media > 5.0, "the whole clip was read: {media} s");
    let ratio = media / wall;
    eprintln!("paced: {media:.2} s of media in {wall:.2} s ({ratio:.2}x real time)");
    assert!(ratio <= 1.1, "{ratio:.2}x real time with realtime: true");
}
