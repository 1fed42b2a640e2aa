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

mod events;
mod prepare;

pub use events::EventMsg;
pub use prepare::{load_faces, prepare, Prepared, PreparedAction, PreparedFaces, PreparedStream};

use crate::action::sampler::Sampler;
use crate::action::{self, classifier};
use crate::event::open_sinks;
use crate::face::{self, worker::FaceMsg};
use crate::metrics::{self, Metrics};
use crate::source::file::FileReader;
use crate::source::Frame;
use crate::source::{run_reader, EndReason, Ended, StreamEnd, StreamMsg};
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
}

impl Summary {
    pub fn ok(&self) -> bool {
        self.stream_errors.is_empty() && self.sink_errors == 0 && self.inference_error.is_none()
    }
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
    let sinks = open_sinks(&cfg.sinks, |path| p.loaded.resolve(path))?;
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
            bar: progress.add(
                ProgressBar::new(s.info.frame_count)
                    .with_style(style.clone())
                    .with_prefix(s.id.clone()),
            ),
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
        };
        spawn("events".into(), move || events::run(ev_rx, setup, &metrics))?
    };

    let mut handles = Vec::new();
    let mut clip_tx = None;
    let mut classifier_handle = None;
    if let Some(a) = p.action {
        let (tx, rx) = bounded::<classifier::ClipMsg>(cap);
        let (ev, m, batch, wait) = (
            ev_tx.clone(),
            metrics.clone(),
            cfg.action.max_batch,
            Duration::from_millis(cfg.action.max_wait_ms),
        );
        classifier_handle = Some(spawn("classifier".into(), move || {
            classifier::run(a.classifier, rx, ev, batch, wait, &m)
        })?);
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
        };
        let (ev, m) = (ev_tx.clone(), metrics.clone());
        face_handle = Some(spawn("faces".into(), move || {
            face::worker::run(stage, rx, ev, &m)
        })?);
        face_tx = Some(tx);
    }

    for ((i, s), bar) in p.streams.into_iter().enumerate().zip(decode_bars) {
        let mut outputs = Vec::new();
        if let (Some(tx), true) = (&clip_tx, s.action) {
            let (ftx, frx) = bounded::<StreamMsg>(cap);
            outputs.push(ftx);
            let (tx, m, acfg, id) = (
                tx.clone(),
                metrics.clone(),
                cfg.action.clone(),
                s.id.clone(),
            );
            handles.push(spawn(format!("act-{}", s.id), move || {
                let _span = tracing::info_span!("stream", stream = %id).entered();
                action::run_stream(i, &id, frx, tx, &acfg, &m)
            })?);
        }
        if let (Some(tx), true) = (&face_tx, s.faces) {
            let (ftx, frx) = bounded::<StreamMsg>(cap);
            outputs.push(ftx);
            let (tx, m, fps, id) = (
                tx.clone(),
                metrics.clone(),
                cfg.faces.sample_fps,
                s.id.clone(),
            );
            handles.push(spawn(format!("face-{}", s.id), move || {
                sample_faces(&id, frx, tx, fps, &m)
            })?);
        }
        let (ev, m, stop) = (ev_tx.clone(), metrics.clone(), stop.clone());
        handles.push(spawn(format!("src-{}", s.id), move || {
            let _span = tracing::info_span!("stream", stream = %s.id).entered();
            read_file(i, &s, &outputs, &ev, &m, &stop, bar.as_ref());
        })?);
    }
    // The workers hold their own clones; dropping these lets each channel close when its
    // producers finish.
    drop((clip_tx, face_tx, ev_tx));
    metrics.ready.set(1);

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
    summary.inference_error = (!errors.is_empty()).then(|| errors.join("; "));
    if stop.load(Ordering::Relaxed) {
        tracing::info!("stopped on request; everything queued was written");
    }
    Ok(summary)
}

/// The face branch's sampler for one stream: keeps frames at `fps` (every frame when 0) and
/// queues them for the shared face worker, then the stream's end.
fn sample_faces(
    id: &str,
    rx: crossbeam_channel::Receiver<StreamMsg>,
    tx: crossbeam_channel::Sender<FaceMsg>,
    fps: f64,
    m: &Metrics,
) {
    let sampled = m.frames_sampled.with_label_values(&[id, "faces"]);
    let mut sampler = (fps > 0.0).then(|| Sampler::<Frame>::new(fps));
    let mut picked: Vec<Frame> = Vec::new();
    for msg in rx.iter() {
        match msg {
            StreamMsg::Frame(f) => match &mut sampler {
                Some(s) => s.push(f.pts, f, |f, _| picked.push(f.clone())),
                None => picked.push(f),
            },
            StreamMsg::End(end) => {
                let _ = tx.send(FaceMsg::End(end));
                return;
            }
        }
        // A repeated frame (source slower than the rate) is looked at once.
        picked.dedup_by_key(|f| f.seq);
        for f in picked.drain(..) {
            sampled.inc();
            if tx.send(FaceMsg::Frame(f)).is_err() {
                return;
            }
        }
    }
}

/// The source thread for one file: announce, read to the end, pass the end marker on.
fn read_file(
    i: usize,
    s: &PreparedStream,
    outputs: &[crossbeam_channel::Sender<StreamMsg>],
    ev: &crossbeam_channel::Sender<EventMsg>,
    m: &Metrics,
    stop: &AtomicBool,
    bar: Option<&ProgressBar>,
) {
    let decoded = m.frames_decoded.with_label_values(&[&s.id]);
    let up = m.stream_up.with_label_values(&[&s.id]);
    let end = |frames: u64, media_time: f64, reason: EndReason| StreamEnd {
        stream: i,
        frames,
        media_time,
        reason,
    };
    let ended = FileReader::open(&s.path).map(|mut reader| {
        let detail = format!(
            "{}x{} at {:.3} fps",
            s.info.width, s.info.height, s.info.fps
        );
        let _ = ev.send(EventMsg::Up { stream: i, detail });
        up.set(1);
        let ended = run_reader(i, &mut reader, outputs, stop, |_| {
            decoded.inc();
            if let Some(bar) = bar {
                bar.inc(1);
            }
        });
        up.set(0);
        ended
    });
    let marker = match ended {
        Ok(Ended::Eof { frames, last_pts }) => end(frames, last_pts, EndReason::EndOfFile),
        Ok(Ended::Stopped { frames, last_pts }) => end(frames, last_pts, EndReason::Stopped),
        Ok(Ended::Disconnected { frames, last_pts }) => {
            let why = "the pipeline stopped taking frames".to_string();
            end(frames, last_pts, EndReason::Error(why))
        }
        Ok(Ended::Failed {
            error,
            frames,
            last_pts,
        }) => {
            tracing::error!("{error}");
            end(frames, last_pts, EndReason::Error(error.to_string()))
        }
        Err(error) => {
            tracing::error!("{error}");
            end(0, 0.0, EndReason::Error(error.to_string()))
        }
    };
    // The end marker follows the frames through the branches; with no branch it goes straight
    // to the events stage.
    if outputs.is_empty() {
        let _ = ev.send(EventMsg::End(marker));
    } else {
        for out in outputs {
            let _ = out.send(StreamMsg::End(marker.clone()));
        }
    }
}
