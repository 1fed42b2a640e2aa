//! Wiring: [`prepare`] checks a config against the real files and models (what `vigil check`
//! runs), [`run`] starts the threads and waits for them.
//!
//! ```text
//! src-<id> ──StreamMsg──► act-<id> ──ClipMsg──► classifier ──► events ──► sinks
//!  (decode)   bounded     (sample,    bounded   (batches all   (smoothers,
//!                          crop, clip)           streams)        stream events)
//! ```
//! Every channel is bounded and every send blocks: recorded files lose nothing. Each message
//! type carries its stream's end marker behind its last item, so a stage never has to guess
//! whether more is coming.

pub mod annotate;
mod events;
mod prepare;

pub use events::EventMsg;
pub use prepare::{load_faces, prepare, Prepared, PreparedAction, PreparedFaces, PreparedStream};

use crate::action::sampler::Sampler;
use crate::action::{self, classifier};
use crate::event::open_sinks;
use crate::face::{self, worker::FaceMsg};
use crate::metrics::{self, Metrics, StageMeter, StreamStage};
use crate::source::supervisor::{self, Notice, Output};
use crate::source::{Frame, StreamMsg};
use anyhow::Context;
use crossbeam_channel::bounded;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

/// Choices that are not in the config file.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Draw progress bars for files on stderr when it is a terminal.
    pub progress: bool,
    /// Write an annotated copy of every (unlooped) file stream into this folder.
    pub annotate: Option<std::path::PathBuf>,
}

/// What a finished run reports.
#[derive(Debug, Default)]
pub struct Summary {
    pub events: u64,
    /// Frames read from all sources.
    pub frames: u64,
    /// One message per stream that ended in an error.
    pub stream_errors: Vec<String>,
    pub sink_errors: u64,
    /// Set when the inference worker failed.
    pub inference_error: Option<String>,
    /// Clips the classifier scored.
    pub clips: u64,
}

impl Summary {
    pub fn ok(&self) -> bool {
        self.stream_errors.is_empty() && self.sink_errors == 0 && self.inference_error.is_none()
    }
}

/// Starts a stage's thread with its [`StageMeter`]: the runner, not the stage, creates the
/// per-stage metrics, so every stage has them.
fn spawn_stage<T: Send + 'static>(
    name: String,
    stage: &'static str,
    metrics: &Metrics,
    f: impl FnOnce(StageMeter) -> T + Send + 'static,
) -> anyhow::Result<thread::JoinHandle<T>> {
    let meter = metrics.stage(stage);
    spawn(name, move || f(meter))
}

fn spawn<T: Send + 'static>(
    name: String,
    f: impl FnOnce() -> T + Send + 'static,
) -> anyhow::Result<thread::JoinHandle<T>> {
    thread::Builder::new()
        .name(name.clone())
        .spawn(f)
        .with_context(|| format!("cannot start thread {name}"))
}

