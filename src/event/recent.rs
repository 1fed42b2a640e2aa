//! The recent events, kept in memory for the API: a bounded ring (`GET /v1/events`, resuming an
//! event stream after `Last-Event-ID`, finding an event's snapshot) and a broadcast to every
//! live subscriber (`GET /v1/events/stream`). The events stage pushes each event here after the
//! sinks; a slow subscriber never slows it (the broadcast drops for the laggard, who is told).

use super::{Event, EventType};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

/// One event as kept.
#[derive(Debug)]
pub struct Kept {
    /// Position in this run's sequence of events, from 1.
    pub seq: u64,
    pub id: String,
    pub stream: String,
    pub kind: EventType,
    /// The event's JSON line.
    pub json: String,
    /// The snapshot file the event refers to.
    pub snapshot: Option<std::path::PathBuf>,
}

/// Where a resume starts.
#[derive(Debug, PartialEq)]
pub enum After {
    /// The events after the given one (possibly none yet).
    Found,
    /// The given id is older than the ring (or unknown): events were missed.
    Gap,
}

pub struct Recent {
    ring: Mutex<(u64, VecDeque<Arc<Kept>>)>,
    cap: usize,
    tx: tokio::sync::broadcast::Sender<Arc<Kept>>,
    /// The clips of the newest action events, for explaining them (none unless
    /// [`Recent::with_clips`]).
    pub clips: super::clips::ClipStore,
}

impl Recent {
    pub fn new(cap: usize) -> Recent {
        let (tx, _) = tokio::sync::broadcast::channel(cap.clamp(16, 4096));
        Recent {
            ring: Mutex::new((0, VecDeque::with_capacity(cap.min(4096)))),
            cap: cap.max(1),
            tx,
            clips: super::clips::ClipStore::new(0),
        }
    }

    /// Also keeps the clips of the newest `clips` action events.
    pub fn with_clips(mut self, clips: usize) -> Recent {
        self.clips = super::clips::ClipStore::new(clips);
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (u64, VecDeque<Arc<Kept>>)> {
        self.ring.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn push(&self, e: &Event, json: &str) {
        let snapshot = match &e.payload {
            super::Payload::Action { snapshot, .. } | super::Payload::Face { snapshot, .. } => {
                snapshot.as_ref().map(std::path::PathBuf::from)
            }
            super::Payload::Stream { .. } => None,
        };
        let kept = {
            let mut g = self.lock();
            g.0 += 1;
            let kept = Arc::new(Kept {
                seq: g.0,
                id: e.id.clone(),
                stream: e.stream.clone(),
                kind: e.kind,
                json: json.to_string(),
                snapshot,
            });
            if g.1.len() == self.cap {
                g.1.pop_front();
            }
            g.1.push_back(kept.clone());
            kept
        };
        // No subscriber is not an error.
        let _ = self.tx.send(kept);
    }

    /// A live feed of the events pushed from now on.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Arc<Kept>> {
        self.tx.subscribe()
    }

    /// The events after `id` (all kept events when `id` is `None`), oldest first, at most
    /// `limit`, and whether `id` was found.
    pub fn after(&self, id: Option<&str>, limit: usize) -> (Vec<Arc<Kept>>, After) {
        let g = self.lock();
        let (from, found) = match id {
            None => (0, After::Found),
            Some(id) => match g.1.iter().position(|k| k.id == id) {
                Some(i) => (i + 1, After::Found),
                None => (0, After::Gap),
            },
        };
        (g.1.iter().skip(from).take(limit).cloned().collect(), found)
    }

    /// The newest `limit` events, oldest first.
    pub fn latest(&self, limit: usize) -> Vec<Arc<Kept>> {
        let g = self.lock();
        let skip = g.1.len().saturating_sub(limit);
        g.1.iter().skip(skip).cloned().collect()
    }

    /// The type of a kept event.
    pub fn kind(&self, id: &str) -> Option<EventType> {
        let g = self.lock();
        g.1.iter().rev().find(|k| k.id == id).map(|k| k.kind)
    }

    /// The snapshot of a kept event.
    pub fn snapshot(&self, id: &str) -> Option<Option<std::path::PathBuf>> {
        let g = self.lock();
        g.1.iter()
            .rev()
            .find(|k| k.id == id)
            .map(|k| k.snapshot.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Payload;

    fn ev(n: u32) -> Event {
        Event::new(
            EventType::StreamUp,
            &format!("s{n}"),
            0.0,
            Payload::Stream {
                reason: "opened".into(),
                detail: None,
                retrying: false,
            },
        )
    }

    #[test]
    fn resumes_after_a_kept_id_and_reports_a_gap_for_an_evicted_one() {
        let r = Recent::new(3);
        let events: Vec<Event> = (0..5).map(ev).collect();
        for e in &events {
            r.push(e, &e.to_json());
        }
        let (after, found) = r.after(Some(&events[2].id), 10);
        assert_eq!(found, After::Found);
        let streams: Vec<&str> = after.iter().map(|k| k.stream.as_str()).collect();
        assert_eq!(streams, ["s3", "s4"]);
        // events[0] fell out of the ring: the caller must be told it missed some.
        let (after, found) = r.after(Some(&events[0].id), 10);
        assert_eq!(found, After::Gap);
        assert_eq!(after.len(), 3);
        assert_eq!(r.latest(2).len(), 2);
        assert_eq!(r.latest(2)[1].seq, 5);
    }
}
