//! The classifier worker: owns the model's session, batches clips from every stream (up to
//! `max_batch`, waiting at most `max_wait_ms` for a batch to fill) and sends each clip's class
//! probabilities on, in the order the clips arrived.

use super::clip::Clip;
use crate::event::{EventMsg, Span};
use crate::infer::{self, InferError};
use crate::metrics::{self, Drop};
use crate::source::{Names, StreamEnd};
use crate::stage::{Context, Stage};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use ort::session::{RunOptions, Session};
use ort::value::TensorRef;
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Into the classifier: clips, and each stream's end behind its last clip.
pub enum ClipMsg {
    Clip(Clip),
    /// A live stream's newest clip waits in [`Latest`], put there in this epoch.
    Ready {
        stream: usize,
        epoch: u32,
    },
    /// The stream had a gap (reconnection, another pass of a looped file): the segment running
    /// before it is over.
    Gap(usize),
    End(StreamEnd),
}

/// Out of the classifier.
pub enum Scored {
    Clip {
        stream: usize,
        span: Span,
        probs: Vec<f32>,
        /// When the clip's last frame was read.
        captured: Option<Instant>,
        /// The clip's middle frame, when snapshots are on.
        keyframe: Option<Arc<opencv::core::Mat>>,
        /// Custom actions' scores (empty without custom actions), from the same call.
        custom: Vec<f32>,
        /// The clip's crops, when the API keeps action events' clips (else empty).
        frames: Vec<super::clip::Crop>,
    },
    Gap(usize),
    End(StreamEnd),
}

/// An action model with the tensor layout `[N, 3, T, side, side]`, RGB 0..255.
pub struct Classifier {
    session: Session,
    path: PathBuf,
    /// Label for metrics: the model file's stem.
    pub name: String,
    input: String,
    output: String,
    frames: usize,
    side: usize,
    classes: usize,
    /// The features output and its width, once [`Classifier::enable_features`] found it.
    features: Option<(String, usize)>,
    input_buf: Vec<f32>,
    /// Free heap pages go back to the system before each call (see
    /// [`infer::release_free_heap`]): set when the session allocates per call.
    trim_heap: bool,
    /// Every call runs with these options, so another thread can cut a call short.
    run_options: Arc<RunOptions>,
}

impl Classifier {
    pub fn new(
        session: Session,
        path: PathBuf,
        input: &str,
        output: &str,
        frames: usize,
        side: usize,
        classes: usize,
    ) -> Result<Classifier, InferError> {
        let run_options = RunOptions::new().map_err(|e| InferError::Run {
            model: path.clone(),
            reason: format!("cannot create run options: {e}"),
        })?;
        let name = path
            .file_stem()
            .map_or("model".into(), |s| s.to_string_lossy().into_owned());
        Ok(Classifier {
            session,
            path,
            name,
            input: input.into(),
            output: output.into(),
            frames,
            side,
            classes,
            features: None,
            input_buf: Vec::new(),
            trim_heap: false,
            run_options: Arc::new(run_options),
        })
    }

    /// A handle that ends the call in progress (and every later one) with an error: used at
    /// shutdown so that a long batch does not hold up the exit.
    pub fn canceller(&self) -> Arc<RunOptions> {
        self.run_options.clone()
    }

    /// Fills the input tensor for `clips`: planar channels, frames in order.
    fn fill(&mut self, clips: &[&Clip]) {
        let (t, plane) = (self.frames, self.side * self.side);
        self.input_buf.resize(clips.len() * 3 * t * plane, 0.0);
        for (b, clip) in clips.iter().enumerate() {
            debug_assert_eq!(clip.frames.len(), t);
            let clip_buf = &mut self.input_buf[b * 3 * t * plane..][..3 * t * plane];
            let (r, rest) = clip_buf.split_at_mut(t * plane);
            let (g, bl) = rest.split_at_mut(t * plane);
            for (ti, frame) in clip.frames.iter().enumerate() {
                let (r, g, bl) = (
                    &mut r[ti * plane..][..plane],
                    &mut g[ti * plane..][..plane],
                    &mut bl[ti * plane..][..plane],
                );
                for (i, px) in frame.chunks_exact(3).enumerate() {
                    r[i] = px[0] as f32;
                    g[i] = px[1] as f32;
                    bl[i] = px[2] as f32;
                }
            }
        }
    }

