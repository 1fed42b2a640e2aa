//! Clips of a video file, cut and preprocessed exactly as a run cuts them (sampler, resize and
//! centre crop, sliding window), for teaching custom actions and explaining a label offline.

use super::clip::{Clip, ClipWindow, Preprocess};
use super::sampler::Sampler;
use crate::config::ActionConfig;
use crate::source::file::FileReader;
use crate::source::FrameReader;
use opencv::core::Mat;
use std::path::Path;
use std::sync::Arc;

/// A clip and, when asked for, the source frames it was cut from (for drawing on them).
pub struct FileClip {
    pub clip: Clip,
    pub frames: Vec<Arc<Mat>>,
}

/// Every clip of `path` (a file shorter than one clip gives one looped clip), each with its
/// source frames when `keep_frames`. Stops reading once a clip ends after `until` seconds.
pub fn clips_of_file(
    path: &Path,
    cfg: &ActionConfig,
    keep_frames: bool,
    until: Option<f64>,
) -> Result<Vec<FileClip>, String> {
    let err = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    let mut r = FileReader::open(path).map_err(|e| e.to_string())?;
    let mut sampler = Sampler::new(cfg.sample_fps);
    let mut prep = Preprocess::new(cfg.resize_short_side, cfg.crop);
    let mut window = ClipWindow::new(0, cfg.frames, cfg.stride, cfg.sample_fps);
    let mut recent: std::collections::VecDeque<Arc<Mat>> = Default::default();
    let mut out = Vec::new();
    let mut picked: Vec<(Arc<Mat>, f64)> = Vec::new();
    let mut push = |picked: &mut Vec<(Arc<Mat>, f64)>,
                    out: &mut Vec<FileClip>,
                    window: &mut ClipWindow|
     -> Result<(), String> {
        for (m, t) in picked.drain(..) {
            let crop = prep.apply(&m).map_err(|e| err(&e.message))?;
            if keep_frames {
                if recent.len() == cfg.frames {
                    recent.pop_front();
                }
                recent.push_back(m.clone());
            }
            if let Some(clip) = window.push(t, crop) {
                out.push(FileClip {
                    clip,
                    frames: recent.iter().cloned().collect(),
                });
            }
        }
        Ok(())
    };
    let mut frames = 0u64;
    while let Some((t, m)) = r.next_frame().map_err(|e| e.to_string())? {
        frames += 1;
        sampler.push(t, Arc::new(m), |m, t| picked.push((m.clone(), t)));
        push(&mut picked, &mut out, &mut window)?;
        if let (Some(u), Some(last)) = (until, out.last()) {
            if last.clip.end > u {
                return Ok(out);
            }
        }
    }
    sampler.finish(|m, t| picked.push((m.clone(), t)));
    push(&mut picked, &mut out, &mut window)?;
    if let Some(clip) = window.finish() {
        let n = recent.len().max(1);
        let frames = (0..cfg.frames)
            .filter_map(|i| recent.get(i % n).cloned())
            .collect();
        out.push(FileClip { clip, frames });
    }
    if out.is_empty() {
        return Err(err(&format!("no frames decoded (read {frames})")));
    }
    Ok(out)
}
