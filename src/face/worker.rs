//! The face stage of a run: one worker owns the detector and embedder sessions and serves every
//! stream, in arrival order, so each stream's end marker follows its last frame.

use super::align;
use super::detector::{Detection, FaceDetector, Mtcnn, MtcnnParams};
use super::embedder::Embedder;
use super::tracker::{Decision, Tracker, TrackerParams};
use crate::config::{DetectorConfig, FacesConfig, Loaded};
use crate::event::{Event, EventType, Payload, RunnerUp};
use crate::gallery::Index;
use crate::infer::{self, InferError};
use crate::metrics::Metrics;
use crate::pipeline::EventMsg;
use crate::source::{Frame, StreamEnd};
use crossbeam_channel::{Receiver, Sender};
use opencv::core::{Mat, Rect};
use opencv::prelude::*;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Into the face worker.
pub enum FaceMsg {
    Frame(Frame),
    /// The stream had a gap (reconnection, another pass of a looped file) at this media time:
    /// its tracks end.
    Gap {
        stream: usize,
        media_time: f64,
    },
    End(StreamEnd),
}

/// Detector and embedder, loaded once.
pub struct FaceModels {
    pub detector: Box<dyn FaceDetector>,
    pub embedder: Embedder,
    /// Metric label of the detector and embedder.
    pub detector_name: String,
    pub embedder_name: String,
}

fn stem(p: &std::path::Path) -> String {
    p.file_stem()
        .map_or("model".into(), |s| s.to_string_lossy().into_owned())
}

/// Loads the configured detector and embedder; errors name the config field at fault.
pub fn load_models(
    l: &Loaded,
    env: &ort::environment::Environment,
    opts: &infer::SessionOptions,
) -> Result<FaceModels, (&'static str, InferError)> {
    let f = &l.config.faces;
    let (Some(det), Some(emb)) = (&f.detector, &f.embedder) else {
        let e = InferError::Contract {
            model: PathBuf::new(),
            reason: "faces.detector and faces.embedder are required".into(),
        };
        return Err(("faces", e));
    };
    let DetectorConfig::Mtcnn {
        pnet,
        rnet,
        onet,
        min_face_px,
        scale_factor,
        thresholds,
        min_probability,
    } = det;
    let params = MtcnnParams {
        min_face_px: *min_face_px,
        scale_factor: *scale_factor,
        thresholds: *thresholds,
        min_probability: *min_probability,
    };
    let detector = Mtcnn::load(
        env,
        &l.resolve(pnet),
        &l.resolve(rnet),
        &l.resolve(onet),
        params,
        opts,
    )
    .map_err(|e| ("faces.detector", e))?;
    let path = l.resolve(&emb.path);
    let embedder = Embedder::load(env, &path, &emb.input, &emb.output, opts)
        .map_err(|e| ("faces.embedder.path", e))?;
    Ok(FaceModels {
        detector: Box::new(detector),
        embedder,
        detector_name: "mtcnn".into(),
        embedder_name: stem(&path),
    })
}

/// Detects, aligns and embeds every face in `bgr`; returns detections (largest first) and
/// their descriptors.
pub fn faces_in(
    models: &mut FaceModels,
    bgr: &Mat,
) -> Result<Vec<(Detection, Vec<f32>)>, InferError> {
    let mut dets = models.detector.detect(bgr)?;
    dets.sort_by(|a, b| b.area().total_cmp(&a.area()));
    let chips = chips(bgr, models.embedder.size, dets.iter())?;
    let descs = models.embedder.embed(&as_slices(&chips))?;
    Ok(dets.into_iter().zip(descs).collect())
}

/// Each detected face warped to the embedder's chip.
fn chips<'a>(
    bgr: &Mat,
    size: usize,
    dets: impl Iterator<Item = &'a Detection>,
) -> Result<Vec<Vec<u8>>, InferError> {
    dets.map(|d| align::chip(bgr, &d.landmarks, size as i32))
        .collect::<Result<_, _>>()
        .map_err(|e| InferError::Run {
            model: PathBuf::from("alignment"),
            reason: e.message,
        })
}

fn as_slices(chips: &[Vec<u8>]) -> Vec<&[u8]> {
    chips.iter().map(Vec::as_slice).collect()
}

/// Most frames (each from a different stream) whose faces are embedded in one call.
const MAX_ROUND: usize = 8;