/// Runs the pipeline until every source has ended (or `stop` is set) and everything queued has
/// reached the sinks.
pub fn run(p: Prepared, opts: &RunOptions, stop: Arc<AtomicBool>) -> anyhow::Result<Summary> {
    let cfg = &p.loaded.config;
    let metrics = Arc::new(Metrics::new());
    let ids: Vec<&str> = p.streams.iter().map(|s| s.id.as_str()).collect();
    let mut stages = Vec::new();
    let mut models = Vec::new();
    if let Some(a) = &p.action {
        stages.push("action");
        models.push(a.classifier.name.clone());
    }
    if let Some(f) = &p.faces {
        stages.push("faces");
        models.extend([
            f.models.detector_name.clone(),
            f.models.embedder_name.clone(),
        ]);
    }
    let model_refs: Vec<&str> = models.iter().map(String::as_str).collect();
    metrics.init_streams(&ids, &stages, &model_refs);
    let sink_names: Vec<&str> = cfg.sinks.iter().map(|s| s.name()).collect();
    metrics.init_sinks(&sink_names);
    for stage in metrics::STAGES {
        metrics.stage(stage);
    }
    // Each branch that looks at a stream sends one end marker for it.
    let branches: Vec<usize> = p
        .streams
        .iter()
        .map(|s| {
            usize::from(s.action && p.action.is_some()) + usize::from(s.faces && p.faces.is_some())
        })
        .collect();
    let _server = if cfg.metrics.enabled {
        let server = metrics::serve(metrics.clone(), &cfg.metrics.listen)?;
        tracing::info!("metrics on http://{}/metrics", server.addr);
        Some(server)
    } else {
        None
    };
    let notes = match &opts.annotate {
        Some(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            Some(Arc::new(annotate::Notes::new(p.streams.len())))
        }
        None => None,
    };
    let to_annotate: Vec<(usize, String, std::path::PathBuf)> = p
        .streams
        .iter()
        .enumerate()
        .filter(|(_, s)| !s.plan.looped)
        .filter_map(|(i, s)| s.file().map(|f| (i, s.id.clone(), f.to_path_buf())))
        .collect();
    let sinks = open_sinks(&cfg.sinks, |path| p.loaded.resolve(path), &metrics)?;
    let cap = cfg.runtime.queue_capacity;

    // Events: enough room that stream and segment events never wait on a slow sink for long.
    let (ev_tx, ev_rx) = bounded::<EventMsg>(cap * 16);
    let names: Vec<String> = p.streams.iter().map(|s| s.id.clone()).collect();
    let labels = p
        .action
        .as_ref()
        .map(|a| a.labels.clone())
        .unwrap_or_default();
    // Progress is what has been processed, not what has been decoded: decoding runs ahead by
    // the queues' depth, which on a short file is all of it.
    let progress =
        MultiProgress::with_draw_target(if opts.progress && std::io::stderr().is_terminal() {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        });
    let style = ProgressStyle::with_template(
        "{prefix:>12} [{bar:30}] {pos}/{len} frames  {per_sec}  eta {eta}",
    )
    .expect("valid template")
    .progress_chars("=> ");
    let bars: Vec<events::Progress> = p
        .streams
        .iter()
        .map(|s| events::Progress {
            // A live source has no end to show progress towards; neither has a looped file.
            bar: if s.plan.leaky() || s.plan.looped {
                ProgressBar::hidden()
            } else {
                progress.add(
                    ProgressBar::new(s.info.frame_count)
                        .with_style(style.clone())
                        .with_prefix(s.id.clone()),
                )
            },
            fps: s.info.fps,
        })
        .collect();
    // With the action branch, progress follows classified clips; otherwise decoded frames.
    let decode_bars: Vec<Option<ProgressBar>> = bars
        .iter()
        .zip(&p.streams)
        .map(|(b, s)| (!s.action || p.action.is_none()).then(|| b.bar.clone()))
        .collect();
    let events = {
        let metrics = metrics.clone();
        let setup = events::Setup {
            sinks,
            names,
            labels,
            progress: bars,
            branches,
            smoother: cfg.action.smoother.clone(),
            notes: notes.clone(),
            snapshots: cfg.action.snapshots.as_ref().map(|d| p.loaded.resolve(d)),
        };
        let m = metrics.clone();
        spawn_stage("events".into(), "events", &m, move |meter| {
            events::run(ev_rx, setup, &metrics, &meter)
        })?
    };

    let mut handles = Vec::new();
    let mut clip_tx = None;
    let mut classifier_handle = None;
    let mut cancel = Vec::new();
    let latest = Arc::new(classifier::Latest::new(p.streams.len()));
    if let Some(a) = p.action {
        // Files: room for one batch waiting while another runs (batching across streams needs
        // no more). Live streams: room for their tokens (two each at most: one per epoch
        // around a gap), so that sending one never waits.
        let live = p.streams.iter().filter(|s| s.plan.leaky()).count();
        let (tx, rx) = bounded::<classifier::ClipMsg>(cfg.action.max_batch.max(2) + 2 * live);
        let how = classifier::Batching {
            max_batch: cfg.action.max_batch,
            max_wait: Duration::from_millis(cfg.action.max_wait_ms),
            stream_ids: p.streams.iter().map(|s| s.id.clone()).collect(),
            latest: latest.clone(),
        };
        let (ev, m, stop) = (ev_tx.clone(), metrics.clone(), stop.clone());
        cancel.push(a.classifier.canceller());
        classifier_handle = Some(spawn_stage(
            "classifier".into(),
            "classifier",
            &metrics,
            move |meter| classifier::run(a.classifier, rx, ev, &how, &m, &stop, &meter),
        )?);
        clip_tx = Some(tx);
    }
    let mut face_tx = None;
    let mut face_handle = None;
    if let Some(f) = p.faces {
        let (tx, rx) = bounded::<FaceMsg>(cap);
        let stage = face::worker::FaceStage {
            models: f.models,
            index: f.index,
            cfg: cfg.faces.clone(),
            snapshots: cfg.faces.snapshots.as_ref().map(|d| p.loaded.resolve(d)),
            names: p.streams.iter().map(|s| s.id.clone()).collect(),
            notes: notes.clone(),
        };
        let (ev, m, stop) = (ev_tx.clone(), metrics.clone(), stop.clone());
        face_handle = Some(spawn_stage(
            "faces".into(),
            "faces",
            &metrics,
            move |meter| face::worker::run(stage, rx, ev, &m, &stop, &meter),
        )?);
        face_tx = Some(tx);
    }

    for ((i, s), bar) in p.streams.into_iter().enumerate().zip(decode_bars) {
        let leaky = s.plan.leaky();
        let mut outputs = Vec::new();
        let mut queue = |stage: &'static str| {
            let (tx, rx) = bounded::<StreamMsg>(cap);
            outputs.push(Output {
                tx,
                rx: leaky.then(|| rx.clone()),
                stage,
            });
            rx
        };
        if let (Some(tx), true) = (&clip_tx, s.action) {
            let frx = queue("action");
            let live = leaky.then(|| latest.clone());
            let (tx, m, acfg, id) = (
                tx.clone(),
                metrics.clone(),
                cfg.action.clone(),
                s.id.clone(),
            );
            handles.push(spawn_stage(
                format!("act-{}", s.id),
                "action_sampler",
                &metrics,
                move |meter| {
                    let _span = tracing::info_span!("stream", stream = %id).entered();
                    let at = StreamStage {
                        stream: i,
                        id: &id,
                        metrics: &m,
                        meter: &meter,
                    };
                    action::run_stream(&at, frx, tx, &acfg, live)
                },
            )?);
        }
        if let (Some(tx), true) = (&face_tx, s.faces) {
            let frx = queue("faces");
            let (tx, m, fps, id) = (
                tx.clone(),
                metrics.clone(),
                cfg.faces.sample_fps,
                s.id.clone(),
            );
            handles.push(spawn_stage(
                format!("face-{}", s.id),
                "face_sampler",
                &metrics,
                move |meter| {
                    let at = StreamStage {
                        stream: i,
                        id: &id,
                        metrics: &m,
                        meter: &meter,
                    };
                    sample_faces(&at, frx, tx, fps, leaky)
                },
            )?);
        }
        let (ev, m, stop) = (ev_tx.clone(), metrics.clone(), stop.clone());
        handles.push(spawn_stage(
            format!("src-{}", s.id),
            "decode",
            &metrics,
            move |meter| {
                let _span = tracing::info_span!("stream", stream = %s.id).entered();
                let mut notify = |n: Notice| {
                    let msg = match n {
                        Notice::Up { detail, media_time } => EventMsg::Up {
                            stream: i,
                            detail,
                            media_time,
                        },
                        Notice::Down {
                            reason,
                            detail,
                            media_time,
                        } => EventMsg::Down {
                            stream: i,
                            reason,
                            detail,
                            media_time,
                        },
                    };
                    let _ = ev.send(msg);
                };
                let mut on_frame = |_: &Frame| {
                    if let Some(bar) = &bar {
                        bar.inc(1);
                    }
                };
                let end = supervisor::supervise(
                    &s.plan,
                    &outputs,
                    &stop,
                    &m,
                    &meter,
                    &mut notify,
                    &mut on_frame,
                );
                // With no branch, the end marker goes straight to the events stage.
                if outputs.is_empty() {
                    let _ = ev.send(EventMsg::End(end));
                }
            },
        )?);
    }
    // The workers hold their own clones; dropping these lets each channel close when its
    // producers finish.
    drop((clip_tx, face_tx, ev_tx));
    metrics.ready.set(1);
    // On shutdown, an inference call in progress is cut short rather than waited for.
    let finished = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (stop, finished) = (stop.clone(), finished.clone());
        spawn("shutdown".into(), move || {
            while !finished.load(Ordering::Relaxed) {
                if stop.load(Ordering::Relaxed) {
                    for c in &cancel {
                        let _ = c.terminate();
                    }
                    return;
                }
                thread::sleep(Duration::from_millis(50));
            }
        })?
    };

    for h in handles {
        if h.join().is_err() {
            anyhow::bail!("a stream thread panicked");
        }
    }
    let mut errors = Vec::new();
    for (name, h) in [("classifier", classifier_handle), ("face", face_handle)] {
        match h.map(|h| h.join()) {
            None | Some(Ok(Ok(()))) => {}
            Some(Ok(Err(e))) => errors.push(e.to_string()),
            Some(Err(_)) => errors.push(format!("the {name} thread panicked")),
        }
    }
    let mut summary = events
        .join()
        .map_err(|_| anyhow::anyhow!("the events thread panicked"))?;
    finished.store(true, Ordering::Relaxed);
    let _ = watcher.join();
    if let (Some(notes), Some(dir)) = (&notes, &opts.annotate) {
        let hold = if cfg.faces.sample_fps > 0.0 {
            1.5 / cfg.faces.sample_fps
        } else {
            0.5
        };
        for (i, id, file) in &to_annotate {
            let out = annotate::output_path(dir, id);
            match annotate::render(file, notes, *i, hold, &out) {
                Ok(frames) => tracing::info!("annotated {frames} frames: {}", out.display()),
                Err(e) => {
                    tracing::error!("cannot annotate {id}: {e}");
                    summary.stream_errors.push(format!("annotating {id}: {e}"));
                }
            }
        }
    }
    summary.inference_error = (!errors.is_empty()).then(|| errors.join("; "));
    summary.clips = metrics
        .stage_processed
        .with_label_values(&["classifier"])
        .get();
    if stop.load(Ordering::Relaxed) {
        tracing::info!("stopped on request; everything queued was written");
    }
    Ok(summary)
}

