//! The face stage of a run: one worker owns the detector and embedder sessions and serves every
//! stream, in arrival order, so each stream's end marker follows its last frame.

use super::align;
use super::detector::{Detection, FaceDetector, Mtcnn, MtcnnParams};
use super::embedder::Embedder;
use super::tracker::{Decision, Tracker, TrackerParams};
use crate::annotate::Notes;
use crate::config::Branch;
use crate::config::{DetectorConfig, FacesConfig, Loaded};
use crate::event::{EventMsg, FaceSeen, RunnerUp};
use crate::gallery::SharedIndex;
use crate::infer::{self, InferError};
use crate::metrics::{self, Drop};
use crate::source::{Frame, Names, StreamEnd};
use crate::stage::{Context, Stage};
use crossbeam_channel::{Receiver, Sender};
use opencv::core::{Mat, Rect};
use opencv::prelude::*;
use std::collections::HashMap;
use std::path::PathBuf;
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

/// Why the face models could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("faces.detector and faces.embedder are required")]
    NotConfigured,
    /// A model failed to load; `field` is the config field that names it.
    #[error("{source}")]
    Model {
        field: &'static str,
        #[source]
        source: InferError,
    },
}

impl LoadError {
    /// The config field at fault.
    pub fn field(&self) -> &'static str {
        match self {
            LoadError::NotConfigured => "faces",
            LoadError::Model {
                source: InferError::Provider { .. },
                ..
            } => "runtime.execution_provider",
            LoadError::Model { field, .. } => field,
        }
    }
}

