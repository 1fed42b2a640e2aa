//! The action branch: [`sampler`] resamples a stream to a fixed rate, [`clip`] preprocesses
//! sampled frames and cuts sliding windows, [`classifier`] batches windows from all streams
//! through one model, and [`smoother`] turns per-clip scores into segments.

pub mod classifier;
pub mod clip;
pub mod sampler;
pub mod smoother;

use crate::config::ActionConfig;
use crate::metrics::Metrics;
use crate::source::{EndReason, Frame, StreamMsg};
use classifier::ClipMsg;
use crossbeam_channel::{Receiver, Sender};

/// The per-stream half of the branch: sample, preprocess, cut clips, queue them for the
/// classifier, and pass the stream's end on behind its last clip.
pub fn run_stream(
    stream: usize,
    stream_id: &str,
    rx: Receiver<StreamMsg>,
    tx: Sender<ClipMsg>,
    cfg: &ActionConfig,
    metrics: &Metrics,
) {
    let sampled = metrics
        .frames_sampled
        .with_label_values(&[stream_id, "action"]);
    let mut sampler: sampler::Sampler<Frame> = sampler::Sampler::new(cfg.sample_fps);
    let mut prep = clip::Preprocess::new(cfg.resize_short_side, cfg.crop);
    let mut window = clip::ClipWindow::new(stream, cfg.frames, cfg.stride, cfg.sample_fps);
    // The sampler repeats a frame when the source is slower than the target rate: keep the last
    // crop so a repeated frame is preprocessed once.
    let mut last: Option<(u64, clip::Crop)> = None;
    let mut picked: Vec<(Frame, f64)> = Vec::new();
    let mut failure: Option<String> = None;

    let mut process = |picked: &mut Vec<(Frame, f64)>, failure: &mut Option<String>| -> bool {
        for (frame, t) in picked.drain(..) {
            sampled.inc();
            let crop = match &last {
                Some((seq, c)) if *seq == frame.seq => c.clone(),
                _ => match prep.apply(&frame.image) {
                    Ok(c) => {
                        last = Some((frame.seq, c.clone()));
                        c
                    }
                    Err(e) => {
                        *failure = Some(format!(
                            "preprocessing frame {} at {:.3} s failed: {}",
                            frame.seq, frame.pts, e.message
                        ));
                        return false;
                    }
                },
            };
            if let Some(clip) = window.push(t, crop) {
                if tx.send(ClipMsg::Clip(clip)).is_err() {
                    return false;
                }
            }
        }
        true
    };

    for msg in rx.iter() {
        match msg {
            StreamMsg::Frame(f) => {
                sampler.push(f.pts, f, |f, t| picked.push((f.clone(), t)));
                if !process(&mut picked, &mut failure) {
                    break;
                }
            }
            StreamMsg::End(mut end) => {
                if end.reason != EndReason::Stopped {
                    sampler.finish(|f, t| picked.push((f.clone(), t)));
                    if process(&mut picked, &mut failure) {
                        if let Some(clip) = window.finish() {
                            let _ = tx.send(ClipMsg::Clip(clip));
                        }
                    }
                }
                if let Some(f) = failure.take() {
                    end.reason = EndReason::Error(f);
                }
                let _ = tx.send(ClipMsg::End(end));
                return;
            }
        }
    }
    // Failed before the end marker came: report it in place of the source's end.
    if let Some(f) = failure {
        let end = crate::source::StreamEnd {
            stream,
            frames: 0,
            media_time: 0.0,
            reason: EndReason::Error(f),
        };
        let _ = tx.send(ClipMsg::End(end));
    }
}