    /// The input tensor of the last call, as fed to the model.
    pub fn input_tensor(&self) -> &[f32] {
        &self.input_buf
    }

    /// The model file.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Also reads the pooled-features output `name` (`[N, dim]`) on every call from now on;
    /// gives its width. A model without it (an I3D converted before the output existed, or
    /// another model) is refused, naming the file and what is missing.
    pub fn enable_features(&mut self, name: &str) -> Result<usize, InferError> {
        let contract = |reason: String| InferError::Contract {
            model: self.path.clone(),
            reason,
        };
        let o = infer::output_spec(&self.session, &self.path, name).map_err(|e| {
            contract(format!(
                "custom actions need the pooled-features output `{name}` (`action.model.features`), \
                 but {e}; the I3D made by an older setup lacks it: run the setup again to rebuild it"
            ))
        })?;
        infer::check_dims(&o, &[("N", None), ("features", None)])
            .map_err(|e| contract(format!("output {e}")))?;
        let dim =
            o.dims[1].ok_or_else(|| contract(format!("output {o} has no fixed width")))? as usize;
        self.features = Some((name.into(), dim));
        Ok(dim)
    }

    /// Class probabilities for each clip, `classes` values per clip.
    pub fn classify(&mut self, clips: &[&Clip]) -> Result<Vec<Vec<f32>>, InferError> {
        Ok(self.classify_with_features(clips)?.0)
    }

    /// Class probabilities for each clip and, when enabled, its features: one inference call.
    #[allow(clippy::type_complexity)]
    pub fn classify_with_features(
        &mut self,
        clips: &[&Clip],
    ) -> Result<(Vec<Vec<f32>>, Option<Vec<Vec<f32>>>), InferError> {
        self.fill(clips);
        self.run_filled(clips.len())
    }

    /// Runs the model on a prepared input tensor `[n, 3, frames, side, side]` (planar RGB
    /// 0..255), for callers that build their own input (occlusion maps).
    #[allow(clippy::type_complexity)]
    pub fn classify_tensor(
        &mut self,
        input: &[f32],
    ) -> Result<(Vec<Vec<f32>>, Option<Vec<Vec<f32>>>), InferError> {
        let per = 3 * self.frames * self.side * self.side;
        if input.is_empty() || !input.len().is_multiple_of(per) {
            return Err(InferError::Run {
                model: self.path.clone(),
                reason: format!(
                    "an input of {} values is not whole clips of {per}",
                    input.len()
                ),
            });
        }
        self.input_buf.clear();
        self.input_buf.extend_from_slice(input);
        self.run_filled(input.len() / per)
    }

    /// Clip length and side the model is fed.
    pub fn clip_shape(&self) -> (usize, usize) {
        (self.frames, self.side)
    }

