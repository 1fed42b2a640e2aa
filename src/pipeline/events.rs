//! The events stage, the one place where events are built and snapshots written: turns
//! classifier scores into segment events through each stream's smoother, turns face decisions
//! and stream notices into events, and writes every event to every sink and to the
//! recent-events ring the API reads. Streams join (a [`Joined`] message, ahead of their first
//! data) and leave (after the end marker of each of their branches) while it runs.

use super::Summary;
use crate::action::smoother::{Smoother, Transition};
use crate::annotate::Notes;
use crate::config::SmootherConfig;
use crate::event::recent::Recent;
use crate::event::{snapshot, Event, EventMsg, EventType, FaceSeen, Joined, Payload, Sink, Span};
use crate::gallery::unknowns::UnknownStore;
use crate::metrics::{self, Branch, Metrics};
use crate::source::{EndReason, Names, StreamEnd};
use crate::stage::{Context, Stage};
use crossbeam_channel::Receiver;
use opencv::core::Mat;
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;

/// What the events stage works with.
pub struct EventsStage {
    pub sinks: Vec<Box<dyn Sink>>,
    /// The action model's class names.
    pub labels: Arc<Vec<String>>,
    pub smoother: SmootherConfig,
    /// The `source` of the model's own labels' events (`kinetics400`).
    pub source: Arc<str>,
    /// Custom actions' names, in the order of their scores.
    pub custom_labels: Arc<Vec<String>>,
    /// Report custom actions only (`action.custom.only`).
    pub custom_only: bool,
    /// For annotated video: each clip's best label.
    pub notes: Option<Arc<Notes>>,
    /// Resolved `action.snapshots` folder.
    pub action_snapshots: Option<PathBuf>,
    /// Resolved `faces.snapshots` folder.
    pub face_snapshots: Option<PathBuf>,
    /// The API's view of recent events.
    pub recent: Option<Arc<Recent>>,
    pub names: Arc<Names>,
    /// Groups unknown faces (`unknown_id`).
    pub unknowns: Option<Arc<UnknownStore>>,
}

impl Stage for EventsStage {
    const STAGE: metrics::Stage = metrics::Stage::Events;
    type Input = Receiver<EventMsg>;
    type Output = ();
    type Done = Summary;

    fn run(self, cx: &Context, rx: Receiver<EventMsg>, _: ()) -> Summary {
        run(self, cx, rx)
    }
}

/// One stream as the events stage knows it.
struct PerStream {
    joined: Joined,
    smoother: Smoother,
    /// The same smoothing over the custom actions' scores.
    custom_smoother: Smoother,
    /// With action snapshots on: the latest clips and their middle frames.
    keyframes: VecDeque<(Span, Arc<Mat>)>,
    /// Whether `stream.up` was written once (the next is a reconnection).
    opened: bool,
    /// Branch ends seen so far, and the most serious one.
    ends_seen: usize,
    end: Option<StreamEnd>,
}

struct Writer<'a> {
    sinks: Vec<Box<dyn Sink>>,
    recent: Option<Arc<Recent>>,
    metrics: &'a Metrics,
    summary: Summary,
}

impl Writer<'_> {
    fn emit(&mut self, e: Event) {
        let line = e.to_json();
        self.metrics.event_emitted(e.kind).inc();
        self.summary.events += 1;
        for s in &mut self.sinks {
            if let Err(err) = s.write_line(&line) {
                self.summary.sink_errors += 1;
                self.metrics.sink_errors(s.name()).inc();
                tracing::error!(sink = s.name(), "cannot write event {}: {err}", e.id);
            }
        }
        if let Some(r) = &self.recent {
            r.push(&e, &line);
        }
    }
}