/// Everything the worker needs besides its input.
pub struct FaceStage {
    pub models: FaceModels,
    pub index: Arc<dyn Index>,
    pub cfg: FacesConfig,
    /// Resolved snapshot folder.
    pub snapshots: Option<PathBuf>,
    pub names: Vec<String>,
    /// For annotated video: boxes, tracks and names per examined frame.
    pub notes: Option<Arc<crate::pipeline::annotate::Notes>>,
}

impl FaceStage {
    fn event(&self, stream: usize, d: &Decision, snapshot: Option<String>) -> Event {
        if let Some(n) = &self.notes {
            n.named(stream, d.track_id, d.identity.as_deref());
        }
        let kind = if d.identity.is_some() {
            EventType::FaceIdentified
        } else {
            EventType::FaceUnknown
        };
        let payload = Payload::Face {
            identity: d.identity.clone(),
            distance: d.distance,
            runner_up: d.runner_up.as_ref().map(|m| RunnerUp {
                identity: m.name.clone(),
                distance: m.distance,
            }),
            track_id: d.track_id,
            bbox: d.bbox.map(|v| v.round()),
            snapshot,
        };
        Event::new(kind, &self.names[stream], d.media_time, payload)
    }

    fn snapshot(&self, stream: usize, frame: &Frame, d: &Decision) -> Option<String> {
        let dir = self.snapshots.as_ref()?;
        let img = &frame.image;
        let (w, h) = (img.cols(), img.rows());
        let [x1, y1, x2, y2] = d.bbox;
        let rect = Rect::new(x1.max(0.0) as i32, y1.max(0.0) as i32, 1, 1);
        let rect = Rect::new(
            rect.x,
            rect.y,
            ((x2.min(w as f32) as i32) - rect.x).max(1),
            ((y2.min(h as f32) as i32) - rect.y).max(1),
        ) & Rect::new(0, 0, w, h);
        let path = dir.join(format!(
            "{}-{:.3}-track{}.jpg",
            self.names[stream], frame.pts, d.track_id
        ));
        let crop = Mat::roi(&**img, rect).ok()?;
        match opencv::imgcodecs::imwrite_def(&path, &crop) {
            Ok(true) => Some(path.display().to_string()),
            other => {
                tracing::warn!("cannot write snapshot {}: {other:?}", path.display());
                None
            }
        }
    }
}

