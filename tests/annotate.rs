//! `vigil run --annotate DIR`: each file stream comes back as an MP4 of the same length with
//! its face boxes, names and action label drawn on.

mod common;

use common::*;
use std::path::Path;
use std::process::Command;

fn frames(path: &Path) -> u64 {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-count_frames", "-select_streams", "v:0"])
        .args(["-show_entries", "stream=nb_read_frames", "-of", "csv=p=0"])
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

/// Frame `n` of `path` as raw RGB, and its width.
fn frame(path: &Path, n: u32) -> (Vec<u8>, usize) {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(path)
        .args(["-vf", &format!("select=eq(n\\,{n})"), "-frames:v", "1"])
        .args(["-f", "rawvideo", "-pix_fmt", "rgb24", "-"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (out.stdout, 1280)
}

/// Pixels that differ by more than `by` in any channel, in the rectangle.
fn changed(a: &[u8], b: &[u8], width: usize, rect: [usize; 4], by: u8) -> usize {
    let [x1, y1, x2, y2] = rect;
    let mut n = 0;
    for y in y1..y2 {
        for x in x1..x2 {
            let i = (y * width + x) * 3;
            if (0..3).any(|c| a[i + c].abs_diff(b[i + c]) > by) {
                n += 1;
            }
        }
    }
    n
}

#[test]
fn annotated_videos_show_the_names_and_the_action() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("annotated");
    let bunny = built("media/bigbuckbunny.mp4");
    let photos = built("media/faces_demo.mp4");
    let yaml = format!(
        "streams:\n  - {{id: bunny, url: {}, branches: [action]}}\n  - {{id: photos, url: {}, branches: [faces]}}\n{}{}sinks: []\nmetrics: {{enabled: false}}\n{}",
        bunny.display(),
        photos.display(),
        action_yaml(),
        faces_yaml(&dir.path().join("gallery.json")),
        runtime_yaml()
    );
    let cfg = write_config(dir.path(), &yaml);
    let enrol = vigil()
        .args(["gallery", "enroll", "--config"])
        .arg(&cfg)
        .args(["--name", "Barack Obama"])
        .arg(built("media/faces/obama.jpg"))
        .output()
        .unwrap();
    assert!(enrol.status.success(), "{}", stderr(&enrol));
    let run = vigil()
        .args(["run", "--no-progress", "--annotate"])
        .arg(&out)
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", stderr(&run));

    let (a_bunny, a_photos) = (out.join("bunny.mp4"), out.join("photos.mp4"));
    assert_eq!(frames(&a_bunny), frames(&bunny));
    assert_eq!(frames(&a_photos), frames(&photos));
    // Bunny, frame 10: the action label is drawn in the top-left corner, the rest is the film.
    let (orig, w) = frame(&bunny, 10);
    let (ann, _) = frame(&a_bunny, 10);
    let label = changed(&orig, &ann, w, [12, 10, 300, 45], 60);
    let rest = changed(&orig, &ann, w, [0, 100, 1280, 720], 60);
    assert!(label > 2000, "no label drawn ({label} pixels changed)");
    assert!(rest < 2000, "{rest} pixels changed outside the label");
    // Photos, frame 30 (1.2 s, Obama on screen): a box and a name around his face (MTCNN finds
    // it near x 560-740, y 130-380 in this video).
    let (orig, w) = frame(&photos, 30);
    let (ann, _) = frame(&a_photos, 30);
    let boxed = changed(&orig, &ann, w, [500, 60, 800, 420], 60);
    assert!(boxed > 1000, "no face box drawn ({boxed} pixels changed)");
    assert!(stderr(&run).contains("annotated"), "{}", stderr(&run));
}
