//! The progress bar: drawn on a terminal, absent when stderr is a pipe or a file.

mod common;

use common::*;
use std::process::Command;

fn config(dir: &std::path::Path) -> std::path::PathBuf {
    let yaml = format!(
        "streams:\n  - id: bunny\n    url: {}\n{}  frames: 16\n  stride: 32\nmetrics: {{enabled: false}}\n{}",
        built("media/bigbuckbunny.mp4").display(),
        action_yaml(),
        runtime_yaml()
    );
    write_config(dir, &yaml)
}

#[test]
fn a_terminal_gets_a_progress_bar_and_a_pipe_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());

    let piped = vigil()
        .args(["run", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(piped.status.success(), "{}", stderr(&piped));
    assert!(
        !stderr(&piped).contains("/132 frames"),
        "no bar on a pipe:\n{}",
        stderr(&piped)
    );

    // util-linux `script` runs vigil on a pseudo-terminal and copies what it drew to a file.
    let typescript = dir.path().join("typescript");
    let cmd = format!(
        "{} run --config {} > /dev/null",
        env!("CARGO_BIN_EXE_vigil"),
        cfg.display()
    );
    let st = Command::new("script")
        .args(["-qec", &cmd])
        .arg(&typescript)
        .env("TERM", "xterm")
        .env_remove("ORT_DYLIB_PATH")
        .status()
        .unwrap();
    assert!(st.success());
    let drawn = String::from_utf8_lossy(&std::fs::read(&typescript).unwrap()).to_string();
    assert!(
        drawn.contains("bunny [") && drawn.contains("/132 frames"),
        "a bar on a terminal:\n{drawn}"
    );
}
