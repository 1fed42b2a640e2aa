//! Explanations of action events over the API (`POST /v1/events/{id}/explanation`,
//! docs/api.md): the same occlusion maps as `vigil explain`, computed on the clip the event
//! names, which the events stage kept (`api.event_clips`, [`crate::event::clips`]).
//!
//! An explanation costs one forward pass per grid cell (65 at the default 4x4x4), far longer
//! than an HTTP call should wait on a CPU, so it is a job: the POST queues it (202) and the
//! client polls the GET. The jobs run one at a time on one named thread (`explain`) with a
//! session of its own, made on the first job, with `api.explain_threads` ONNX Runtime threads
//! (default 1: it then computes on that thread alone), at a lower CPU priority (nice +10).
//! The live classifier's session, thread and queue are never touched, so an explanation takes
//! at most one core's worth of time from a run that has it to spare and yields it to the live
//! threads when they need it.
//!
//! Bounded: at most [`QUEUE`] jobs wait (more: 503 `busy`), and at most [`KEPT`] finished
//! explanations are kept (the oldest dropped first); a finished job no longer holds its clip.

use crate::event::clips::EventClip;
use crate::explain::{Explainer, Grid, Labels};
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

/// Jobs that may wait behind the running one.
pub const QUEUE: usize = 4;
/// Finished explanations kept (JSON, PNG and MP4 in memory: well under 1 MB each).
pub const KEPT: usize = 16;

/// What was asked: the labels (the model's or custom actions') and the grid.
#[derive(Debug, Clone, PartialEq)]
pub struct Ask {
    pub labels: Vec<String>,
    pub grid: Grid,
}

/// A finished explanation.
pub struct Output {
    /// The maps, as `vigil explain` writes them, with the event's clip.
    pub json: Value,
    pub png: Vec<u8>,
    /// None when OpenCV cannot write MP4 on this machine.
    pub mp4: Option<Vec<u8>>,
}

pub enum State {
    Queued,
    Running,
    Done(Arc<Output>),
    Failed(String),
}

impl State {
    pub fn name(&self) -> &'static str {
        match self {
            State::Queued => "queued",
            State::Running => "running",
            State::Done(_) => "done",
            State::Failed(_) => "failed",
        }
    }

    pub fn pending(&self) -> bool {
        matches!(self, State::Queued | State::Running)
    }
}

/// One event's explanation.
pub struct Job {
    pub event: String,
    pub ask: Ask,
    clip: Mutex<Option<Arc<EventClip>>>,
    state: Mutex<State>,
}

impl Job {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The state's name, the output when done, the reason when failed.
    pub fn view(&self) -> (&'static str, Option<Arc<Output>>, Option<String>) {
        let s = self.lock();
        let out = match &*s {
            State::Done(o) => Some(o.clone()),
            _ => None,
        };
        let err = match &*s {
            State::Failed(e) => Some(e.clone()),
            _ => None,
        };
        (s.name(), out, err)
    }

    fn pending(&self) -> bool {
        self.lock().pending()
    }
}

/// Why a job was not queued.
#[derive(Debug)]
pub enum Refused {
    /// Another explanation of this event (other labels or grid) is being computed.
    Busy,
    /// [`QUEUE`] jobs wait already.
    Full,
}

/// The jobs, and the thread that computes them.
pub struct Explanations {
    jobs: Mutex<VecDeque<Arc<Job>>>,
    tx: crossbeam_channel::Sender<Arc<Job>>,
    pub labels: Labels,
    /// Ends the forward pass in progress at shutdown.
    cancel: Arc<Mutex<Option<Arc<ort::session::RunOptions>>>>,
}

impl Drop for Explanations {
    fn drop(&mut self) {
        if let Some(c) = self
            .cancel
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            let _ = c.terminate();
        }
    }
}

