//! The face branch's per-stream half: keeps frames at `faces.sample_fps` (every frame when 0)
//! and queues them for the shared face worker, then the stream's end. For a live stream a frame
//! that finds the worker's queue full is dropped and counted; a new epoch ends the stream's
//! tracks. A frame taken while the stream's motion gate is closed is counted and not queued.

use super::worker::FaceMsg;
use crate::action::sampler::Sampler;
use crate::config::Branch;
use crate::metrics::{self, Drop};
use crate::source::{Frame, StreamMsg};
use crate::stage::{Context, Stage};
use crossbeam_channel::{Receiver, Sender, TrySendError};

pub struct FaceSampler {
    /// Frames per second to keep (0: every frame).
    pub fps: f64,
    /// Drop rather than wait when the worker's queue is full.
    pub live: bool,
}

impl Stage for FaceSampler {
    const STAGE: metrics::Stage = metrics::Stage::FaceSampler;
    type Input = Receiver<StreamMsg>;
    type Output = Sender<FaceMsg>;
    type Done = ();

    fn run(self, cx: &Context, rx: Receiver<StreamMsg>, tx: Sender<FaceMsg>) {
        let (stream, id) = cx.stream();
        let (fps, live) = (self.fps, self.live);
        let sampled = cx.metrics.frames_sampled(id, Branch::Faces);
        let dropped = cx
            .metrics
            .frames_dropped(id, Branch::Faces, Drop::QueueFull);
        let mut skipped = None;
        let new_sampler = || (fps > 0.0).then(|| Sampler::<Frame>::new(fps));
        let mut sampler = new_sampler();
        let mut picked: Vec<Frame> = Vec::new();
        let (mut epoch, mut last_pts) = (0u32, 0.0);
        for msg in rx.iter() {
            let started = std::time::Instant::now();
            match msg {
                StreamMsg::Frame(f) => {
                    if f.epoch != epoch {
                        epoch = f.epoch;
                        sampler = new_sampler();
                        let gap = FaceMsg::Gap {
                            stream,
                            media_time: last_pts,
                        };
                        if tx.send(gap).is_err() {
                            return;
                        }
                    }
                    last_pts = f.pts;
                    match &mut sampler {
                        Some(s) => s.push(f.pts, f, |f, _| picked.push(f.clone())),
                        None => picked.push(f),
                    }
                }
                StreamMsg::End(end) => {
                    let _ = tx.send(FaceMsg::End(end));
                    return;
                }
            }
            // A repeated frame (source slower than the rate) is looked at once.
            picked.dedup_by_key(|f| f.seq);
            for f in picked.drain(..) {
                sampled.inc();
                // The motion gate is closed: nothing moved, nothing to search for. The stream's
                // tracks are left as they are (see docs/config.md#motion).
                if !f.motion {
                    skipped
                        .get_or_insert_with(|| cx.metrics.motion_skipped(id, Branch::Faces))
                        .inc();
                    continue;
                }
                let sent = if live {
                    match tx.try_send(FaceMsg::Frame(f)) {
                        Err(TrySendError::Full(_)) => {
                            dropped.inc();
                            cx.meter.dropped(Drop::QueueFull);
                            Ok(())
                        }
                        Err(TrySendError::Disconnected(_)) => Err(()),
                        Ok(()) => Ok(()),
                    }
                } else {
                    tx.send(FaceMsg::Frame(f)).map_err(|_| ())
                };
                if sent.is_err() {
                    return;
                }
            }
            cx.meter.done(started);
        }
    }
}
