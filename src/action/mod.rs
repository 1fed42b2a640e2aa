//! The action branch: [`sampler`] resamples a stream to a fixed rate, [`clip`] preprocesses
//! sampled frames and cuts sliding windows, [`classifier`] batches windows from all streams
//! through one model, and [`smoother`] turns per-clip scores into segments.

pub mod classifier;
pub mod clip;
pub mod custom;
pub mod offline;
pub mod sampler;
pub mod schedule;
pub mod smoother;

use crate::config::{ActionConfig, Branch};
use crate::metrics::{self, Drop};
use crate::source::{EndReason, Frame, StreamMsg};
use crate::stage::{Context, Stage};
use classifier::ClipMsg;
use classifier::Latest;
use crossbeam_channel::{Receiver, Sender};
use std::sync::Arc;

/// The per-stream half of the branch, as a stage: see [`run_stream`].
pub struct ActionSampler {
    pub cfg: ActionConfig,
    /// A live stream's slot for its newest clip.
    pub live: Option<Arc<Latest>>,
}

impl Stage for ActionSampler {
    const STAGE: metrics::Stage = metrics::Stage::ActionSampler;
    type Input = Receiver<StreamMsg>;
    type Output = Sender<ClipMsg>;
    type Done = ();

    fn run(self, cx: &Context, rx: Receiver<StreamMsg>, tx: Sender<ClipMsg>) {
        run_stream(cx, rx, tx, &self.cfg, self.live)
    }
}

/// The per-stream half of the branch: sample, preprocess, cut clips, queue them for the
/// classifier, and pass the stream's end on behind its last clip. A `live` stream (given its
/// [`classifier::Latest`]) never waits for the classifier: its newest clip replaces an older
/// one still waiting (counted as dropped), so this thread keeps up with the camera and what is
/// classified is recent. A new epoch (reconnection, another pass over a looped file) closes the
/// window: no clip spans a gap.
pub fn run_stream(
    cx: &Context,
    rx: Receiver<StreamMsg>,
    tx: Sender<ClipMsg>,
    cfg: &ActionConfig,
    live: Option<Arc<Latest>>,
) {
    let (stream, stream_id) = cx.stream();
    let (metrics, meter) = (&cx.metrics, &cx.meter);
    let mut b = StreamBranch {
        stream,
        cfg,
        tx,
        live,
        sampled: metrics.frames_sampled(stream_id, Branch::Action),
        busy: metrics.clips_dropped(stream_id, Drop::ClassifierBusy),
        sampler: sampler::Sampler::new(cfg.sample_fps),
        prep: clip::Preprocess::new(cfg.resize_short_side, cfg.crop),
        window: clip::ClipWindow::new(stream, cfg.frames, cfg.stride, cfg.sample_fps),
        last: None,
        epoch: 0,
        failure: None,
        recent: std::collections::VecDeque::new(),
        meter: meter.clone(),
        quiet: 0,
        gated: false,
        skipped: None,
        metrics: metrics.clone(),
        stream_id: stream_id.to_string(),
    };
    for msg in rx.iter() {
        match msg {
            StreamMsg::Frame(f) => {
                let started = std::time::Instant::now();
                if f.epoch != b.epoch {
                    if !b.flush() {
                        break;
                    }
                    b.reset(f.epoch);
                }
                let mut picked = Vec::new();
                b.sampler.push(f.pts, f, |f, t| picked.push((f.clone(), t)));
                if !b.process(picked) {
                    break;
                }
                b.meter.done(started);
            }
            StreamMsg::End(mut end) => {
                // A removed stream's window is classified too: its events come before its end.
                if end.reason != EndReason::Stopped {
                    b.flush();
                }
                if let Some(f) = b.failure.take() {
                    end.reason = EndReason::Error(f);
                }
                let _ = b.tx.send(ClipMsg::End(end));
                return;
            }
        }
    }
    // Failed before the end marker came: report it in place of the source's end.
    if let Some(f) = b.failure {
        let end = crate::source::StreamEnd {
            stream,
            frames: 0,
            media_time: 0.0,
            reason: EndReason::Error(f),
        };
        let _ = b.tx.send(ClipMsg::End(end));
    }
}

