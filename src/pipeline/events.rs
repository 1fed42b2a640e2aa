//! The events stage: turns classifier scores into segment events through each stream's
//! smoother, adds stream events, and writes every event to every sink.

use super::Summary;
use crate::action::classifier::Scored;
use crate::action::smoother::{Smoother, Transition};
use crate::config::SmootherConfig;
use crate::event::{Event, EventType, Payload, Sink};
use crate::metrics::Metrics;
use crate::source::{EndReason, StreamEnd};
use crossbeam_channel::Receiver;
use std::sync::Arc;

/// Into the events stage.
pub enum EventMsg {
    /// A stream opened or reconnected.
    Up {
        stream: usize,
        detail: String,
        media_time: f64,
    },
    /// A live stream was lost; its supervisor is reconnecting.
    Down {
        stream: usize,
        reason: &'static str,
        detail: String,
        media_time: f64,
    },
    /// Class probabilities for one clip.
    Clip {
        stream: usize,
        span: crate::event::Span,
        probs: Vec<f32>,
        captured: Option<std::time::Instant>,
        keyframe: Option<Arc<opencv::core::Mat>>,
    },
    /// The stream had a gap: its running segment is over.
    Gap(usize),
    /// A stream ended in the action branch; its clips have all arrived before this.
    End(StreamEnd),
    /// A stream ended in the face branch; its face events have all arrived before this.
    FaceEnd(StreamEnd),
    /// An event made elsewhere (the face branch), written as is.
    Emit(Event),
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
            } => EventMsg::Clip {
                stream,
                span,
                probs,
                captured,
                keyframe,
            },
            Scored::Gap(s) => EventMsg::Gap(s),
            Scored::End(e) => EventMsg::End(e),
        }
    }
}

/// A stream's progress bar (hidden unless stderr is a terminal) and its frame rate, to turn
/// media time into frames.
pub struct Progress {
    pub bar: indicatif::ProgressBar,
    pub fps: f64,
}

struct Writer<'a> {
    sinks: Vec<Box<dyn Sink>>,
    metrics: &'a Metrics,
    summary: Summary,
}

impl Writer<'_> {
    fn emit(&mut self, e: Event) {
        let line = e.to_json();
        self.metrics
            .events_emitted
            .with_label_values(&[e.kind.as_str()])
            .inc();
        self.summary.events += 1;
        for s in &mut self.sinks {
            if let Err(err) = s.write_line(&line) {
                self.summary.sink_errors += 1;
                self.metrics
                    .sink_errors
                    .with_label_values(&[s.name()])
                    .inc();
                tracing::error!(sink = s.name(), "cannot write event {}: {err}", e.id);
            }
        }
    }
}

/// What the events stage works with.
pub struct Setup {
    pub sinks: Vec<Box<dyn Sink>>,
    /// Stream ids, by stream index.
    pub names: Vec<String>,
    /// The action model's class names.
    pub labels: Arc<Vec<String>>,
    pub progress: Vec<Progress>,
    /// Per stream, the branches that each send one end marker for it.
    pub branches: Vec<usize>,
    pub smoother: SmootherConfig,
    /// For annotated video: each clip's best label.
    pub notes: Option<Arc<super::annotate::Notes>>,
    /// Resolved `action.snapshots` folder.
    pub snapshots: Option<std::path::PathBuf>,
}

