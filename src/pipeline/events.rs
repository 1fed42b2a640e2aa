//! The events stage, the one place where events are built and snapshots written: turns
//! classifier scores into segment events through each stream's smoother, turns face decisions
//! and stream notices into events, and writes every event to every sink and to the
//! recent-events ring the API reads. Streams join (a [`Joined`] message, ahead of their first
//! data) and leave (after the end marker of each of their branches) while it runs.

use super::Summary;
use crate::action::smoother::{Smoother, Transition};
use crate::annotate::Notes;
use crate::config::SmootherConfig;
use crate::event::clips::{Crop, EventClip};
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
    /// When the API keeps action events' clips: the crops of the clip each smoother's running
    /// segment would name (model's, custom actions'), so its events can keep them.
    best: [Option<Kept>; 2],
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
    /// Keeps the clip of action event `e` for the API (before the event is visible there).
    fn keep_clip(&self, e: &Event, clip: Option<Kept>) {
        let (Some(r), Some(clip)) = (&self.recent, clip) else {
            return;
        };
        if let Payload::Action { label, source, .. } = &e.payload {
            r.clips.keep(
                &e.id,
                EventClip {
                    stream: e.stream.clone(),
                    kind: e.kind,
                    label: label.clone(),
                    source: source.clone(),
                    span: clip.span,
                    frames: clip.frames,
                },
            );
        }
    }

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
                        best: [None, None],
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
                    finish(&mut w, s, &model_src, &custom_src);
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
                frames,
            } => {
                let Some(s) = streams.get_mut(&stream) else {
                    continue;
                };
                let current = (!frames.is_empty()).then(|| Kept {
                    span,
                    frames: frames.into(),
                });
                let before = s.best.clone();
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
                for (k, best) in [s.smoother.best_clip(), s.custom_smoother.best_clip()]
                    .into_iter()
                    .enumerate()
                {
                    s.best[k] = best.and_then(|b| find(&[&current, &before[k]], b));
                }
                for (t, k) in model_ts
                    .into_iter()
                    .map(|t| (t, 0))
                    .chain(custom_ts.into_iter().map(|t| (t, 1)))
                {
                    let src = [&model_src, &custom_src][k];
                    let snap = action_snapshot(&action_snapshots, &s.keyframes, &s.joined.name, &t);
                    let clip = find(&[&current, &before[k], &s.best[k]], t.clip());
                    let e = transition_event(&s.joined.name, t, src, snap);
                    w.keep_clip(&e, clip);
                    w.emit(e);
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
                    finish(&mut w, s, &model_src, &custom_src);
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

/// A clip's crops, kept while an event may still name it.
#[derive(Clone)]
struct Kept {
    span: Span,
    frames: Arc<[Crop]>,
}

/// The candidate whose span is `span`.
fn find(candidates: &[&Option<Kept>], span: Span) -> Option<Kept> {
    candidates
        .iter()
        .filter_map(|c| c.as_ref())
        .find(|c| (c.span.start - span.start).abs() < 1e-9 && (c.span.end - span.end).abs() < 1e-9)
        .cloned()
}

/// Ends the stream's running segments (a gap, or its action branch ended).
fn finish(w: &mut Writer, s: &mut PerStream, model: &Src, custom: &Src) {
    let ends = [s.smoother.finish(), s.custom_smoother.finish()];
    for (k, ts) in ends.into_iter().enumerate() {
        let best = s.best[k].take();
        for t in ts {
            let clip = find(&[&best], t.clip());
            let e = transition_event(&s.joined.name, t, [model, custom][k], None);
            w.keep_clip(&e, clip);
            w.emit(e);
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::status::StreamStatus;

    fn clip_msg(i: usize, p: f32) -> EventMsg {
        EventMsg::Clip {
            stream: 0,
            span: Span {
                start: i as f64,
                end: i as f64 + 1.0,
            },
            probs: vec![p, 0.05],
            captured: None,
            keyframe: None,
            custom: Vec::new(),
            // One crop per clip, filled with the clip's number.
            frames: vec![Crop::from(vec![i as u8; 3])],
        }
    }

    #[test]
    fn action_events_keep_the_clip_they_name_even_when_it_is_not_the_newest() {
        let metrics = Arc::new(Metrics::new());
        let recent = Arc::new(Recent::new(100).with_clips(8));
        let st = EventsStage {
            sinks: Vec::new(),
            labels: Arc::new(vec!["a".into(), "b".into()]),
            smoother: SmootherConfig {
                start_threshold: 0.5,
                end_threshold: 0.3,
                min_duration_ms: 0,
            },
            source: "m".into(),
            custom_labels: Default::default(),
            custom_only: false,
            notes: None,
            action_snapshots: None,
            face_snapshots: None,
            recent: Some(recent.clone()),
            names: Arc::new(Names::default()),
            unknowns: None,
        };
        let (tx, rx) = crossbeam_channel::unbounded();
        let decoded = prometheus::IntCounter::new("d", "d").unwrap();
        tx.send(EventMsg::Joined(Joined {
            stream: 0,
            name: "cam".into(),
            branches: 1,
            progress: indicatif::ProgressBar::hidden(),
            fps: 25.0,
            status: Arc::new(StreamStatus::new("cam".into(), decoded, Vec::new())),
        }))
        .unwrap();
        // Label a starts on clip 0, peaks on clip 1 and ends on clip 3: the ended event names
        // clip 1, two clips before the one that ended it.
        for (i, p) in [0.6, 0.9, 0.5, 0.1].into_iter().enumerate() {
            tx.send(clip_msg(i, p)).unwrap();
        }
        // A second segment still running when the stream ends: closed by the end marker.
        for (i, p) in [0.7, 0.8].into_iter().enumerate() {
            tx.send(clip_msg(i + 4, p)).unwrap();
        }
        tx.send(EventMsg::End(StreamEnd {
            stream: 0,
            frames: 0,
            media_time: 6.0,
            reason: EndReason::EndOfFile,
        }))
        .unwrap();
        drop(tx);
        let cx = Context::new(
            metrics::Stage::Events,
            "events".into(),
            None,
            &metrics,
            crate::shutdown::Shutdown::new(),
        );
        run(st, &cx, rx);
        let kept: Vec<(String, f64, u8)> = recent
            .latest(100)
            .iter()
            .filter(|k| matches!(k.kind, EventType::ActionStarted | EventType::ActionEnded))
            .map(|k| {
                let c = recent
                    .clips
                    .get(&k.id)
                    .expect("an action event's clip is kept");
                assert_eq!(c.stream, "cam");
                (k.kind.as_str().to_string(), c.span.start, c.frames[0][0])
            })
            .collect();
        let want = [
            ("action.started", 0.0, 0),
            ("action.ended", 1.0, 1),
            ("action.started", 4.0, 4),
            ("action.ended", 5.0, 5),
        ];
        let want: Vec<(String, f64, u8)> = want
            .iter()
            .map(|(k, s, f)| (k.to_string(), *s, *f))
            .collect();
        assert_eq!(kept, want);
    }
}