fn run(st: EventsStage, cx: &Context, rx: Receiver<EventMsg>) -> Summary {
    let EventsStage {
        sinks,
        labels,
        smoother,
        source,
        custom_labels,
        custom_only,
        notes,
        action_snapshots,
        face_snapshots,
        recent,
        names,
        unknowns,
    } = st;
    let metrics = &cx.metrics;
    let mut streams: HashMap<usize, PerStream> = HashMap::new();
    let action_latency = metrics.capture_latency(Branch::Action);
    let mut w = Writer {
        sinks,
        recent,
        metrics,
        summary: Summary::default(),
    };
    let label = |i: usize| {
        labels
            .get(i)
            .cloned()
            .unwrap_or_else(|| format!("class {i}"))
    };
    let custom_label = |i: usize| {
        custom_labels
            .get(i)
            .cloned()
            .unwrap_or_else(|| format!("custom {i}"))
    };
    let model_src = Src {
        name: &source,
        label: &label,
    };
    let custom_src = Src {
        name: crate::action::custom::SOURCE,
        label: &custom_label,
    };
    for msg in rx.iter() {
        let started = std::time::Instant::now();
        let end = match msg {
            EventMsg::Joined(j) => {
                streams.insert(
                    j.stream,
                    PerStream {
                        joined: j,
                        smoother: Smoother::new(&smoother),
                        custom_smoother: Smoother::new(&smoother),
                        keyframes: VecDeque::new(),
                        opened: false,
                        ends_seen: 0,
                        end: None,
                    },
                );
                None
            }
            EventMsg::Up {
                stream,
                detail,
                media_time,
            } => {
                let Some(s) = streams.get_mut(&stream) else {
                    continue;
                };
                let reason = if std::mem::replace(&mut s.opened, true) {
                    "reconnected"
                } else {
                    "opened"
                };
                s.joined.status.note(reason, Some(detail.clone()));
                w.emit(stream_event(
                    EventType::StreamUp,
                    &s.joined.name,
                    media_time,
                    reason,
                    Some(detail),
                    false,
                ));
                None
            }
            EventMsg::Down {
                stream,
                reason,
                detail,
                media_time,
            } => {
                let Some(s) = streams.get(&stream) else {
                    continue;
                };
                s.joined.status.note(reason.as_str(), Some(detail.clone()));
                let e = stream_event(
                    EventType::StreamDown,
                    &s.joined.name,
                    media_time,
                    reason.as_str(),
                    Some(detail),
                    true,
                );
                w.emit(e);
                None
            }
            EventMsg::Gap(stream) => {
                if let Some(s) = streams.get_mut(&stream) {
                    for t in s.smoother.finish() {
                        w.emit(transition_event(&s.joined.name, t, &model_src, None));
                    }
                    for t in s.custom_smoother.finish() {
                        w.emit(transition_event(&s.joined.name, t, &custom_src, None));
                    }
                }
                None
            }
            EventMsg::Clip {
                stream,
                span,
                probs,
                captured,
                keyframe,
                custom,
            } => {
                let Some(s) = streams.get_mut(&stream) else {
                    continue;
                };
                if let Some(k) = keyframe {
                    if s.keyframes.len() == 16 {
                        s.keyframes.pop_front();
                    }
                    s.keyframes.push_back((span, k));
                }
                metrics.clips_classified(&s.joined.name).inc();
                if let Some(c) = captured {
                    let secs = c.elapsed().as_secs_f64();
                    action_latency.observe(secs);
                    s.joined.status.latency(secs);
                }
                let best = probs
                    .iter()
                    .enumerate()
                    .max_by(|a, b| a.1.total_cmp(b.1))
                    .map(|(i, p)| (i, *p));
                if let Some((i, p)) = best {
                    if let Some(n) = &notes {
                        n.clip(stream, span.start, span.end, label(i), p);
                    }
                    let preview = &s.joined.status.preview;
                    if preview.watched() {
                        preview.action(&label(i), p, span.end);
                    }
                }
                let bar = &s.joined.progress;
                let frames = (span.end * s.joined.fps).round() as u64;
                bar.set_position(frames.min(bar.length().unwrap_or(0)));
                // Without custom-only reporting the model's labels are smoothed and reported;
                // custom actions go through a smoother of their own, so that a custom action
                // and one of the model's labels can both run at once.
                let model_ts = if custom_only {
                    Vec::new()
                } else {
                    s.smoother.push(span, &probs)
                };
                let custom_ts = if custom.is_empty() {
                    Vec::new()
                } else {
                    s.custom_smoother.push(span, &custom)
                };
                for (t, src) in model_ts
                    .into_iter()
                    .map(|t| (t, &model_src))
                    .chain(custom_ts.into_iter().map(|t| (t, &custom_src)))
                {
                    let snap = action_snapshot(&action_snapshots, &s.keyframes, &s.joined.name, &t);
                    w.emit(transition_event(&s.joined.name, t, src, snap));
                }
                None
            }
            EventMsg::Face { stream, seen } => {
                let Some(s) = streams.get(&stream) else {
                    continue;
                };
                if let Some(c) = seen.captured {
                    s.joined.status.latency(c.elapsed().as_secs_f64());
                }
                w.emit(face_event(
                    &s.joined.name,
                    seen,
                    &face_snapshots,
                    unknowns.as_deref(),
                ));
                None
            }
            EventMsg::End(end) => {
                // The action branch's end closes its smoother's running segment.
                if let Some(s) = streams.get_mut(&end.stream) {
                    for t in s.smoother.finish() {
                        w.emit(transition_event(&s.joined.name, t, &model_src, None));
                    }
                    for t in s.custom_smoother.finish() {
                        w.emit(transition_event(&s.joined.name, t, &custom_src, None));
                    }
                }
                Some(end)
            }
            EventMsg::FaceEnd(end) => Some(end),
        };
        if let Some(end) = end {
            let slot = end.stream;
            let done = match streams.get_mut(&slot) {
                Some(s) => ended(&mut w, s, end),
                None => false,
            };
            if done {
                if let Some(s) = streams.remove(&slot) {
                    names.remove(slot);
                    s.joined.status.ended.cancel(crate::shutdown::Why::Exit);
                }
            }
        }
        cx.meter.done(started);
    }
    if let Some(u) = &unknowns {
        u.flush();
    }
    for s in &mut w.sinks {
        if let Err(err) = s.close() {
            w.summary.sink_errors += 1;
            tracing::error!(sink = s.name(), "cannot close: {err}");
        }
    }
    w.summary
}

