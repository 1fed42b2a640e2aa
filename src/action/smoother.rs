//! Per-stream hysteresis over clip scores: one `started` and one `ended` per action segment,
//! not one event per clip.
//!
//! A label becomes a candidate when its probability reaches `start_threshold`, holds while it
//! stays at or above `end_threshold`, and is reported once the segment (first clip start to
//! last clip end) has lasted `min_duration`. Another label that reaches the start threshold
//! and beats the running one ends it.

use crate::config::SmootherConfig;
use crate::event::Span;

/// A segment boundary.
#[derive(Debug, Clone, PartialEq)]
pub enum Transition {
    Started {
        label: usize,
        score: f32,
        clip: Span,
        segment: Span,
    },
    Ended {
        label: usize,
        score: f32,
        clip: Span,
        segment: Span,
    },
}

impl Transition {
    /// The clip the event names: the segment's best.
    pub fn clip(&self) -> Span {
        match self {
            Transition::Started { clip, .. } | Transition::Ended { clip, .. } => *clip,
        }
    }
}

#[derive(Debug, Clone)]
struct Segment {
    label: usize,
    start: f64,
    end: f64,
    best: f32,
    best_clip: Span,
    reported: bool,
}

/// The smoother for one stream.
pub struct Smoother {
    start: f32,
    end: f32,
    min_duration: f64,
    current: Option<Segment>,
}

fn argmax(p: &[f32]) -> Option<(usize, f32)> {
    p.iter()
        .copied()
        .enumerate()
        .fold(None, |best, (i, v)| match best {
            Some((_, b)) if b >= v => best,
            _ => Some((i, v)),
        })
}

impl Smoother {
    pub fn new(cfg: &SmootherConfig) -> Smoother {
        Smoother {
            start: cfg.start_threshold,
            end: cfg.end_threshold,
            min_duration: cfg.min_duration_ms as f64 / 1000.0,
            current: None,
        }
    }

    /// Feeds the class probabilities of the next clip (clips arrive in order).
    pub fn push(&mut self, clip: Span, probs: &[f32]) -> Vec<Transition> {
        let mut out = Vec::new();
        let Some((top, top_p)) = argmax(probs) else {
            return out;
        };
        if let Some(seg) = &mut self.current {
            let p = probs.get(seg.label).copied().unwrap_or(0.0);
            let overtaken = top != seg.label && top_p >= self.start && top_p > p;
            if p >= self.end && !overtaken {
                seg.end = clip.end;
                if p > seg.best {
                    seg.best = p;
                    seg.best_clip = clip;
                }
            } else {
                out.extend(self.close());
            }
        }
        if self.current.is_none() && top_p >= self.start {
            self.current = Some(Segment {
                label: top,
                start: clip.start,
                end: clip.end,
                best: top_p,
                best_clip: clip,
                reported: false,
            });
        }
        if let Some(seg) = &mut self.current {
            if !seg.reported && seg.end - seg.start >= self.min_duration - 1e-9 {
                seg.reported = true;
                out.push(Transition::Started {
                    label: seg.label,
                    score: seg.best,
                    clip: seg.best_clip,
                    segment: Span {
                        start: seg.start,
                        end: seg.end,
                    },
                });
            }
        }
        out
    }

    /// The clip the running segment's events would name (its best so far), if one runs.
    pub fn best_clip(&self) -> Option<Span> {
        self.current.as_ref().map(|s| s.best_clip)
    }

    /// Ends a running segment (its stream ended or broke off).
    pub fn finish(&mut self) -> Vec<Transition> {
        self.close().into_iter().collect()
    }

    fn close(&mut self) -> Option<Transition> {
        let seg = self.current.take()?;
        seg.reported.then_some(Transition::Ended {
            label: seg.label,
            score: seg.best,
            clip: seg.best_clip,
            segment: Span {
                start: seg.start,
                end: seg.end,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(min_ms: u64) -> SmootherConfig {
        SmootherConfig {
            start_threshold: 0.5,
            end_threshold: 0.3,
            min_duration_ms: min_ms,
        }
    }

    /// Runs clips of 1 s each (clip i covers [i, i+1)) with probabilities for labels 0 and 1.
    fn run(s: &mut Smoother, scores: &[(f32, f32)]) -> Vec<String> {
        let mut out = Vec::new();
        for (i, (a, b)) in scores.iter().enumerate() {
            let span = Span {
                start: i as f64,
                end: i as f64 + 1.0,
            };
            out.extend(s.push(span, &[*a, *b]));
        }
        out.extend(s.finish());
        out.iter()
            .map(|t| match t {
                Transition::Started { label, segment, .. } => {
                    format!("start {label} @{}", segment.start)
                }
                Transition::Ended { label, segment, .. } => format!("end {label} @{}", segment.end),
            })
            .collect()
    }

    #[test]
    fn one_segment_gives_one_start_and_one_end() {
        let mut s = Smoother::new(&cfg(1000));
        let ev = run(
            &mut s,
            &[(0.1, 0.2), (0.9, 0.1), (0.8, 0.1), (0.95, 0.0), (0.1, 0.2)],
        );
        assert_eq!(ev, vec!["start 0 @1", "end 0 @4"]);
    }

    #[test]
    fn hysteresis_keeps_a_segment_through_a_dip_above_the_end_threshold() {
        let mut s = Smoother::new(&cfg(1000));
        let ev = run(&mut s, &[(0.9, 0.1), (0.35, 0.2), (0.9, 0.1)]);
        assert_eq!(ev, vec!["start 0 @0", "end 0 @3"]);
    }

    #[test]
    fn a_segment_shorter_than_the_minimum_is_never_reported() {
        let mut s = Smoother::new(&cfg(2000));
        let ev = run(
            &mut s,
            &[(0.9, 0.1), (0.1, 0.1), (0.9, 0.1), (0.8, 0.1), (0.0, 0.0)],
        );
        assert_eq!(ev, vec!["start 0 @2", "end 0 @4"]);
    }

    #[test]
    fn a_stronger_new_label_ends_the_running_one() {
        let mut s = Smoother::new(&cfg(1000));
        let ev = run(&mut s, &[(0.9, 0.1), (0.4, 0.6), (0.1, 0.9)]);
        assert_eq!(ev, vec!["start 0 @0", "end 0 @1", "start 1 @1", "end 1 @3"]);
    }

    #[test]
    fn the_end_of_the_stream_closes_a_running_segment() {
        let mut s = Smoother::new(&cfg(1000));
        assert_eq!(run(&mut s, &[(0.2, 0.7)]), vec!["start 1 @0", "end 1 @1"]);
    }
}