impl Explanations {
    /// Starts the `explain` thread; `load` makes the explainer on the first job.
    pub fn start(
        labels: Labels,
        load: impl FnOnce() -> anyhow::Result<Explainer> + Send + 'static,
    ) -> std::io::Result<Explanations> {
        let (tx, rx) = crossbeam_channel::bounded::<Arc<Job>>(QUEUE);
        let cancel = Arc::new(Mutex::new(None));
        let slot = cancel.clone();
        std::thread::Builder::new()
            .name("explain".into())
            .spawn(move || worker(rx, load, slot))?;
        Ok(Explanations {
            jobs: Mutex::new(VecDeque::new()),
            tx,
            labels,
            cancel,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Arc<Job>>> {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The explanation of `event` asked for last, if kept.
    pub fn get(&self, event: &str) -> Option<Arc<Job>> {
        self.lock().iter().rev().find(|j| j.event == event).cloned()
    }

    /// Queues the explanation of `event`'s `clip`, or gives the one already asked for the same
    /// way (pending or done; a failed one is tried again).
    pub fn ask(
        &self,
        event: &str,
        clip: Arc<EventClip>,
        ask: Ask,
    ) -> Result<(Arc<Job>, bool), Refused> {
        let mut jobs = self.lock();
        if let Some(j) = jobs.iter().rev().find(|j| j.event == event) {
            let failed = matches!(*j.lock(), State::Failed(_));
            if j.ask == ask && !failed {
                return Ok((j.clone(), false));
            }
            if j.pending() {
                return Err(Refused::Busy);
            }
        }
        let job = Arc::new(Job {
            event: event.to_string(),
            ask,
            clip: Mutex::new(Some(clip)),
            state: Mutex::new(State::Queued),
        });
        self.tx.try_send(job.clone()).map_err(|_| Refused::Full)?;
        jobs.retain(|j| j.event != event);
        jobs.push_back(job.clone());
        // Drop the oldest finished ones beyond the bound (pending ones are at most QUEUE + 1).
        while jobs.len() > KEPT {
            match jobs.iter().position(|j| !j.pending()) {
                Some(i) => {
                    jobs.remove(i);
                }
                None => break,
            }
        }
        Ok((job, true))
    }
}

fn worker(
    rx: crossbeam_channel::Receiver<Arc<Job>>,
    load: impl FnOnce() -> anyhow::Result<Explainer>,
    cancel: Arc<Mutex<Option<Arc<ort::session::RunOptions>>>>,
) {
    crate::stage::lower_priority(10, "explain");
    let mut load = Some(load);
    let mut explainer: Option<Explainer> = None;
    for job in rx.iter() {
        let clip = job.clip.lock().unwrap_or_else(|p| p.into_inner()).take();
        let Some(clip) = clip else { continue };
        *job.lock() = State::Running;
        let started = std::time::Instant::now();
        if explainer.is_none() {
            match load.take().map(|l| l()) {
                Some(Ok(e)) => {
                    *cancel.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.canceller());
                    explainer = Some(e);
                }
                Some(Err(e)) => {
                    let msg = format!("cannot load the action model to explain: {e:#}");
                    tracing::error!("{msg}");
                    load = None;
                    *job.lock() = State::Failed(msg);
                    continue;
                }
                None => {
                    *job.lock() = State::Failed("the action model could not be loaded".into());
                    continue;
                }
            }
        }
        let ex = explainer.as_mut().expect("loaded above");
        // A panic fails this job, not every later one (the thread lives on).
        let result =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(ex, &job, &clip)))
                .unwrap_or_else(|_| {
                    Err(anyhow::anyhow!(
                        "the explanation panicked (a bug: see the log)"
                    ))
                });
        *job.lock() = match result {
            Ok(out) => {
                tracing::info!(
                    event = %job.event,
                    stream = %clip.stream,
                    "explained in {:.1} s ({} forward passes)",
                    started.elapsed().as_secs_f64(),
                    1 + job.ask.grid.cells()
                );
                State::Done(Arc::new(out))
            }
            Err(e) => {
                tracing::warn!(event = %job.event, "cannot explain: {e:#}");
                State::Failed(format!("{e:#}"))
            }
        };
    }
}

/// Computes and draws one explanation, in a private temporary folder removed afterwards.
fn run(ex: &mut Explainer, job: &Job, clip: &EventClip) -> anyhow::Result<Output> {
    let e = ex
        .explain(&clip.frames, &job.ask.labels, job.ask.grid, false)
        .map_err(anyhow::Error::from)?;
    let dir = std::env::temp_dir().join(format!(
        "vigil-explain-{}-{}",
        std::process::id(),
        uuid::Uuid::now_v7().simple()
    ));
    {
        use std::os::unix::fs::DirBuilderExt;
        // A fresh folder only this user reads: `create` fails rather than follow anything
        // planted at the name.
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|err| anyhow::anyhow!("cannot create {}: {err}", dir.display()))?;
    }
    let drawn = (|| -> anyhow::Result<(Vec<u8>, Option<Vec<u8>>)> {
        let (png, mp4) = (dir.join("explain.png"), dir.join("explain.mp4"));
        let wrote_mp4 = e.draw(&clip.frames, &png, &mp4)?;
        let png = std::fs::read(&png)?;
        let mp4 = if wrote_mp4 {
            Some(std::fs::read(&mp4)?)
        } else {
            None
        };
        Ok((png, mp4))
    })();
    let _ = std::fs::remove_dir_all(&dir);
    let (png, mp4) = drawn?;
    let base = format!("/v1/events/{}/explanation", job.event);
    let mut v = e.to_json();
    v["event"] = json!(job.event);
    v["stream"] = json!(clip.stream);
    v["type"] = json!(clip.kind.as_str());
    v["clip"] = json!({"start": clip.span.start, "end": clip.span.end});
    v["png"] = json!(format!("{base}.png"));
    v["mp4"] = json!(mp4.is_some().then(|| format!("{base}.mp4")));
    v["state"] = json!("done");
    Ok(Output { json: v, png, mp4 })
}