fn stream_event(
    kind: EventType,
    name: &str,
    media_time: f64,
    reason: &str,
    detail: Option<String>,
    retrying: bool,
) -> Event {
    Event::new(
        kind,
        name,
        media_time,
        Payload::Stream {
            reason: reason.into(),
            detail,
            retrying,
        },
    )
}

/// Counts one branch's end of a stream; after the last branch, writes `stream.down` with the
/// most serious reason any branch gave. True when the stream is gone.
fn ended(w: &mut Writer, s: &mut PerStream, end: StreamEnd) -> bool {
    s.ends_seen += 1;
    let rank = |r: &EndReason| match r {
        EndReason::EndOfFile => 0,
        EndReason::Stopped => 1,
        EndReason::Removed => 2,
        EndReason::Error(_) => 3,
    };
    let keep = match &s.end {
        Some(prev) => {
            rank(&end.reason) > rank(&prev.reason)
                || (rank(&end.reason) == rank(&prev.reason) && end.media_time > prev.media_time)
        }
        None => true,
    };
    if keep {
        let frames = s.end.as_ref().map_or(0, |prev| prev.frames).max(end.frames);
        s.end = Some(StreamEnd { frames, ..end });
    }
    if s.ends_seen < s.joined.branches.max(1) {
        return false;
    }
    let Some(end) = s.end.take() else {
        return true;
    };
    w.summary.frames += end.frames;
    s.joined.progress.finish_and_clear();
    let name = &s.joined.name;
    let detail = match &end.reason {
        EndReason::Error(msg) => {
            w.summary
                .stream_errors
                .push(format!("stream {name}: {msg}"));
            Some(msg.clone())
        }
        _ => None,
    };
    s.joined.status.note(end.reason.as_str(), detail.clone());
    w.emit(stream_event(
        EventType::StreamDown,
        name,
        end.media_time,
        end.reason.as_str(),
        detail,
        false,
    ));
    if end.reason == EndReason::Removed {
        w.metrics.forget_stream(name);
    }
    true
}