/// One stream's sampler, preprocessing and clip window.
struct StreamBranch<'a> {
    stream: usize,
    cfg: &'a ActionConfig,
    tx: Sender<ClipMsg>,
    live: Option<Arc<Latest>>,
    sampled: prometheus::IntCounter,
    busy: prometheus::IntCounter,
    sampler: sampler::Sampler<Frame>,
    prep: clip::Preprocess,
    window: clip::ClipWindow,
    /// The sampler repeats a frame when the source is slower than the target rate: the last
    /// crop is kept so a repeated frame is preprocessed once.
    last: Option<(u64, clip::Crop)>,
    epoch: u32,
    failure: Option<String>,
    /// With snapshots on: the images of the window's sampled frames, for a clip's middle one.
    recent: std::collections::VecDeque<Arc<opencv::core::Mat>>,
    meter: crate::metrics::StageMeter,
    /// Sampled frames in a row taken while the motion gate was closed.
    quiet: usize,
    /// The last complete clip was kept from the classifier by the motion gate.
    gated: bool,
    /// Clips the motion gate kept from the classifier (created at the first).
    skipped: Option<prometheus::IntCounter>,
    metrics: Arc<crate::metrics::Metrics>,
    stream_id: String,
}

impl StreamBranch<'_> {
    /// Preprocesses sampled frames and queues finished clips; false when the branch must stop.
    fn process(&mut self, picked: Vec<(Frame, f64)>) -> bool {
        for (frame, t) in picked {
            self.sampled.inc();
            let crop = match &self.last {
                Some((seq, c)) if *seq == frame.seq => c.clone(),
                _ => match self.prep.apply(&frame.image) {
                    Ok(c) => {
                        self.last = Some((frame.seq, c.clone()));
                        c
                    }
                    Err(e) => {
                        self.failure = Some(format!(
                            "preprocessing frame {} at {:.3} s failed: {}",
                            frame.seq, frame.pts, e.message
                        ));
                        return false;
                    }
                },
            };
            if self.cfg.snapshots.is_some() {
                if self.recent.len() == self.cfg.frames {
                    self.recent.pop_front();
                }
                self.recent.push_back(frame.image.clone());
            }
            self.quiet = if frame.motion { 0 } else { self.quiet + 1 };
            if let Some(mut clip) = self.window.push(t, crop) {
                if self.still() {
                    if !self.gate_closed() {
                        return false;
                    }
                    continue;
                }
                self.gated = false;
                clip.captured = Some(frame.captured);
                clip.keyframe = self.recent.get(self.recent.len() / 2).cloned();
                if !self.queue(clip) {
                    return false;
                }
            }
        }
        true
    }

    /// Whether the motion gate was closed for every frame of the window.
    fn still(&self) -> bool {
        self.quiet >= self.cfg.frames
    }

    /// A complete clip the motion gate keeps from the classifier: counted, and the first of a
    /// still spell ends the segment that ran before it, as a gap in the stream does. False
    /// when the branch must stop.
    fn gate_closed(&mut self) -> bool {
        self.skipped
            .get_or_insert_with(|| {
                let (metrics, id) = (&self.metrics, &self.stream_id);
                metrics.motion_skipped(id, Branch::Action)
            })
            .inc();
        if std::mem::replace(&mut self.gated, true) {
            return true;
        }
        self.tx.send(ClipMsg::Gap(self.stream)).is_ok()
    }

    fn queue(&self, clip: clip::Clip) -> bool {
        let Some(latest) = &self.live else {
            return self.tx.send(ClipMsg::Clip(clip)).is_ok();
        };
        let (token, replaced) = latest.put(self.stream, self.epoch, clip);
        if replaced {
            self.busy.inc();
            self.meter.dropped(Drop::ClassifierBusy);
        }
        if !token {
            return true;
        }
        let ready = ClipMsg::Ready {
            stream: self.stream,
            epoch: self.epoch,
        };
        match self.tx.try_send(ready) {
            Ok(()) => true,
            // The classifier's queue is full (other streams' work): a live stream never waits.
            // Its clip is dropped like a replaced one, and the empty slot makes the next clip
            // send a token again.
            Err(crossbeam_channel::TrySendError::Full(_)) => {
                if latest.take(self.stream, self.epoch).is_some() {
                    self.busy.inc();
                    self.meter.dropped(Drop::ClassifierBusy);
                }
                true
            }
            Err(crossbeam_channel::TrySendError::Disconnected(_)) => false,
        }
    }

    /// Classifies what the window holds at the end of an epoch or of the stream.
    fn flush(&mut self) -> bool {
        let mut picked = Vec::new();
        self.sampler.finish(|f, t| picked.push((f.clone(), t)));
        if !self.process(picked) {
            return false;
        }
        match self.window.finish() {
            Some(mut clip) => {
                clip.keyframe = self.recent.get(self.recent.len() / 2).cloned();
                self.queue(clip)
            }
            None => true,
        }
    }

    /// Starts afresh after a gap, and tells the smoother the segment (if any) is over.
    fn reset(&mut self, epoch: u32) {
        let cfg = self.cfg;
        self.sampler = sampler::Sampler::new(cfg.sample_fps);
        self.window = clip::ClipWindow::new(self.stream, cfg.frames, cfg.stride, cfg.sample_fps);
        self.last = None;
        self.recent.clear();
        self.quiet = 0;
        self.gated = false;
        self.epoch = epoch;
        let _ = self.tx.send(ClipMsg::Gap(self.stream));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use crate::source::StreamEnd;
    use opencv::core::{Mat, Scalar, CV_8UC3};

    /// What the branch sent the classifier, in order.
    fn sent(rx: &crossbeam_channel::Receiver<ClipMsg>) -> Vec<String> {
        rx.try_iter()
            .map(|m| match m {
                ClipMsg::Clip(c) => format!("clip {}", c.index),
                ClipMsg::Ready { .. } => "ready".into(),
                ClipMsg::Gap(_) => "gap".into(),
                ClipMsg::End(_) => "end".into(),
            })
            .collect()
    }

    #[test]
    fn clips_of_a_still_spell_are_not_classified_and_the_first_ends_the_segment() {
        let metrics = Arc::new(Metrics::new());
        let cx = Context::new(
            metrics::Stage::ActionSampler,
            "act-cam".into(),
            Some((0, Arc::from("cam"))),
            &metrics,
            crate::shutdown::Shutdown::new(),
        );
        let cfg = ActionConfig {
            frames: 4,
            stride: 2,
            resize_short_side: 8,
            crop: 8,
            ..ActionConfig::default()
        };
        let (in_tx, in_rx) = crossbeam_channel::unbounded();
        let (tx, rx) = crossbeam_channel::unbounded();
        let image =
            Arc::new(Mat::new_rows_cols_with_default(8, 8, CV_8UC3, Scalar::all(9.0)).unwrap());
        // 8 frames while the gate is open, 12 while it is closed, 8 open again.
        for seq in 0..28u64 {
            let f = Frame {
                stream: 0,
                seq,
                pts: seq as f64 / 25.0,
                epoch: 0,
                captured: std::time::Instant::now(),
                image: image.clone(),
                motion: !(8..20).contains(&seq),
            };
            in_tx.send(StreamMsg::Frame(f)).unwrap();
        }
        in_tx
            .send(StreamMsg::End(StreamEnd {
                stream: 0,
                frames: 28,
                media_time: 27.0 / 25.0,
                reason: EndReason::EndOfFile,
            }))
            .unwrap();
        run_stream(&cx, in_rx, tx, &cfg, None);
        // Windows end at frames 3, 5, ..., 27. Those ending at 11 to 19 saw only closed-gate
        // frames: skipped, the first of them ending the running segment (one gap); the window
        // ending at 21 holds an open frame again.
        assert_eq!(
            sent(&rx),
            [
                "clip 0", "clip 1", "clip 2", "clip 3", "gap", "clip 9", "clip 10", "clip 11",
                "clip 12", "end"
            ]
        );
        assert_eq!(metrics.motion_skipped("cam", Branch::Action).get(), 5);
    }
}