/// The worker loop. Returns on an inference error (the run then ends with it) or when every
/// input is gone. Frames of different streams that are waiting together have their faces
/// embedded in one batch. Once `stop` is set, frames still queued are counted as dropped (reason
/// `shutdown`) rather than looked at; gaps and ends still pass.
pub fn run(
    mut st: FaceStage,
    rx: Receiver<FaceMsg>,
    tx: Sender<EventMsg>,
    metrics: &Metrics,
    stop: &AtomicBool,
    meter: &crate::metrics::StageMeter,
) -> Result<(), InferError> {
    let t = &st.cfg.tracker;
    let params = TrackerParams {
        iou_threshold: t.iou_threshold,
        max_gap_s: t.max_gap_ms as f64 / 1000.0,
        embeds_per_track: t.embeds_per_track,
        decide_after: t.decide_after,
        match_threshold: st.cfg.match_threshold,
        reverify_s: t.reverify_ms as f64 / 1000.0,
    };
    let mut trackers: Vec<Tracker> = st
        .names
        .iter()
        .map(|_| Tracker::new(params.clone()))
        .collect();
    let depth = metrics.queue_depth.with_label_values(&["faces"]);
    let det_secs = metrics
        .inference_seconds
        .with_label_values(&[&st.models.detector_name]);
    let emb_secs = metrics
        .inference_seconds
        .with_label_values(&[&st.models.embedder_name]);
    let emb_batch = metrics
        .inference_batch
        .with_label_values(&[&st.models.embedder_name]);
    let size = st.models.embedder.size;
    let interval = st.cfg.detect_interval.max(1) as usize;
    let mut since_search: Vec<usize> = vec![0; st.names.len()];
    let latency = metrics.capture_latency.with_label_values(&["faces"]);
    let send = |e: Event| tx.send(EventMsg::Emit(e)).is_ok();
    // A message taken from the queue that belongs to the next round.
    let mut next: Option<FaceMsg> = None;
    loop {
        let first = match next.take() {
            Some(m) => m,
            None => match rx.recv() {
                Ok(m) => m,
                Err(_) => return Ok(()),
            },
        };
        depth.set(rx.len() as i64);
        // One round: the frames waiting now, at most one per stream (a stream's tracker must
        // see its frames one after another), detected one by one and embedded in one call.
        let mut group: Vec<Frame> = Vec::new();
        match first {
            FaceMsg::Frame(f) => group.push(f),
            FaceMsg::Gap { stream, media_time } => {
                for d in trackers[stream].finish(media_time) {
                    send(st.event(stream, &d, None));
                }
                since_search[stream] = 0;
                continue;
            }
            FaceMsg::End(end) => {
                for d in trackers[end.stream].finish(end.media_time) {
                    send(st.event(end.stream, &d, None));
                }
                if tx.send(EventMsg::FaceEnd(end)).is_err() {
                    return Ok(());
                }
                continue;
            }
        }
        while group.len() < MAX_ROUND {
            match rx.try_recv() {
                Ok(FaceMsg::Frame(f)) if group.iter().all(|g| g.stream != f.stream) => {
                    group.push(f)
                }
                Ok(m) => {
                    next = Some(m);
                    break;
                }
                Err(_) => break,
            }
        }
        if stop.load(Ordering::Relaxed) {
            for f in group {
                metrics
                    .frames_dropped
                    .with_label_values(&[&st.names[f.stream], "faces", "shutdown"])
                    .inc();
                meter.dropped("shutdown");
            }
            continue;
        }
        let round = Instant::now();
        let frames = group.len();

        let mut looked = Vec::with_capacity(group.len());
        for frame in group {
            let started = Instant::now();
            let n = &mut since_search[frame.stream];
            let boxes = trackers[frame.stream].boxes();
            let dets = if *n + 1 >= interval || boxes.is_empty() {
                *n = 0;
                st.models.detector.detect(&frame.image)?
            } else {
                *n += 1;
                st.models.detector.redetect(&frame.image, &boxes)?
            };
            det_secs.observe(started.elapsed().as_secs_f64());
            tracing::trace!(
                full_search = since_search[frame.stream] == 0,
                faces = dets.len(),
                ms = started.elapsed().as_secs_f64() * 1e3,
                "detect"
            );
            metrics
                .faces_detected
                .with_label_values(&[&st.names[frame.stream]])
                .inc_by(dets.len() as u64);
            let (assigned, closed) = trackers[frame.stream].observe(frame.pts, &dets);
            for d in closed {
                send(st.event(frame.stream, &d, None));
            }
            // Only faces whose track still wants an embedding are aligned and embedded.
            let wanted: Vec<usize> = assigned
                .iter()
                .enumerate()
                .filter(|(_, a)| a.1)
                .map(|(i, _)| i)
                .collect();
            looked.push((frame, dets, assigned, wanted));
        }

        let mut all_chips = Vec::new();
        for (frame, dets, _, wanted) in &looked {
            all_chips.extend(chips(&frame.image, size, wanted.iter().map(|&i| &dets[i]))?);
        }
        let mut descs = Vec::new().into_iter();
        if !all_chips.is_empty() {
            let started = Instant::now();
            descs = st
                .models
                .embedder
                .embed(&as_slices(&all_chips))?
                .into_iter();
            emb_secs.observe(started.elapsed().as_secs_f64());
            tracing::trace!(
                faces = all_chips.len(),
                frames = looked.len(),
                ms = started.elapsed().as_secs_f64() * 1e3,
                "embed"
            );
            emb_batch.observe(all_chips.len() as f64);
        }
        for (frame, dets, assigned, wanted) in looked {
            for (&i, desc) in wanted.iter().zip(descs.by_ref()) {
                let matches = st.index.search(&desc, 2);
                let tracker = &mut trackers[frame.stream];
                if let Some(d) = tracker.matched(assigned[i].0, &matches, i, frame.pts) {
                    let snap = st.snapshot(frame.stream, &frame, &d);
                    if !send(st.event(frame.stream, &d, snap)) {
                        return Ok(());
                    }
                }
            }
            if let Some(n) = &st.notes {
                let boxes = assigned.iter().zip(&dets).map(|(a, d)| (a.0, d.bbox));
                n.faces(frame.stream, frame.pts, boxes.collect());
            }
            latency.observe(frame.captured.elapsed().as_secs_f64());
        }
        meter.done_batch(frames, round);
    }
}