/// The face branch's sampler for one stream: keeps frames at `fps` (every frame when 0) and
/// queues them for the shared face worker, then the stream's end. For a `live` stream a frame
/// that finds the worker's queue full is dropped and counted; a new epoch ends the stream's
/// tracks.
fn sample_faces(
    at: &StreamStage,
    rx: crossbeam_channel::Receiver<StreamMsg>,
    tx: crossbeam_channel::Sender<FaceMsg>,
    fps: f64,
    live: bool,
) {
    let StreamStage {
        stream,
        id,
        metrics: m,
        meter,
    } = *at;
    let sampled = m.frames_sampled.with_label_values(&[id, "faces"]);
    let dropped = m
        .frames_dropped
        .with_label_values(&[id, "faces", "queue_full"]);
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
            let sent = if live {
                match tx.try_send(FaceMsg::Frame(f)) {
                    Err(crossbeam_channel::TrySendError::Full(_)) => {
                        dropped.inc();
                        meter.dropped("queue_full");
                        Ok(())
                    }
                    Err(crossbeam_channel::TrySendError::Disconnected(_)) => Err(()),
                    Ok(()) => Ok(()),
                }
            } else {
                tx.send(FaceMsg::Frame(f)).map_err(|_| ())
            };
            if sent.is_err() {
                return;
            }
        }
        meter.done(started);
    }
}