/// Writes the JPEG of the clip that started a segment; its path, or `None` (snapshots off, the
/// clip's frame no longer kept, or the write failed: logged).
fn action_snapshot(
    dir: &Option<PathBuf>,
    ring: &VecDeque<(Span, Arc<Mat>)>,
    stream: &str,
    t: &Transition,
) -> Option<String> {
    let (dir, Transition::Started { clip, .. }) = (dir.as_ref()?, t) else {
        return None;
    };
    let (_, frame) = ring
        .iter()
        .rev()
        .find(|(s, _)| (s.start - clip.start).abs() < 1e-9 && (s.end - clip.end).abs() < 1e-9)?;
    write_snapshot(dir, &format!("{stream}-{:.3}", clip.start), frame)
}

fn write_snapshot(dir: &std::path::Path, stem: &str, image: &Mat) -> Option<String> {
    match snapshot::write(dir, stem, image) {
        Ok(p) => Some(p.display().to_string()),
        Err(e) => {
            tracing::warn!("cannot write snapshot {stem}.jpg in {}: {e}", dir.display());
            None
        }
    }
}

fn face_event(
    stream: &str,
    seen: FaceSeen,
    dir: &Option<PathBuf>,
    unknowns: Option<&UnknownStore>,
) -> Event {
    let FaceSeen {
        identity,
        distance,
        runner_up,
        track_id,
        bbox,
        media_time,
        crop,
        captured: _,
        embeddings,
        first_seen,
    } = seen;
    let snapshot = match (dir, crop) {
        (Some(dir), Some(crop)) => write_snapshot(
            dir,
            &format!("{stream}-{media_time:.3}-track{track_id}"),
            &crop,
        ),
        _ => None,
    };
    let kind = if identity.is_some() {
        EventType::FaceIdentified
    } else {
        EventType::FaceUnknown
    };
    let unknown_id = match (&identity, unknowns) {
        (None, Some(u)) => u.assign(
            stream,
            track_id,
            first_seen,
            media_time,
            &embeddings,
            snapshot.as_deref(),
        ),
        (Some(name), Some(u)) => {
            u.keep_named(name, stream, track_id, first_seen, media_time, &embeddings);
            None
        }
        _ => None,
    };
    Event::new(
        kind,
        stream,
        media_time,
        Payload::Face {
            identity,
            distance,
            runner_up,
            track_id,
            bbox,
            snapshot,
            unknown_id,
        },
    )
}

/// Where a transition's label comes from: the model's label list or the custom actions.
struct Src<'a> {
    name: &'a str,
    label: &'a dyn Fn(usize) -> String,
}

fn transition_event(stream: &str, t: Transition, src: &Src, snapshot: Option<String>) -> Event {
    let label = src.label;
    match t {
        Transition::Started {
            label: l,
            score,
            clip,
            segment,
        } => Event::new(
            EventType::ActionStarted,
            stream,
            segment.start,
            Payload::Action {
                label: label(l),
                source: src.name.into(),
                score,
                clip,
                segment,
                snapshot,
            },
        ),
        Transition::Ended {
            label: l,
            score,
            clip,
            segment,
        } => Event::new(
            EventType::ActionEnded,
            stream,
            segment.end,
            Payload::Action {
                label: label(l),
                source: src.name.into(),
                score,
                clip,
                segment,
                snapshot: None,
            },
        ),
    }
}