    #[allow(clippy::type_complexity)]
    fn run_filled(
        &mut self,
        n: usize,
    ) -> Result<(Vec<Vec<f32>>, Option<Vec<Vec<f32>>>), InferError> {
        let shape = [n, 3, self.frames, self.side, self.side];
        let run_err = |reason: String| InferError::Run {
            model: self.path.clone(),
            reason,
        };
        if self.trim_heap {
            infer::release_free_heap();
        }
        let tensor = TensorRef::from_array_view((shape, self.input_buf.as_slice()))
            .map_err(|e| run_err(e.to_string()))?;
        let outputs = self
            .session
            .run_with_options(
                ort::inputs![self.input.as_str() => tensor],
                &*self.run_options,
            )
            .map_err(|e| run_err(e.to_string()))?;
        let value = outputs
            .get(self.output.as_str())
            .ok_or_else(|| run_err(format!("no output `{}`", self.output)))?;
        let (out_shape, data) = value
            .try_extract_tensor::<f32>()
            .map_err(|e| run_err(e.to_string()))?;
        if out_shape.len() != 2
            || out_shape[0] as usize != n
            || out_shape[1] as usize != self.classes
        {
            return Err(run_err(format!(
                "output `{}` has shape {:?}, expected [{}, {}]",
                self.output,
                &out_shape[..],
                n,
                self.classes
            )));
        }
        let probs = data
            .chunks_exact(self.classes)
            .map(<[f32]>::to_vec)
            .collect();
        let Some((name, dim)) = &self.features else {
            return Ok((probs, None));
        };
        let value = outputs
            .get(name.as_str())
            .ok_or_else(|| run_err(format!("no output `{name}`")))?;
        let (f_shape, f) = value
            .try_extract_tensor::<f32>()
            .map_err(|e| run_err(e.to_string()))?;
        if f_shape.len() != 2 || f_shape[0] as usize != n || f_shape[1] as usize != *dim {
            return Err(run_err(format!(
                "output `{name}` has shape {:?}, expected [{n}, {dim}]",
                &f_shape[..]
            )));
        }
        let features = f.chunks_exact(*dim).map(<[f32]>::to_vec).collect();
        Ok((probs, Some(features)))
    }
}

/// Builds the classifier's session and checks the model against the clip settings.
pub fn load(
    env: &ort::environment::Environment,
    path: PathBuf,
    input: &str,
    output: &str,
    frames: usize,
    side: usize,
    opts: &infer::SessionOptions,
) -> Result<(Classifier, usize), InferError> {
    let session = infer::session(env, &path, opts)?;
    let contract = |reason: String| InferError::Contract {
        model: path.clone(),
        reason,
    };
    let i = infer::input_spec(&session, &path, input)?;
    infer::check_dims(
        &i,
        &[
            ("N", None),
            ("channels", Some(3)),
            ("frames", Some(frames as i64)),
            ("height", Some(side as i64)),
            ("width", Some(side as i64)),
        ],
    )
    .map_err(|e| contract(format!("input {e}")))?;
    let o = infer::output_spec(&session, &path, output)?;
    infer::check_dims(&o, &[("N", None), ("classes", None)])
        .map_err(|e| contract(format!("output {e}")))?;
    let classes =
        o.dims[1].ok_or_else(|| contract(format!("output {o} has no fixed class count")))? as usize;
    let model = path.clone();
    let mut c = Classifier::new(session, path, input, output, frames, side, classes)?;
    c.trim_heap = opts.heap_per_call();
    // Dynamic dimensions can still be too small for the network (I3D needs at least 9 frames):
    // one call on a blank clip finds out at start rather than on the first real clip. It costs
    // a whole inference call, so it is made once per model file and clip shape and remembered
    // in the cache folder (a model file that changes is probed again).
    let stamp = probe_stamp(&model, frames, side);
    if !stamp.as_ref().is_some_and(|s| s.is_file()) {
        let blank: super::clip::Crop = vec![0u8; side * side * 3].into();
        let probe = Clip {
            stream: 0,
            index: 0,
            frames: vec![blank; frames],
            start: 0.0,
            end: 0.0,
            captured: None,
            keyframe: None,
        };
        c.classify(&[&probe]).map_err(|e| InferError::Contract {
            model,
            reason: format!("does not accept a {frames}-frame clip of {side}x{side}: {e}"),
        })?;
        if let Some(s) = stamp {
            let written = s
                .parent()
                .map_or(Ok(()), std::fs::create_dir_all)
                .and_then(|()| crate::durable::replace(&s, |w| w.write_all(b"ok\n")));
            if let Err(e) = written {
                tracing::debug!("could not remember the model probe in {}: {e}", s.display());
            }
        }
    }
    Ok((c, classes))
}