pub fn run(
    rx: Receiver<EventMsg>,
    setup: Setup,
    metrics: &Metrics,
    meter: &crate::metrics::StageMeter,
) -> Summary {
    let Setup {
        sinks,
        names,
        labels,
        progress,
        branches,
        smoother,
        notes,
        snapshots,
    } = setup;
    // With snapshots on: each stream's latest clips and their middle frames.
    let mut keyframes: Vec<
        std::collections::VecDeque<(crate::event::Span, Arc<opencv::core::Mat>)>,
    > = names.iter().map(|_| Default::default()).collect();
    let smoother = &smoother;
    let mut smoothers: Vec<Smoother> = names.iter().map(|_| Smoother::new(smoother)).collect();
    let mut pending: Vec<Pending> = names.iter().map(|_| Pending::default()).collect();
    let mut opened: Vec<bool> = vec![false; names.len()];
    let action_latency = metrics.capture_latency.with_label_values(&["action"]);
    let mut w = Writer {
        sinks,
        metrics,
        summary: Summary::default(),
    };
    let label = |i: usize| {
        labels
            .get(i)
            .cloned()
            .unwrap_or_else(|| format!("class {i}"))
    };
    for msg in rx.iter() {
        let started = std::time::Instant::now();
        let end = match msg {
            EventMsg::Up {
                stream,
                detail,
                media_time,
            } => {
                let first = !std::mem::replace(&mut opened[stream], true);
                w.emit(Event::new(
                    EventType::StreamUp,
                    &names[stream],
                    media_time,
                    Payload::Stream {
                        reason: if first { "opened" } else { "reconnected" }.into(),
                        detail: Some(detail),
                        retrying: false,
                    },
                ));
                None
            }
            EventMsg::Down {
                stream,
                reason,
                detail,
                media_time,
            } => {
                w.emit(Event::new(
                    EventType::StreamDown,
                    &names[stream],
                    media_time,
                    Payload::Stream {
                        reason: reason.into(),
                        detail: Some(detail),
                        retrying: true,
                    },
                ));
                None
            }
            EventMsg::Gap(stream) => {
                for t in smoothers[stream].finish() {
                    w.emit(transition_event(&names[stream], t, &label, None));
                }
                None
            }
            EventMsg::Clip {
                stream,
                span,
                probs,
                captured,
                keyframe,
            } => {
                if let Some(k) = keyframe {
                    let ring = &mut keyframes[stream];
                    if ring.len() == 16 {
                        ring.pop_front();
                    }
                    ring.push_back((span, k));
                }
                metrics
                    .clips_classified
                    .with_label_values(&[&names[stream]])
                    .inc();
                if let Some(c) = captured {
                    action_latency.observe(c.elapsed().as_secs_f64());
                }
                if let Some(n) = &notes {
                    let best = probs
                        .iter()
                        .enumerate()
                        .max_by(|a, b| a.1.total_cmp(b.1))
                        .map(|(i, p)| (i, *p));
                    if let Some((i, p)) = best {
                        n.clip(stream, span.start, span.end, label(i), p);
                    }
                }
                let p = &progress[stream];
                let frames = (span.end * p.fps).round() as u64;
                p.bar.set_position(frames.min(p.bar.length().unwrap_or(0)));
                for t in smoothers[stream].push(span, &probs) {
                    let snap = snapshot(&snapshots, &keyframes[stream], &names[stream], &t);
                    w.emit(transition_event(&names[stream], t, &label, snap));
                }
                None
            }
            EventMsg::Emit(e) => {
                w.emit(e);
                None
            }
            EventMsg::End(end) => {
                // The action branch's end closes its smoother's running segment.
                for t in smoothers[end.stream].finish() {
                    w.emit(transition_event(&names[end.stream], t, &label, None));
                }
                Some(end)
            }
            EventMsg::FaceEnd(end) => Some(end),
        };
        if let Some(end) = end {
            let (s, expected) = (end.stream, branches[end.stream]);
            ended(&mut w, &mut pending[s], end, &names, &progress, expected);
        }
        meter.done(started);
    }
    for s in &mut w.sinks {
        if let Err(err) = s.close() {
            w.summary.sink_errors += 1;
            tracing::error!(sink = s.name(), "cannot close: {err}");
        }
    }
    w.summary
}

/// A stream's end markers seen so far (one comes from each branch).
#[derive(Default)]
struct Pending {
    seen: usize,
    end: Option<StreamEnd>,
}

/// Counts one branch's end of a stream; after the last branch, writes `stream.down` with the
/// most serious reason any branch gave.
fn ended(
    w: &mut Writer,
    p: &mut Pending,
    end: StreamEnd,
    names: &[String],
    progress: &[Progress],
    branches: usize,
) {
    p.seen += 1;
    let rank = |r: &EndReason| match r {
        EndReason::EndOfFile => 0,
        EndReason::Stopped => 1,
        EndReason::Error(_) => 2,
    };
    let keep = match &p.end {
        Some(prev) => {
            rank(&end.reason) > rank(&prev.reason)
                || (rank(&end.reason) == rank(&prev.reason) && end.media_time > prev.media_time)
        }
        None => true,
    };
    if keep {
        let frames = p.end.as_ref().map_or(0, |prev| prev.frames).max(end.frames);
        p.end = Some(StreamEnd { frames, ..end });
    }
    if p.seen < branches.max(1) {
        return;
    }
    let Some(end) = p.end.take() else { return };
    w.summary.frames += end.frames;
    progress[end.stream].bar.finish_and_clear();
    let name = &names[end.stream];
    let detail = match &end.reason {
        EndReason::Error(msg) => {
            w.summary
                .stream_errors
                .push(format!("stream {name}: {msg}"));
            Some(msg.clone())
        }
        _ => None,
    };
    let payload = Payload::Stream {
        reason: end.reason.as_str().into(),
        detail,
        retrying: false,
    };
    w.emit(Event::new(
        EventType::StreamDown,
        name,
        end.media_time,
        payload,
    ));
}

/// Writes the JPEG of the clip that started a segment; its path, or `None` (snapshots off, the
/// clip's frame no longer kept, or the write failed: logged).
fn snapshot(
    dir: &Option<std::path::PathBuf>,
    ring: &std::collections::VecDeque<(crate::event::Span, Arc<opencv::core::Mat>)>,
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
    let path = dir.join(format!("{stream}-{:.3}.jpg", clip.start));
    match opencv::imgcodecs::imwrite_def(&path, &**frame) {
        Ok(true) => Some(path.display().to_string()),
        other => {
            tracing::warn!("cannot write snapshot {}: {other:?}", path.display());
            None
        }
    }
}

fn transition_event(
    stream: &str,
    t: Transition,
    label: &impl Fn(usize) -> String,
    snapshot: Option<String>,
) -> Event {
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
                score,
                clip,
                segment,
                snapshot: None,
            },
        ),
    }
}
