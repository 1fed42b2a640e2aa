//! Adaptive clip scheduling (`action.schedule`): while a stream's label is stable and
//! confident, classify fewer of its clips; on any change, every clip again.
//!
//! A stream is *stable* once `stable_clips` classified clips in a row gave the same top label
//! at or above the smoother's start threshold (and the same custom actions above their
//! thresholds). While it stays stable the classifier skips clips between the ones it
//! classifies: one after the first stable result, two after the next, up to `max_skip`. The
//! first classified clip that differs ends the run and makes the stream dense again.
//!
//! What it does to events: a segment that is running is the only thing a skipped clip could
//! have changed, so starts are never delayed; a segment's end (and whatever starts after it) is
//! seen at most `max_skip` clips later (`max_skip * stride / sample_fps` seconds of media), and a
//! different action shorter than that inside a stable stretch can be missed. Off: every clip is
//! classified, as before.

use std::collections::HashMap;

/// What one classified clip said, as far as stability goes: the model's top label when it is
/// confident (None otherwise) and which custom actions are above their thresholds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    top: Option<usize>,
    custom: Vec<bool>,
}

impl Verdict {
    /// `probs`: the model's class probabilities; `custom`: custom actions' scores (0.5 at
    /// their thresholds); `threshold`: the smoother's start threshold.
    pub fn of(probs: &[f32], custom: &[f32], threshold: f32) -> Verdict {
        let top = probs
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .filter(|(_, p)| **p >= threshold)
            .map(|(i, _)| i);
        Verdict {
            top,
            custom: custom.iter().map(|s| *s >= 0.5).collect(),
        }
    }
}

#[derive(Default)]
struct StreamState {
    last: Option<Verdict>,
    /// Classified clips in a row with the same confident verdict.
    run: usize,
    /// Clips still to skip before the next one is classified.
    skip: usize,
}

/// Per-stream scheduling state, owned by the classifier stage.
pub struct Schedule {
    enabled: bool,
    /// The smoother's start threshold: a label below it is not confident.
    threshold: f32,
    stable_clips: usize,
    max_skip: usize,
    streams: HashMap<usize, StreamState>,
}

impl Schedule {
    pub fn new(enabled: bool, stable_clips: usize, max_skip: usize, threshold: f32) -> Schedule {
        Schedule {
            enabled: enabled && max_skip > 0,
            threshold,
            stable_clips: stable_clips.max(1),
            max_skip,
            streams: HashMap::new(),
        }
    }

    /// `action.schedule` with the smoother's start threshold.
    pub fn from_config(a: &crate::config::ActionConfig) -> Schedule {
        let s = &a.schedule;
        Schedule::new(
            s.adaptive,
            s.stable_clips,
            s.max_skip,
            a.smoother.start_threshold,
        )
    }

    /// Whether the stream's next clip is skipped (and counts it as skipped).
    pub fn skip(&mut self, stream: usize) -> bool {
        match self.streams.get_mut(&stream) {
            Some(s) if s.skip > 0 => {
                s.skip -= 1;
                true
            }
            _ => false,
        }
    }

    /// Records what a classified clip scored: the model's probabilities and the custom
    /// actions' scores.
    pub fn classified(&mut self, stream: usize, probs: &[f32], custom: &[f32]) {
        if !self.enabled {
            return;
        }
        let v = Verdict::of(probs, custom, self.threshold);
        let s = self.streams.entry(stream).or_default();
        let confident = v.top.is_some();
        if confident && s.last.as_ref() == Some(&v) {
            s.run += 1;
        } else {
            s.run = usize::from(confident);
        }
        s.last = Some(v);
        s.skip = if s.run >= self.stable_clips {
            (s.run + 1 - self.stable_clips).min(self.max_skip)
        } else {
            0
        };
    }

    /// A gap or the end of a stream: it starts dense again.
    pub fn reset(&mut self, stream: usize) {
        self.streams.remove(&stream);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probs(top: usize, p: f32) -> Vec<f32> {
        let mut v = vec![(1.0 - p) / 9.0; 10];
        v[top] = p;
        v
    }

    /// Feeds a label per clip (None: not confident); returns the indices classified.
    fn classified(s: &mut Schedule, labels: &[Option<usize>]) -> Vec<usize> {
        let mut done = Vec::new();
        for (i, l) in labels.iter().enumerate() {
            if s.skip(0) {
                continue;
            }
            done.push(i);
            let p = match l {
                Some(t) => probs(*t, 0.9),
                None => probs(0, 0.2),
            };
            s.classified(0, &p, &[]);
        }
        done
    }

    #[test]
    fn a_stable_label_is_classified_less_and_less_often_up_to_max_skip() {
        let mut s = Schedule::new(true, 2, 2, 0.5);
        let got = classified(&mut s, &[Some(3); 14]);
        // 0 and 1 agree (stable): skip 1; then skip 2 each time.
        assert_eq!(got, [0, 1, 3, 6, 9, 12]);
    }

    #[test]
    fn a_change_makes_the_stream_dense_again_and_unsure_clips_never_count() {
        let mut s = Schedule::new(true, 2, 3, 0.5);
        let mut labels = vec![Some(1); 6];
        labels.extend([Some(2); 6]);
        let got = classified(&mut s, &labels);
        // 0,1 stable -> skip 1 (2); 3 -> skip 2 (4,5); 6 says 2: dense; 7 agrees: skip 1 (8);
        // 9: skip 2 (10, 11).
        assert_eq!(got, [0, 1, 3, 6, 7, 9]);
        let mut s = Schedule::new(true, 2, 3, 0.5);
        assert_eq!(classified(&mut s, &[None; 6]), [0, 1, 2, 3, 4, 5]);
    }

    #[test]
    fn custom_actions_take_part_and_off_or_a_gap_means_every_clip() {
        let p = probs(1, 0.9);
        assert_ne!(Verdict::of(&p, &[0.7], 0.5), Verdict::of(&p, &[0.3], 0.5));
        let mut s = Schedule::new(true, 2, 2, 0.5);
        s.classified(0, &p, &[0.7]);
        s.classified(0, &p, &[0.3]);
        assert!(!s.skip(0), "a custom action that changed is a change");
        s.classified(0, &p, &[0.3]);
        assert!(s.skip(0));
        s.classified(0, &p, &[0.3]);
        s.reset(0);
        assert!(!s.skip(0));
        let mut off = Schedule::new(false, 1, 2, 0.5);
        off.classified(0, &p, &[]);
        off.classified(0, &p, &[]);
        assert!(!off.skip(0));
    }
}