/// The folder vigil caches small facts in: `$VIGIL_CACHE`, else `$XDG_CACHE_HOME/vigil`, else
/// `~/.cache/vigil`; None without any of them.
fn cache_dir() -> Option<std::path::PathBuf> {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(std::path::PathBuf::from)
    };
    env("VIGIL_CACHE")
        .or_else(|| env("XDG_CACHE_HOME").map(|d| d.join("vigil")))
        .or_else(|| env("HOME").map(|d| d.join(".cache").join("vigil")))
}

/// Where a passed probe of this model file (its path, size and modification time) with this
/// clip shape is remembered.
fn probe_stamp(model: &Path, frames: usize, side: usize) -> Option<std::path::PathBuf> {
    use sha2::{Digest, Sha256};
    let path = std::fs::canonicalize(model).ok()?;
    let meta = std::fs::metadata(&path).ok()?;
    let mtime = meta
        .modified()
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_nanos();
    let mut h = Sha256::new();
    h.update(path.as_os_str().as_encoded_bytes());
    h.update(meta.len().to_le_bytes());
    h.update(mtime.to_le_bytes());
    h.update((frames as u64).to_le_bytes());
    h.update((side as u64).to_le_bytes());
    let key: String = h.finalize()[..12]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Some(cache_dir()?.join("probed").join(key))
}

/// The classifier stage: the model, how it batches, and the stream ids for its metrics.
pub struct ClassifierStage {
    pub classifier: Classifier,
    pub max_batch: usize,
    /// Longest wait for a batch to fill once its first clip is queued.
    pub max_wait: Duration,
    pub names: Arc<Names>,
    /// Live streams' newest clips.
    pub latest: Arc<Latest>,
    /// Custom actions, scored from the features of the same call (the classifier's features
    /// output must be enabled).
    pub custom: Option<Arc<super::custom::CustomScorer>>,
    /// Which clips to skip while a stream's label is stable (`action.schedule`).
    pub schedule: super::schedule::Schedule,
    /// Pass each clip's crops on to the events stage (the API keeps action events' clips to
    /// explain them).
    pub keep_frames: bool,
    /// `action.nice`: how much lower the classifier's thread runs.
    pub nice: i32,
}

impl Stage for ClassifierStage {
    const STAGE: metrics::Stage = metrics::Stage::Classifier;
    type Input = Receiver<ClipMsg>;
    type Output = Sender<EventMsg>;
    type Done = Result<(), InferError>;

    fn run(self, cx: &Context, rx: Receiver<ClipMsg>, tx: Sender<EventMsg>) -> Self::Done {
        run(self, rx, tx, cx)
    }
}

impl From<Scored> for EventMsg {
    fn from(s: Scored) -> EventMsg {
        match s {
            Scored::Clip {
                stream,
                span,
                probs,
                captured,
                keyframe,
                custom,
                frames,
            } => EventMsg::Clip {
                stream,
                span,
                probs,
                captured,
                keyframe,
                custom,
                frames,
            },
            Scored::Gap(s) => EventMsg::Gap(s),
            Scored::End(e) => EventMsg::End(e),
        }
    }
}

/// The newest unclassified clip of each live stream. A live stream never queues clips for the
/// classifier: a newer clip replaces an older one still waiting, so each batch takes every live
/// stream's freshest clip and the delay from camera to event stays near two inference calls,
/// however slow the model. Only the first clip put in an empty slot sends a
/// [`ClipMsg::Ready`] token through the queue; the token takes whatever is newest when the
/// classifier reaches it. A token carries its epoch and takes only a clip of that epoch, so a
/// clip from before a gap is classified before the gap or not at all.
#[derive(Default)]
pub struct Latest {
    slots: Mutex<HashMap<usize, (u32, Clip)>>,
}

