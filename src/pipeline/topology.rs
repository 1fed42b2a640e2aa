//! The runtime topology: the shared stages run for the whole process, and streams are added and
//! removed while they run.
//!
//! ```text
//!  per stream (added, removed)                         shared (whole run)
//!  src-<id> ──StreamMsg──► act-<id>  ──ClipMsg──► classifier ──┐
//!  (decode)   bounded      face-<id> ──FaceMsg──► faces ───────┼──► events ──► sinks, ring
//!     └──────────── notices, end of a branchless stream ───────┘
//! ```
//! A stream gets a slot number (never reused in a run), a child of the process's shutdown
//! token, and a [`Joined`] message that reaches the events stage ahead of its data. The shared
//! stages keep per-stream state keyed by slot, created on the stream's first message and
//! dropped after its end marker, which travels behind its last item. Removing a stream cancels
//! its token with `Why::Removed`: its source stops, everything it queued is still classified
//! and written, and `stream.down` with reason `removed` comes last; the other streams never
//! wait for it.

use super::stream::Decode;
use super::{EventsStage, Prepared, PreparedStream, Summary};
use crate::action::classifier::{ClassifierStage, ClipMsg, Latest};
use crate::action::ActionSampler;
use crate::annotate::Notes;
use crate::config::{Branch, Config, StreamConfig};
use crate::event::recent::Recent;
use crate::event::{open_sinks, EventMsg, Joined};
use crate::face::sampler::FaceSampler;
use crate::face::worker::{FaceMsg, FaceStage};
use crate::gallery::LiveGallery;
use crate::metrics::{self, Drop, Metrics};
use crate::shutdown::{Shutdown, Why};
use crate::source::open::Opener;
use crate::source::status::StreamStatus;
use crate::source::supervisor::Output;
use crate::source::{Names, StreamMsg};
use crate::stage::{self, Context};
use anyhow::Context as _;
use crossbeam_channel::{bounded, Sender};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Most decoded frames a file stream queues for each branch (at most `runtime.queue_capacity`).
const FILE_FRAME_QUEUE: usize = 2;

/// Most streams one vigil runs at once (`vigil check` refuses a config with more).
pub use crate::config::MAX_STREAMS;

#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    #[error("stream `{}` exists already", crate::echo::echo(.0))]
    Duplicate(String),
    #[error("no stream `{}`", crate::echo::echo(.0))]
    NotFound(String),
    #[error("{MAX_STREAMS} streams run already (the most one vigil runs)")]
    Full,
    #[error("vigil is stopping")]
    Stopping,
    #[error("cannot start a thread: {0}")]
    Spawn(#[from] std::io::Error),
}

/// A running stream.
struct Running {
    slot: usize,
    config: StreamConfig,
    from_api: bool,
    token: Shutdown,
    threads: Vec<JoinHandle<()>>,
    /// Its threads are being started (the id is taken).
    starting: bool,
    status: Arc<StreamStatus>,
    /// A file to annotate after the run: (path, fps hold).
    file: Option<PathBuf>,
}

/// A stream as listed.
pub struct Listed {
    pub config: StreamConfig,
    pub from_api: bool,
    pub status: Arc<StreamStatus>,
}

/// The shared stages' threads.
struct SharedThreads {
    events: JoinHandle<Summary>,
    classifier: Option<JoinHandle<Result<(), crate::infer::InferError>>>,
    faces: Option<JoinHandle<Result<(), crate::infer::InferError>>>,
    watchers: Vec<JoinHandle<()>>,
}

/// Choices that are not in the config file.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Draw progress bars for files on stderr when it is a terminal.
    pub progress: bool,
    /// Write an annotated copy of every (unlooped) file stream into this folder.
    pub annotate: Option<PathBuf>,
    /// Keep running when every stream has ended (the API may add more).
    pub serve: bool,
}

