//! Annotated video for recorded files (`vigil run --annotate DIR`): while the run goes, the face
//! worker notes each examined frame's tracked boxes and the events stage each classified clip;
//! once the run has ended, every file stream is decoded again and written to `DIR/<id>.mp4`
//! with its boxes, track ids, names, and the action label and score of the clip in progress.

use crate::draw::paint;
pub use crate::draw::FaceNote;
use crate::source::file::FileReader;
use crate::source::FrameReader;
use opencv::core::{Mat, Size};
use opencv::prelude::*;
use opencv::videoio::{self, VideoWriter};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

#[derive(Default)]
struct StreamNotes {
    /// (media time, faces) per examined frame, in order.
    faces: Vec<(f64, Vec<FaceNote>)>,
    /// (clip start, clip end, top label, score), in order.
    clips: Vec<(f64, f64, String, f32)>,
    /// Names decided per track.
    names: HashMap<u64, String>,
}

/// What the run noted, per stream.
#[derive(Default)]
pub struct Notes {
    streams: Mutex<HashMap<usize, StreamNotes>>,
}

impl Notes {
    pub fn new() -> Notes {
        Notes::default()
    }

    fn lock(&self, stream: usize) -> impl std::ops::DerefMut<Target = StreamNotes> + '_ {
        struct Guard<'a>(
            std::sync::MutexGuard<'a, HashMap<usize, StreamNotes>>,
            usize,
        );
        impl std::ops::Deref for Guard<'_> {
            type Target = StreamNotes;
            fn deref(&self) -> &StreamNotes {
                &self.0[&self.1]
            }
        }
        impl std::ops::DerefMut for Guard<'_> {
            fn deref_mut(&mut self) -> &mut StreamNotes {
                self.0.get_mut(&self.1).expect("inserted when locked")
            }
        }
        let mut g = self.streams.lock().unwrap_or_else(|p| p.into_inner());
        g.entry(stream).or_default();
        Guard(g, stream)
    }

    /// A decision named (or failed to name) a track.
    pub fn named(&self, stream: usize, track_id: u64, identity: Option<&str>) {
        self.lock(stream)
            .names
            .insert(track_id, identity.unwrap_or("unknown").to_string());
    }

    /// The tracked boxes of one examined frame.
    pub fn faces(&self, stream: usize, t: f64, boxes: Vec<(u64, [f32; 4])>) {
        let mut n = self.lock(stream);
        let faces = boxes
            .into_iter()
            .map(|(track_id, bbox)| FaceNote {
                track_id,
                bbox,
                label: n
                    .names
                    .get(&track_id)
                    .cloned()
                    .unwrap_or_else(|| "?".into()),
            })
            .collect();
        n.faces.push((t, faces));
    }

    /// A classified clip's best label.
    pub fn clip(&self, stream: usize, start: f64, end: f64, label: String, score: f32) {
        self.lock(stream).clips.push((start, end, label, score));
    }
}

/// Draws one frame's notes at media time `t`. Faces are those of the latest examined frame at
/// or before `t` (within `hold` seconds); the action is that of the latest clip containing `t`.
fn draw(img: &mut Mat, n: &StreamNotes, t: f64, hold: f64) -> opencv::Result<()> {
    let i = n.faces.partition_point(|f| f.0 <= t + 1e-6);
    let faces = i
        .checked_sub(1)
        .map(|i| &n.faces[i])
        .filter(|(ft, _)| t - ft <= hold)
        .map_or(&[][..], |(_, faces)| faces.as_slice());
    // Clips come in order of their start: the latest one started by `t`, if it still runs.
    let started = n.clips.partition_point(|c| c.0 <= t + 1e-6);
    let clip = started
        .checked_sub(1)
        .map(|i| &n.clips[i])
        .filter(|c| t < c.1 + 1e-6)
        .map(|(_, _, label, score)| (label.as_str(), *score));
    paint(img, faces, clip, 1)
}

/// Writes `out` from `file` with the stream's notes drawn on every frame; returns the frames
/// written.
pub fn render(
    file: &Path,
    notes: &Notes,
    stream: usize,
    hold: f64,
    out: &Path,
) -> anyhow::Result<u64> {
    let mut reader = FileReader::open(file)?;
    let info = reader.info();
    let fps = if info.fps > 0.0 { info.fps } else { 25.0 };
    let size = Size::new(info.width as i32, info.height as i32);
    let mut writer = None;
    for fourcc in [*b"avc1", *b"mp4v"] {
        let code = VideoWriter::fourcc(
            fourcc[0] as char,
            fourcc[1] as char,
            fourcc[2] as char,
            fourcc[3] as char,
        )?;
        let w = VideoWriter::new_with_backend(out, videoio::CAP_FFMPEG, code, fps, size, true)?;
        if w.is_opened()? {
            writer = Some(w);
            break;
        }
    }
    let Some(mut writer) = writer else {
        anyhow::bail!(
            "{}: OpenCV cannot write MP4 (neither H.264 nor MPEG-4 Part 2)",
            out.display()
        );
    };
    let n = notes.lock(stream);
    let mut frames = 0;
    while let Some((t, mut img)) = reader.next_frame()? {
        draw(&mut img, &n, t, hold)?;
        writer.write(&img)?;
        frames += 1;
    }
    writer.release()?;
    Ok(frames)
}

/// `DIR/<stream id>.mp4`.
pub fn output_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}.mp4"))
}