impl Latest {
    pub fn new() -> Latest {
        Latest::default()
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, HashMap<usize, (u32, Clip)>> {
        self.slots
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Puts `clip` of `epoch`. Returns `(token, replaced)`: whether a token must be sent (the
    /// slot was empty, or held a clip of an earlier epoch whose token will not take this one)
    /// and whether an older clip was dropped.
    pub fn put(&self, stream: usize, epoch: u32, clip: Clip) -> (bool, bool) {
        match self.slots().insert(stream, (epoch, clip)) {
            None => (true, false),
            Some((e, _)) => (e != epoch, true),
        }
    }

    /// The waiting clip, if it belongs to `epoch` (a token from before a gap finds nothing).
    pub fn take(&self, stream: usize, epoch: u32) -> Option<Clip> {
        let mut slots = self.slots();
        match slots.get(&stream) {
            Some((e, _)) if *e == epoch => slots.remove(&stream).map(|(_, c)| c),
            _ => None,
        }
    }

    /// Forgets a stream that ended (its slot may hold a clip no token will take).
    pub fn forget(&self, stream: usize) {
        self.slots().remove(&stream);
    }
}

/// Adds a clip (queued, or a live stream's newest) to the batch; gives back a marker.
fn admit(m: ClipMsg, batch: &mut Vec<Clip>, latest: &Latest) -> Option<ClipMsg> {
    match m {
        ClipMsg::Clip(c) => batch.push(c),
        ClipMsg::Ready { stream, epoch } => batch.extend(latest.take(stream, epoch)),
        marker => return Some(marker),
    }
    None
}

/// The worker loop; returns when every sender is gone, or on an inference error. Once the
/// process stops, clips still queued are counted as dropped (reason `shutdown`) instead of
/// classified, so shutdown waits for one inference call at most; gaps and end markers still
/// pass in order.
pub fn run<T: From<Scored>>(
    st: ClassifierStage,
    rx: Receiver<ClipMsg>,
    tx: Sender<T>,
    cx: &Context,
) -> Result<(), InferError> {
    let ClassifierStage {
        classifier: mut c,
        max_batch,
        max_wait,
        names,
        latest,
        custom,
        mut schedule,
        keep_frames,
        nice,
    } = st;
    crate::stage::lower_priority(nice, "classifier");
    let latest = &*latest;
    let (metrics, meter, stop) = (&cx.metrics, &cx.meter, &cx.shutdown);
    let depth = metrics.queue_depth(metrics::Stage::Classifier);
    let seconds = metrics.inference_seconds(&c.name);
    let batch_size = metrics.inference_batch(&c.name);
    let mut batch: Vec<Clip> = Vec::with_capacity(max_batch);
    // Gaps and ends, in arrival order, sent after the batch they follow.
    let mut marks: Vec<Scored> = Vec::new();
    let mark = |m: ClipMsg, schedule: &mut super::schedule::Schedule| match m {
        ClipMsg::Gap(s) => {
            schedule.reset(s);
            Scored::Gap(s)
        }
        ClipMsg::End(e) => {
            latest.forget(e.stream);
            schedule.reset(e.stream);
            Scored::End(e)
        }
        ClipMsg::Clip(_) | ClipMsg::Ready { .. } => unreachable!("clips are batched"),
    };
    // A clip the schedule skips (its stream's label is stable) is counted and let go.
    let skipped = |batch: &mut Vec<Clip>, from: usize, schedule: &mut super::schedule::Schedule| {
        let mut i = from;
        while i < batch.len() {
            if schedule.skip(batch[i].stream) {
                let c = batch.remove(i);
                metrics.clips_skipped(&names.get(c.stream)).inc();
            } else {
                i += 1;
            }
        }
    };
    while let Ok(first) = rx.recv() {
        let marker = admit(first, &mut batch, latest);
        skipped(&mut batch, 0, &mut schedule);
        if let Some(m) = marker {
            marks.push(mark(m, &mut schedule));
        } else if !batch.is_empty() {
            let deadline = Instant::now() + max_wait;
            while batch.len() < max_batch {
                match rx.recv_deadline(deadline) {
                    // A gap or an end closes the batch: it must reach the smoother after its
                    // clips.
                    Ok(m) => {
                        let before = batch.len();
                        let marker = admit(m, &mut batch, latest);
                        skipped(&mut batch, before, &mut schedule);
                        if let Some(m) = marker {
                            marks.push(mark(m, &mut schedule));
                            break;
                        }
                    }
                    Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
                }
            }
        }
        depth.set(rx.len() as i64);
        let drop_all = |batch: &mut Vec<Clip>| {
            for clip in batch.drain(..) {
                metrics
                    .clips_dropped(&names.get(clip.stream), Drop::Shutdown)
                    .inc();
                meter.dropped(Drop::Shutdown);
            }
        };
        if stop.is_cancelled() {
            drop_all(&mut batch);
        }
        if !batch.is_empty() {
            let refs: Vec<&Clip> = batch.iter().collect();
            let started = Instant::now();
            let (probs, features) = match c.classify_with_features(&refs) {
                Ok(p) => {
                    seconds.observe(started.elapsed().as_secs_f64());
                    batch_size.observe(refs.len() as f64);
                    meter.done_batch(refs.len(), started);
                    p
                }
                // Cut short by shutdown: these clips are dropped like the queued ones.
                Err(_) if stop.is_cancelled() => {
                    drop_all(&mut batch);
                    (Vec::new(), None)
                }
                Err(e) => return Err(e),
            };
            let mut customs: Vec<Vec<f32>> = match (&custom, features) {
                (Some(sc), Some(f)) => f.iter().map(|f| sc.score(f)).collect(),
                _ => Vec::new(),
            };
            customs.resize(probs.len(), Vec::new());
            for ((clip, probs), custom) in batch.drain(..).zip(probs).zip(customs) {
                schedule.classified(clip.stream, &probs, &custom);
                let span = Span {
                    start: clip.start,
                    end: clip.end,
                };
                let scored = Scored::Clip {
                    stream: clip.stream,
                    span,
                    probs,
                    captured: clip.captured,
                    keyframe: clip.keyframe,
                    custom,
                    frames: if keep_frames { clip.frames } else { Vec::new() },
                };
                if tx.send(scored.into()).is_err() {
                    return Ok(());
                }
            }
        }
        for m in marks.drain(..) {
            if tx.send(m.into()).is_err() {
                return Ok(());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clip(index: u64) -> Clip {
        Clip {
            stream: 0,
            index,
            frames: Vec::new(),
            start: index as f64,
            end: index as f64 + 1.0,
            captured: None,
            keyframe: None,
        }
    }

    fn taken(latest: &Latest, m: ClipMsg) -> Vec<u64> {
        let mut batch = Vec::new();
        assert!(admit(m, &mut batch, latest).is_none());
        batch.iter().map(|c| c.index).collect()
    }

    #[test]
    fn a_live_stream_keeps_only_its_newest_clip_and_never_mixes_epochs() {
        let l = Latest::new();
        // The first clip needs a token; newer ones replace it without another.
        assert_eq!(l.put(0, 0, clip(1)), (true, false));
        assert_eq!(l.put(0, 0, clip(2)), (false, true));
        assert_eq!(l.put(0, 0, clip(3)), (false, true));
        let token0 = ClipMsg::Ready {
            stream: 0,
            epoch: 0,
        };
        assert_eq!(taken(&l, token0), [3]);
        // After a gap, a clip of the new epoch replaces the old one and needs its own token:
        // the old token finds nothing, the new one takes it.
        assert_eq!(l.put(0, 1, clip(4)), (true, false));
        assert_eq!(l.put(0, 2, clip(5)), (true, true));
        assert!(taken(
            &l,
            ClipMsg::Ready {
                stream: 0,
                epoch: 1
            }
        )
        .is_empty());
        assert_eq!(
            taken(
                &l,
                ClipMsg::Ready {
                    stream: 0,
                    epoch: 2
                }
            ),
            [5]
        );
        assert!(taken(
            &l,
            ClipMsg::Ready {
                stream: 0,
                epoch: 2
            }
        )
        .is_empty());
    }
}