pub struct Topology {
    config: Arc<Config>,
    metrics: Arc<Metrics>,
    stop: Shutdown,
    /// Cancelled when the last stream of a run without an API has ended (a child of `stop`).
    idle: Shutdown,
    opener: Arc<dyn Opener>,
    ev_tx: Mutex<Option<Sender<EventMsg>>>,
    clip_tx: Mutex<Option<Sender<ClipMsg>>>,
    face_tx: Mutex<Option<Sender<FaceMsg>>>,
    latest: Arc<Latest>,
    names: Arc<Names>,
    notes: Option<Arc<Notes>>,
    recent: Option<Arc<Recent>>,
    gallery: Option<Arc<LiveGallery>>,
    progress: MultiProgress,
    progress_on: bool,
    streams: Mutex<HashMap<String, Running>>,
    /// Streams whose source is still running (for `idle`).
    active: Arc<AtomicUsize>,
    next_slot: AtomicUsize,
    shared: Mutex<Option<SharedThreads>>,
    ended: Mutex<Vec<Running>>,
    /// Cancelled by `finish` once inference has stopped (ends the inference canceller).
    finished: Shutdown,
    opts: RunOptions,
}

impl Topology {
    /// Starts the shared stages (events, classifier, face worker) of a prepared config; streams
    /// are added with [`Topology::add`].
    pub fn start(
        p: &mut Prepared,
        opts: RunOptions,
        metrics: Arc<Metrics>,
        stop: Shutdown,
        opener: Arc<dyn Opener>,
    ) -> anyhow::Result<Arc<Topology>> {
        let cfg = Arc::new(p.loaded.config.clone());
        let mut branches = Vec::new();
        let mut models = Vec::new();
        if let Some(a) = &p.action {
            branches.push(Branch::Action);
            models.push(a.classifier.name.clone());
        }
        if let Some(f) = &p.faces {
            branches.push(Branch::Faces);
            models.extend([
                f.models.detector_name.clone(),
                f.models.embedder_name.clone(),
            ]);
        }
        let model_refs: Vec<&str> = models.iter().map(String::as_str).collect();
        metrics.init_shared(&branches, &model_refs, crate::event::EventType::ALL);
        let sink_names: Vec<&'static str> = cfg.sinks.iter().map(|s| s.name()).collect();
        metrics.init_sinks(&sink_names);
        if let Some(dir) = &opts.annotate {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let notes = opts.annotate.as_ref().map(|_| Arc::new(Notes::new()));
        let sinks = open_sinks(&cfg.sinks, |path| p.loaded.resolve(path), &metrics)?;
        let cap = cfg.runtime.queue_capacity;
        let names = Arc::new(Names::default());
        // With the action model, the API keeps the clips of recent action events to explain.
        let event_clips = |a: &crate::config::ApiConfig| match &p.action {
            Some(_) => a.event_clips,
            None => 0,
        };
        let recent = cfg
            .api
            .as_ref()
            .map(|a| Arc::new(Recent::new(a.event_ring).with_clips(event_clips(a))));
        let keep_frames = recent.as_ref().is_some_and(|r| r.clips.enabled());

        // Events: enough room that stream and segment events never wait on a slow sink long.
        let (ev_tx, ev_rx) = bounded::<EventMsg>(cap * 16);
        let events = EventsStage {
            sinks,
            labels: p
                .action
                .as_ref()
                .map(|a| a.labels.clone())
                .unwrap_or_default(),
            smoother: cfg.action.smoother.clone(),
            source: p
                .action
                .as_ref()
                .map_or_else(|| "model".into(), |a| a.source.clone()),
            custom_labels: p
                .action
                .as_ref()
                .and_then(|a| a.custom.as_ref())
                .map(|c| Arc::new(c.names.clone()))
                .unwrap_or_default(),
            custom_only: cfg.action.custom.only,
            notes: notes.clone(),
            action_snapshots: cfg.action.snapshots.as_ref().map(|d| p.loaded.resolve(d)),
            face_snapshots: cfg.faces.snapshots.as_ref().map(|d| p.loaded.resolve(d)),
            recent: recent.clone(),
            names: names.clone(),
            unknowns: p.faces.as_ref().and_then(|f| f.gallery.unknowns().cloned()),
        };
        let shared_cx =
            |stage, name: &str| Context::new(stage, name.into(), None, &metrics, stop.clone());
        let events = stage::spawn(
            events,
            shared_cx(metrics::Stage::Events, "events"),
            ev_rx,
            (),
        )?;

        let latest = Arc::new(Latest::new());
        let mut cancel = Vec::new();
        let (mut clip_tx, mut classifier) = (None, None);
        if let Some(a) = p.action.take() {
            // Room for one batch waiting while another runs (batching across streams needs no
            // more), and for the live streams' tokens (two each at most: one per epoch around a
            // gap). A live stream never waits for room: with none, its clip is dropped (see
            // `action::StreamBranch::queue`).
            let live = p.streams.iter().filter(|s| s.plan.leaky()).count();
            let room = if cfg.api.is_some() {
                16
            } else {
                2 * live.min(64)
            };
            let (tx, rx) = bounded::<ClipMsg>(cfg.action.batch().max(2) + room);
            cancel.push(a.classifier.canceller());
            let st = ClassifierStage {
                classifier: a.classifier,
                max_batch: cfg.action.batch(),
                max_wait: Duration::from_millis(cfg.action.max_wait_ms),
                names: names.clone(),
                latest: latest.clone(),
                custom: a.custom.clone(),
                schedule: crate::action::schedule::Schedule::from_config(&cfg.action),
                keep_frames,
                nice: cfg.action.nice,
            };
            let cx = shared_cx(metrics::Stage::Classifier, "classifier");
            classifier = Some(stage::spawn(st, cx, rx, ev_tx.clone())?);
            clip_tx = Some(tx);
        }
        let (mut face_tx, mut faces, mut gallery) = (None, None, None);
        let mut watchers = Vec::new();
        if let Some(f) = p.faces.take() {
            let (tx, rx) = bounded::<FaceMsg>(cap);
            let st = FaceStage {
                models: f.models,
                index: f.gallery.index(),
                cfg: cfg.faces.clone(),
                snapshots: cfg.faces.snapshots.is_some(),
                names: names.clone(),
                notes: notes.clone(),
            };
            let cx = shared_cx(metrics::Stage::Faces, "faces");
            faces = Some(stage::spawn(st, cx, rx, ev_tx.clone())?);
            face_tx = Some(tx);
            // Another process (`vigil gallery enroll`) may change the file while we run.
            if let Some(r) = f.gallery.replica() {
                r.set_gauges(metrics.gallery_store());
            }
            watchers.push(f.gallery.watch(Duration::from_millis(500), stop.child())?);
            gallery = Some(f.gallery);
        }
        // On shutdown, an inference call in progress is cut short rather than waited for.
        let finished = stop.child();
        {
            let (stop, finished) = (stop.clone(), finished.clone());
            watchers.push(std::thread::Builder::new().name("shutdown".into()).spawn(
                move || {
                    finished.wait();
                    if stop.is_cancelled() {
                        for c in &cancel {
                            let _ = c.terminate();
                        }
                    }
                },
            )?);
        }
        let progress = MultiProgress::with_draw_target(
            if opts.progress && std::io::IsTerminal::is_terminal(&std::io::stderr()) {
                indicatif::ProgressDrawTarget::stderr()
            } else {
                indicatif::ProgressDrawTarget::hidden()
            },
        );
        let idle = stop.child();
        Ok(Arc::new(Topology {
            config: cfg,
            metrics,
            idle,
            stop,
            opener,
            ev_tx: Mutex::new(Some(ev_tx)),
            clip_tx: Mutex::new(clip_tx),
            face_tx: Mutex::new(face_tx),
            latest,
            names,
            notes,
            recent,
            gallery,
            progress,
            progress_on: opts.progress,
            streams: Mutex::new(HashMap::new()),
            active: Arc::new(AtomicUsize::new(0)),
            next_slot: AtomicUsize::new(0),
            shared: Mutex::new(Some(SharedThreads {
                events,
                classifier,
                faces,
                watchers,
            })),
            ended: Mutex::new(Vec::new()),
            finished,
            opts,
        }))
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn recent(&self) -> Option<&Arc<Recent>> {
        self.recent.as_ref()
    }

    pub fn gallery(&self) -> Option<&Arc<LiveGallery>> {
        self.gallery.as_ref()
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn shutdown(&self) -> &Shutdown {
        &self.stop
    }

    fn streams(&self) -> std::sync::MutexGuard<'_, HashMap<String, Running>> {
        self.streams.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts a stream's sub-graph: its supervisor and one sampler per branch.
    pub fn add(&self, s: PreparedStream) -> Result<Arc<StreamStatus>, TopologyError> {
        if self.stop.is_cancelled() {
            return Err(TopologyError::Stopping);
        }
        let ev_tx: Sender<EventMsg> = self
            .ev_tx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or(TopologyError::Stopping)?;
        let clip_tx: Option<Sender<ClipMsg>> = self
            .clip_tx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .filter(|_| s.action);
        let face_tx: Option<Sender<FaceMsg>> = self
            .face_tx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .filter(|_| s.faces);
        let id: Arc<str> = Arc::from(s.id.as_str());
        let mut branches = Vec::new();
        if clip_tx.is_some() {
            branches.push(Branch::Action);
        }
        if face_tx.is_some() {
            branches.push(Branch::Faces);
        }
        let m = &self.metrics;
        let status = Arc::new(StreamStatus::new(
            id.clone(),
            m.frames_decoded(&id),
            branches
                .iter()
                .map(|&b| m.frames_dropped(&id, b, Drop::QueueFull))
                .collect(),
        ));
        let token = self.stop.child();
        let slot = self.next_slot.fetch_add(1, Ordering::Relaxed);
        let file = s.file().filter(|_| !s.plan.looped).map(|p| p.to_path_buf());
        // Reserve the id, so the rest (which may wait on a full events queue) runs unlocked.
        {
            let mut streams = self.streams();
            if let Some(old) = streams.get(&s.id) {
                if old.starting || !old.threads.iter().all(JoinHandle::is_finished) {
                    return Err(TopologyError::Duplicate(s.id));
                }
                // A stream that ended by itself (a file) may be added again.
                let mut old = streams.remove(&s.id).expect("present");
                for t in old.threads.drain(..) {
                    let _ = t.join();
                }
                if old.file.is_some() {
                    self.ended
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(old);
                }
            }
            if streams.len() >= MAX_STREAMS {
                return Err(TopologyError::Full);
            }
            streams.insert(
                s.id.clone(),
                Running {
                    slot,
                    config: s.config.clone(),
                    from_api: s.from_api,
                    token: token.clone(),
                    threads: Vec::new(),
                    starting: true,
                    status: status.clone(),
                    file,
                },
            );
        }
        let threads = match self.spawn_stream(
            s, slot, &id, &branches, &status, &token, ev_tx, clip_tx, face_tx,
        ) {
            Ok(t) => t,
            Err(e) => {
                token.cancel(Why::Removed);
                self.streams().remove(&*id);
                return Err(e);
            }
        };
        let mut streams = self.streams();
        match streams.get_mut(&*id) {
            Some(r) if r.slot == slot => {
                r.threads = threads;
                r.starting = false;
            }
            // Removed while starting: its token is cancelled, its threads end by themselves.
            _ => {
                drop(streams);
                for t in threads {
                    let _ = t.join();
                }
            }
        }
        Ok(status)
    }

    /// Starts the threads of a stream whose id is reserved.
    #[allow(clippy::too_many_arguments)]
    fn spawn_stream(
        &self,
        s: PreparedStream,
        slot: usize,
        id: &Arc<str>,
        branches: &[Branch],
        status: &Arc<StreamStatus>,
        token: &Shutdown,
        ev_tx: Sender<EventMsg>,
        clip_tx: Option<Sender<ClipMsg>>,
        face_tx: Option<Sender<FaceMsg>>,
    ) -> Result<Vec<JoinHandle<()>>, TopologyError> {
        self.metrics.init_stream(id, branches);
        if s.plan.motion.is_some() {
            self.metrics.init_motion(id, branches);
        }
        self.names.insert(slot, id.clone(), status.preview.clone());
        let mut plan = s.plan;
        plan.index = slot;
        let leaky = plan.leaky();
        // A live source has no end to show progress towards; neither has a looped file.
        let bar = if leaky || plan.looped || s.from_api || !self.progress_on {
            ProgressBar::hidden()
        } else {
            self.progress.add(
                ProgressBar::new(s.info.frame_count)
                    .with_style(
                        ProgressStyle::with_template(
                            "{prefix:>12} [{bar:30}] {pos}/{len} frames  {per_sec}  eta {eta}",
                        )
                        .expect("valid template")
                        .progress_chars("=> "),
                    )
                    .with_prefix(s.id.clone()),
            )
        };
        let joined = Joined {
            stream: slot,
            name: id.clone(),
            branches: branches.len(),
            progress: bar.clone(),
            fps: s.info.fps,
            status: status.clone(),
        };
        if ev_tx.send(EventMsg::Joined(joined)).is_err() {
            return Err(TopologyError::Stopping);
        }
        let cx = |stage, prefix: &str| {
            Context::new(
                stage,
                format!("{prefix}-{id}"),
                Some((slot, id.clone())),
                &self.metrics,
                token.clone(),
            )
        };
        // A file waits for room instead of dropping frames, so a longer queue behind its
        // decoder only holds more decoded frames (2.7 MB each at 720p): the branches' own
        // queues downstream already keep their stage fed.
        let cap = if leaky {
            self.config.runtime.queue_capacity
        } else {
            self.config.runtime.queue_capacity.min(FILE_FRAME_QUEUE)
        };
        let mut outputs = Vec::new();
        let mut queue = |branch| {
            let (tx, rx) = bounded::<StreamMsg>(cap);
            outputs.push(Output {
                tx,
                rx: leaky.then(|| rx.clone()),
                branch,
            });
            rx
        };
        let mut threads = Vec::new();
        if let Some(tx) = clip_tx {
            let st = ActionSampler {
                cfg: self.config.action.clone(),
                live: leaky.then(|| self.latest.clone()),
            };
            let rx = queue(Branch::Action);
            threads.push(stage::spawn(
                st,
                cx(metrics::Stage::ActionSampler, "act"),
                rx,
                tx,
            )?);
        }
        if let Some(tx) = face_tx {
            let st = FaceSampler {
                fps: self.config.faces.sample_fps,
                live: leaky,
            };
            let rx = queue(Branch::Faces);
            threads.push(stage::spawn(
                st,
                cx(metrics::Stage::FaceSampler, "face"),
                rx,
                tx,
            )?);
        }
        let decode = Decode {
            plan,
            opener: self.opener.clone(),
            status: status.clone(),
            // With the action branch, progress follows classified clips; otherwise frames.
            progress: (!branches.contains(&Branch::Action)).then_some(bar),
        };
        self.active.fetch_add(1, Ordering::SeqCst);
        let active = self.active.clone();
        let idle = (!self.opts.serve).then(|| self.idle.clone());
        let src = std::thread::Builder::new()
            .name(format!("src-{id}"))
            .spawn({
                let cx = cx(metrics::Stage::Decode, "src");
                move || {
                    let _span = tracing::info_span!("stream", stream = %cx.stream().1).entered();
                    crate::stage::Stage::run(decode, &cx, (), (outputs, ev_tx));
                    if active.fetch_sub(1, Ordering::SeqCst) == 1 {
                        if let Some(idle) = idle {
                            idle.cancel(Why::Exit);
                        }
                    }
                }
            });
        match src {
            Ok(h) => threads.push(h),
            Err(e) => {
                self.active.fetch_sub(1, Ordering::SeqCst);
                // Samplers already started end when their queue's sender (in `outputs`) is
                // dropped with the closure that failed to start.
                return Err(e.into());
            }
        }
        Ok(threads)
    }

    /// Removes a stream: its source stops, what it queued is still processed, and this returns
    /// once its `stream.down` (reason `removed`) is written (or after `wait`).
    pub fn remove(&self, id: &str, wait: Duration) -> Result<(), TopologyError> {
        let running = self
            .streams()
            .remove(id)
            .ok_or_else(|| TopologyError::NotFound(id.to_string()))?;
        running.token.cancel(Why::Removed);
        for t in running.threads {
            let _ = t.join();
        }
        running.status.ended.sleep(wait);
        tracing::info!(stream = id, slot = running.slot, "stream removed");
        Ok(())
    }

    /// Every stream, in id order.
    pub fn list(&self) -> Vec<Listed> {
        let mut v: Vec<Listed> = self
            .streams()
            .values()
            .map(|r| Listed {
                config: r.config.clone(),
                from_api: r.from_api,
                status: r.status.clone(),
            })
            .collect();
        v.sort_by(|a, b| a.config.id.cmp(&b.config.id));
        v
    }

    pub fn get(&self, id: &str) -> Option<Listed> {
        self.streams().get(id).map(|r| Listed {
            config: r.config.clone(),
            from_api: r.from_api,
            status: r.status.clone(),
        })
    }

    /// Blocks until every stream has ended (a run without `serve`) or the process stops.
    pub fn wait(&self) {
        if self.active.load(Ordering::SeqCst) == 0 && !self.opts.serve {
            return;
        }
        if self.opts.serve {
            self.stop.wait();
        } else {
            self.idle.wait();
        }
    }

    /// Ends the run: stops every stream (at once on shutdown; a finished run has none left),
    /// lets the shared stages drain, closes the sinks, writes annotated video, and reports.
    pub fn finish(&self) -> anyhow::Result<Summary> {
        let mut running: Vec<Running> = self.streams().drain().map(|(_, r)| r).collect();
        running.extend(
            self.ended
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .drain(..),
        );
        let mut panicked = false;
        let mut files = Vec::new();
        for r in running.iter_mut() {
            for t in r.threads.drain(..) {
                panicked |= t.join().is_err();
            }
            if let Some(f) = r.file.take() {
                files.push((r.slot, r.config.id.clone(), f));
            }
        }
        if panicked {
            anyhow::bail!("a stream thread panicked");
        }
        // The workers hold their own clones; dropping these lets each channel close when its
        // producers have finished.
        self.clip_tx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        self.face_tx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        self.ev_tx.lock().unwrap_or_else(|p| p.into_inner()).take();
        let Some(shared) = self.shared.lock().unwrap_or_else(|p| p.into_inner()).take() else {
            anyhow::bail!("the run was finished already");
        };
        let mut errors = Vec::new();
        for (name, h) in [("classifier", shared.classifier), ("face", shared.faces)] {
            match h.map(|h| h.join()) {
                None | Some(Ok(Ok(()))) => {}
                Some(Ok(Err(e))) => errors.push(e.to_string()),
                Some(Err(_)) => errors.push(format!("the {name} thread panicked")),
            }
        }
        let mut summary = shared
            .events
            .join()
            .map_err(|_| anyhow::anyhow!("the events thread panicked"))?;
        self.finished.cancel(Why::Exit);
        // The gallery watcher stops with the process token.
        self.stop.cancel(Why::Exit);
        for w in shared.watchers {
            let _ = w.join();
        }
        if let (Some(notes), Some(dir)) = (&self.notes, &self.opts.annotate) {
            let fps = self.config.faces.sample_fps;
            let hold = if fps > 0.0 { 1.5 / fps } else { 0.5 };
            files.sort();
            for (slot, id, file) in &files {
                let out = crate::annotate::output_path(dir, id);
                match crate::annotate::render(file, notes, *slot, hold, &out) {
                    Ok(frames) => tracing::info!("annotated {frames} frames: {}", out.display()),
                    Err(e) => {
                        tracing::error!("cannot annotate {id}: {e}");
                        summary.stream_errors.push(format!("annotating {id}: {e}"));
                    }
                }
            }
        }
        summary.inference_error = (!errors.is_empty()).then(|| errors.join("; "));
        summary.clips = self.metrics.stage_processed(metrics::Stage::Classifier);
        summary.skipped = self.metrics.clips_skipped_total();
        summary.face_frames = self.metrics.stage_processed(metrics::Stage::Faces);
        Ok(summary)
    }
}

#[cfg(test)]
mod tests {
    //! The topology without cameras, models or the binary: sources come from a fake opener.
    use super::*;
    use crate::config::LiveConfig;
    use crate::event::recent::Recent;
    use crate::source::supervisor::SourcePlan;
    use crate::source::url::SourceKind;
    use crate::source::{FrameReader, LiveSource, LostFrame, SourceError, VideoInfo};
    use opencv::core::{Mat, Scalar, CV_8UC3};
    use std::path::Path;

    fn image() -> Mat {
        Mat::new_rows_cols_with_default(4, 4, CV_8UC3, Scalar::all(7.0)).unwrap()
    }

    /// Files of `frames` frames; cameras that give a frame every 2 ms forever.
    struct Fake {
        frames: u64,
    }

    struct FakeFile {
        left: u64,
        t: f64,
    }

    impl FrameReader for FakeFile {
        fn next_frame(&mut self) -> Result<Option<(f64, Mat)>, SourceError> {
            if self.left == 0 {
                return Ok(None);
            }
            self.left -= 1;
            self.t += 0.04;
            Ok(Some((self.t, image())))
        }
        fn info(&self) -> VideoInfo {
            VideoInfo {
                width: 4,
                height: 4,
                fps: 25.0,
                frame_count: 0,
            }
        }
        fn finish(&self, _: u64) -> Result<(), SourceError> {
            Ok(())
        }
    }

    struct FakeCamera;

    impl LiveSource for FakeCamera {
        fn info(&self) -> VideoInfo {
            VideoInfo {
                width: 4,
                height: 4,
                fps: 0.0,
                frame_count: 0,
            }
        }
        fn read(&mut self, _: Duration) -> Result<Mat, LostFrame> {
            std::thread::sleep(Duration::from_millis(2));
            Ok(image())
        }
    }

    impl Opener for Fake {
        fn file(&self, _: &Path) -> Result<Box<dyn FrameReader>, SourceError> {
            Ok(Box::new(FakeFile {
                left: self.frames,
                t: 0.0,
            }))
        }
        fn live(&self, _: &SourceKind, _: &LiveConfig) -> Result<Box<dyn LiveSource>, SourceError> {
            Ok(Box::new(FakeCamera))
        }
    }

    fn prepared(api: bool) -> Prepared {
        let text = format!(
            "streams: []\n{}action: {{enabled: false}}\nfaces: {{enabled: false}}\nsinks: []\n",
            if api {
                "api: {listen: '127.0.0.1:0'}\n"
            } else {
                ""
            }
        );
        let loaded = crate::config::parse(Path::new("t.yaml"), &text).unwrap();
        Prepared {
            loaded,
            streams: vec![],
            shard: crate::cluster::Shard::single(),
            elsewhere: vec![],
            action: None,
            faces: None,
        }
    }

    fn stream(id: &str, kind: SourceKind) -> PreparedStream {
        PreparedStream {
            id: id.into(),
            action: false,
            faces: false,
            plan: SourcePlan {
                index: 0,
                id: id.into(),
                kind,
                realtime: false,
                looped: false,
                live: LiveConfig::default(),
                motion: None,
            },
            info: VideoInfo {
                width: 4,
                height: 4,
                fps: 25.0,
                frame_count: 0,
            },
            config: StreamConfig {
                id: id.into(),
                url: "x".into(),
                branches: None,
                realtime: false,
                looped: false,
                motion: None,
            },
            from_api: true,
        }
    }

    fn camera(id: &str) -> PreparedStream {
        stream(id, SourceKind::Network(format!("rtsp://127.0.0.1:9/{id}")))
    }

    fn events(r: &Recent) -> Vec<(String, String, String)> {
        r.latest(10_000)
            .iter()
            .map(|k| {
                let v: serde_json::Value = serde_json::from_str(&k.json).unwrap();
                (
                    k.stream.clone(),
                    k.kind.as_str().to_string(),
                    v["reason"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    }

    fn start(p: &mut Prepared, serve: bool, frames: u64) -> Arc<Topology> {
        let opts = RunOptions {
            serve,
            ..Default::default()
        };
        let metrics = Arc::new(Metrics::new());
        Topology::start(p, opts, metrics, Shutdown::new(), Arc::new(Fake { frames })).unwrap()
    }

    #[test]
    fn a_removed_stream_ends_with_reason_removed_while_the_other_keeps_decoding() {
        let mut p = prepared(true);
        let topo = start(&mut p, true, 0);
        topo.add(camera("a")).unwrap();
        topo.add(camera("b")).unwrap();
        assert!(matches!(
            topo.add(camera("a")),
            Err(TopologyError::Duplicate(_))
        ));
        let b = topo.metrics().frames_decoded("b");
        let until = std::time::Instant::now() + Duration::from_secs(10);
        while b.get() < 20 && std::time::Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
        let before = b.get();
        topo.remove("a", Duration::from_secs(10)).unwrap();
        assert!(matches!(
            topo.remove("a", Duration::from_secs(1)),
            Err(TopologyError::NotFound(_))
        ));
        let ev = events(topo.recent().unwrap());
        assert!(
            ev.contains(&("a".into(), "stream.down".into(), "removed".into())),
            "{ev:?}"
        );
        // b went on decoding across the removal, and is still listed and up.
        let until = std::time::Instant::now() + Duration::from_secs(10);
        while b.get() <= before + 10 && std::time::Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(b.get() > before + 10, "{} then {}", before, b.get());
        let listed: Vec<String> = topo.list().iter().map(|l| l.config.id.clone()).collect();
        assert_eq!(listed, ["b"]);
        // The removed id can be used again.
        topo.add(camera("a")).unwrap();
        topo.shutdown().cancel(Why::Exit);
        topo.wait();
        let summary = topo.finish().unwrap();
        let ev = events(topo.recent().unwrap());
        let downs: Vec<_> = ev.iter().filter(|e| e.1 == "stream.down").collect();
        assert_eq!(downs.len(), 3, "{ev:?}");
        assert!(summary.ok());
    }

    #[test]
    fn a_run_without_the_api_ends_when_its_files_end_and_loses_no_frame() {
        let mut p = prepared(true);
        let topo = start(&mut p, false, 50);
        for id in ["f1", "f2", "f3"] {
            topo.add(stream(id, SourceKind::File("x.mp4".into())))
                .unwrap();
        }
        topo.wait();
        let summary = topo.finish().unwrap();
        assert_eq!(summary.frames, 150);
        let ev = events(topo.recent().unwrap());
        for id in ["f1", "f2", "f3"] {
            assert!(ev.contains(&(id.into(), "stream.up".into(), "opened".into())));
            assert!(ev.contains(&(id.into(), "stream.down".into(), "end_of_file".into())));
        }
    }
}
