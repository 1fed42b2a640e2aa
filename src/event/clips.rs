//! The clips of recent action events, kept in memory so that the API can explain an event
//! after the fact (`POST /v1/events/{id}/explanation`, docs/api.md): the model's input crops of
//! the clip an `action.started` or `action.ended` event names (its `clip` span), for live
//! cameras as for files.
//!
//! Bounded by count (`api.event_clips`, the oldest dropped first). One clip is `action.frames`
//! crops of `action.crop`² RGB bytes (32 x 224 x 224 x 3 = 4.8 MB at the defaults); the crops
//! are shared (reference-counted) with every other clip that holds the same frame, so the
//! started and ended events of one segment that name the same clip cost one clip, and the bound
//! `api.event_clips` x one clip is never exceeded.

use super::{EventType, Span};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

/// One frame as the model is fed it: `side * side * 3` RGB bytes.
pub type Crop = Arc<[u8]>;

/// The clip of one action event.
#[derive(Debug)]
pub struct EventClip {
    pub stream: String,
    pub kind: EventType,
    pub label: String,
    /// The event's `source` (the model's label list or `custom`).
    pub source: String,
    /// The clip's media times, as in the event.
    pub span: Span,
    pub frames: Arc<[Crop]>,
}

/// The clips of the newest action events, at most `cap`.
pub struct ClipStore {
    kept: Mutex<VecDeque<(String, Arc<EventClip>)>>,
    cap: usize,
}

impl ClipStore {
    /// A store of at most `cap` clips (0: none are kept).
    pub fn new(cap: usize) -> ClipStore {
        ClipStore {
            kept: Mutex::new(VecDeque::with_capacity(cap.min(1024))),
            cap,
        }
    }

    /// Whether clips are kept at all.
    pub fn enabled(&self) -> bool {
        self.cap > 0
    }

    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// Keeps the clip of event `id`, dropping the oldest beyond the bound.
    pub fn keep(&self, id: &str, clip: EventClip) {
        if self.cap == 0 {
            return;
        }
        let mut g = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        while g.len() >= self.cap {
            g.pop_front();
        }
        g.push_back((id.to_string(), Arc::new(clip)));
    }

    /// The clip of event `id`, while it is kept.
    pub fn get(&self, id: &str) -> Option<Arc<EventClip>> {
        let g = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        g.iter()
            .rev()
            .find(|(k, _)| k == id)
            .map(|(_, c)| c.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clip(n: u8) -> EventClip {
        let crop: Crop = vec![n; 12].into();
        EventClip {
            stream: "cam".into(),
            kind: EventType::ActionStarted,
            label: "x".into(),
            source: "kinetics400".into(),
            span: Span {
                start: n as f64,
                end: n as f64 + 1.0,
            },
            frames: vec![crop; 4].into(),
        }
    }

    #[test]
    fn keeps_the_newest_clips_up_to_its_bound_and_none_when_off() {
        let s = ClipStore::new(2);
        for n in 0..3 {
            s.keep(&format!("e{n}"), clip(n));
        }
        assert!(s.get("e0").is_none(), "the oldest is dropped");
        assert_eq!(s.get("e1").unwrap().span.start, 1.0);
        assert_eq!(s.get("e2").unwrap().frames[3][0], 2);
        let off = ClipStore::new(0);
        off.keep("e0", clip(0));
        assert!(off.get("e0").is_none() && !off.enabled());
    }
}