/// Loads the configured detector and embedder.
pub fn load_models(
    l: &Loaded,
    env: &ort::environment::Environment,
    opts: &infer::SessionOptions,
) -> Result<FaceModels, LoadError> {
    let f = &l.config.faces;
    let (Some(det), Some(emb)) = (&f.detector, &f.embedder) else {
        return Err(LoadError::NotConfigured);
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
    .map_err(|source| LoadError::Model {
        field: "faces.detector",
        source,
    })?;
    let path = l.resolve(&emb.path);
    let embedder = Embedder::load(env, &path, &emb.input, &emb.output, opts).map_err(|source| {
        LoadError::Model {
            field: "faces.embedder.path",
            source,
        }
    })?;
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
    /// The gallery's index as of now, swapped when the gallery changes.
    pub index: Arc<SharedIndex>,
    pub cfg: FacesConfig,
    /// Whether snapshots are on: each decided face's crop goes to the events stage.
    pub snapshots: bool,
    pub names: Arc<Names>,
    /// For annotated video: boxes, tracks and names per examined frame.
    pub notes: Option<Arc<Notes>>,
}

/// One stream's tracks and detection schedule.
struct PerStream {
    tracker: Tracker,
    /// Frames since the last full search.
    since_search: usize,
    detected: prometheus::IntCounter,
}

impl FaceStage {
    fn seen(&self, stream: usize, d: &Decision, crop: Option<Mat>) -> EventMsg {
        if let Some(n) = &self.notes {
            n.named(stream, d.track_id, d.identity.as_deref());
        }
        if let Some(p) = self.names.preview(stream) {
            p.named(d.track_id, d.identity.as_deref());
        }
        EventMsg::Face {
            stream,
            seen: FaceSeen {
                identity: d.identity.clone(),
                distance: d.distance,
                runner_up: d.runner_up.as_ref().map(|m| RunnerUp {
                    identity: m.name.clone(),
                    distance: m.distance,
                }),
                track_id: d.track_id,
                bbox: d.bbox.map(|v| v.round()),
                media_time: d.media_time,
                crop,
                captured: None,
                embeddings: d.embeddings.clone(),
                first_seen: d.first_seen,
            },
        }
    }

    /// The face in `bbox` cut from its frame (a copy: the frame is not kept).
    fn crop(&self, frame: &Frame, bbox: [f32; 4]) -> Option<Mat> {
        if !self.snapshots {
            return None;
        }
        let img = &frame.image;
        let (w, h) = (img.cols(), img.rows());
        // The face with a margin of a third of its size on every side: a whole head, which a
        // face detector finds again (enrolling the face of an event's snapshot).
        let [x1, y1, x2, y2] = bbox;
        let (mx, my) = ((x2 - x1) / 3.0, (y2 - y1) / 3.0);
        let [x1, y1, x2, y2] = [x1 - mx, y1 - my, x2 + mx, y2 + my];
        let (x, y) = (x1.max(0.0) as i32, y1.max(0.0) as i32);
        let rect = Rect::new(
            x,
            y,
            ((x2.min(w as f32) as i32) - x).max(1),
            ((y2.min(h as f32) as i32) - y).max(1),
        ) & Rect::new(0, 0, w, h);
        Mat::roi(&**img, rect).ok()?.try_clone().ok()
    }
}

impl Stage for FaceStage {
    const STAGE: metrics::Stage = metrics::Stage::Faces;
    type Input = Receiver<FaceMsg>;
    type Output = Sender<EventMsg>;
    type Done = Result<(), InferError>;

    /// Returns on an inference error (the run then ends with it) or when every input is gone.
    /// Frames of different streams that are waiting together have their faces embedded in one
    /// batch. Once the process stops, frames still queued are counted as dropped (reason
    /// `shutdown`) rather than looked at; gaps and ends still pass. A removed stream's queued
    /// frames are looked at: its events are written before its `stream.down`.
    fn run(mut self, cx: &Context, rx: Receiver<FaceMsg>, tx: Sender<EventMsg>) -> Self::Done {
        let st = &mut self;
        crate::stage::lower_priority(st.cfg.nice, "faces");
        st.models.detector.lower_priority(st.cfg.nice);
        let metrics = &cx.metrics;
        let t = &st.cfg.tracker;
        let params = TrackerParams {
            iou_threshold: t.iou_threshold,
            max_gap_s: t.max_gap_ms as f64 / 1000.0,
            embeds_per_track: t.embeds_per_track,
            decide_after: t.decide_after,
            match_threshold: st.cfg.match_threshold,
            reverify_s: t.reverify_ms as f64 / 1000.0,
        };
        let mut streams: HashMap<usize, PerStream> = HashMap::new();
        // The latest face of each undecided track (with snapshots on), for the event reported
        // when the track closes before it is decided.
        let mut last_crop: HashMap<(usize, u64), Mat> = HashMap::new();
        let depth = metrics.queue_depth(metrics::Stage::Faces);
        let det_secs = metrics.inference_seconds(&st.models.detector_name);
        let emb_secs = metrics.inference_seconds(&st.models.embedder_name);
        let emb_batch = metrics.inference_batch(&st.models.embedder_name);
        let size = st.models.embedder.size;
        let interval = st.cfg.detect_interval.max(1) as usize;
        let latency = metrics.capture_latency(Branch::Faces);
        let send = |m: EventMsg| tx.send(m).is_ok();
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
            // One round: the frames waiting now, at most one per stream (a stream's tracker
            // must see its frames one after another), detected one by one and embedded in one
            // call.
            let mut group: Vec<Frame> = Vec::new();
            match first {
                FaceMsg::Frame(f) => group.push(f),
                FaceMsg::Gap { stream, media_time } => {
                    if let Some(ps) = streams.get_mut(&stream) {
                        for d in ps.tracker.finish(media_time) {
                            let crop = last_crop.remove(&(stream, d.track_id));
                            send(st.seen(stream, &d, crop));
                        }
                        last_crop.retain(|k, _| k.0 != stream);
                        ps.since_search = 0;
                    }
                    continue;
                }
                FaceMsg::End(end) => {
                    if let Some(mut ps) = streams.remove(&end.stream) {
                        for d in ps.tracker.finish(end.media_time) {
                            let crop = last_crop.remove(&(end.stream, d.track_id));
                            send(st.seen(end.stream, &d, crop));
                        }
                    }
                    last_crop.retain(|k, _| k.0 != end.stream);
                    if !send(EventMsg::FaceEnd(end)) {
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
            if cx.shutdown.is_cancelled() {
                for f in group {
                    metrics
                        .frames_dropped(&st.names.get(f.stream), Branch::Faces, Drop::Shutdown)
                        .inc();
                    cx.meter.dropped(Drop::Shutdown);
                }
                continue;
            }
            let round = Instant::now();
            let frames = group.len();

            let mut looked = Vec::with_capacity(group.len());
            for frame in group {
                let started = Instant::now();
                let ps = streams.entry(frame.stream).or_insert_with(|| PerStream {
                    tracker: Tracker::new(params.clone()),
                    since_search: 0,
                    detected: metrics.faces_detected(&st.names.get(frame.stream)),
                });
                let boxes = ps.tracker.boxes();
                let full = ps.since_search + 1 >= interval || boxes.is_empty();
                let dets = if full {
                    ps.since_search = 0;
                    st.models.detector.detect(&frame.image)?
                } else {
                    ps.since_search += 1;
                    st.models.detector.redetect(&frame.image, &boxes)?
                };
                det_secs.observe(started.elapsed().as_secs_f64());
                tracing::trace!(
                    full_search = full,
                    faces = dets.len(),
                    ms = started.elapsed().as_secs_f64() * 1e3,
                    "detect"
                );
                ps.detected.inc_by(dets.len() as u64);
                let (assigned, closed) = ps.tracker.observe(frame.pts, &dets);
                for d in closed {
                    let crop = last_crop.remove(&(frame.stream, d.track_id));
                    send(st.seen(frame.stream, &d, crop));
                }
                last_crop.retain(|k, _| k.0 != frame.stream || ps.tracker.undecided(k.1));
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
            // The gallery as of this round: an enrolment that just finished is used here.
            let index = st.index.get();
            for (frame, dets, assigned, wanted) in looked {
                for (&i, desc) in wanted.iter().zip(descs.by_ref()) {
                    let matches = index.search(&desc, 2);
                    let Some(ps) = streams.get_mut(&frame.stream) else {
                        continue;
                    };
                    let track = assigned[i].0;
                    let Some(d) = ps.tracker.matched(track, &desc, &matches, i, frame.pts) else {
                        // Not decided yet: if the track closes before it is, its event shows
                        // this face. (A decided track re-verified without a change needs none.)
                        if ps.tracker.undecided(track) {
                            if let Some(crop) = st.crop(&frame, dets[i].bbox) {
                                last_crop.insert((frame.stream, track), crop);
                            }
                        }
                        continue;
                    };
                    last_crop.remove(&(frame.stream, track));
                    let crop = st.crop(&frame, d.bbox);
                    let mut m = st.seen(frame.stream, &d, crop);
                    if let EventMsg::Face { seen, .. } = &mut m {
                        seen.captured = Some(frame.captured);
                    }
                    if !send(m) {
                        return Ok(());
                    }
                }
                let boxes = || assigned.iter().zip(&dets).map(|(a, d)| (a.0, d.bbox));
                if let Some(n) = &st.notes {
                    n.faces(frame.stream, frame.pts, boxes().collect());
                }
                if let Some(p) = st.names.watched(frame.stream) {
                    p.faces(frame.pts, &frame.image, boxes().collect());
                }
                latency.observe(frame.captured.elapsed().as_secs_f64());
            }
            cx.meter.done_batch(frames, round);
        }
    }
}
