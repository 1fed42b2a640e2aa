//! What can be known of one running stream at any moment, for the API
//! (`GET /v1/streams/{id}`): its state (set by its supervisor), the reason and time of its last
//! stream event (set by the events stage), frames per second, drops and latency.

use crate::metrics::StreamState;
use prometheus::IntCounter;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

pub struct StreamStatus {
    pub id: Arc<str>,
    /// Cancelled once the stream's last event (`stream.down`, not retrying) is written.
    pub ended: crate::shutdown::Shutdown,
    state: AtomicU8,
    /// Its first connection attempt has ended (opened, failed and retrying, or ended): from
    /// then on the stream no longer holds up readiness, whatever its reconnections do.
    settled: AtomicBool,
    last: Mutex<Note>,
    /// Capture-to-result latency of the latest result, microseconds (0: none yet).
    latency_us: AtomicU64,
    decoded: IntCounter,
    dropped: Vec<IntCounter>,
    rate: Mutex<Rate>,
    /// The annotated frame for the console, fed only while watched.
    pub preview: Arc<crate::preview::Preview>,
}

#[derive(Clone)]
struct Note {
    reason: &'static str,
    detail: Option<String>,
    since: SystemTime,
}

struct Rate {
    at: Instant,
    frames: u64,
    fps: f64,
}

/// A snapshot of a stream's status.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StatusView {
    pub state: &'static str,
    /// Why it is in that state: `opened`, `reconnected`, `open_failed`, `disconnected`,
    /// `stalled`, `error`, `end_of_file`, `removed`, `shutdown`, or `starting`.
    pub reason: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// RFC 3339 time of the last state change reported.
    pub since: String,
    /// Frames decoded per second over the last few seconds.
    pub fps: f64,
    pub frames: u64,
    /// Frames dropped by the live policy, all branches.
    pub drops: u64,
    /// Seconds from capture to the latest result (null before the first).
    pub latency_seconds: Option<f64>,
}

impl StreamStatus {
    pub fn new(id: Arc<str>, decoded: IntCounter, dropped: Vec<IntCounter>) -> StreamStatus {
        let frames = decoded.get();
        StreamStatus {
            id,
            ended: crate::shutdown::Shutdown::new(),
            state: AtomicU8::new(StreamState::Connecting.index()),
            settled: AtomicBool::new(false),
            last: Mutex::new(Note {
                reason: "starting",
                detail: None,
                since: SystemTime::now(),
            }),
            latency_us: AtomicU64::new(0),
            decoded,
            dropped,
            rate: Mutex::new(Rate {
                at: Instant::now(),
                frames,
                fps: 0.0,
            }),
            preview: Arc::new(crate::preview::Preview::new()),
        }
    }

    pub fn set_state(&self, s: StreamState) {
        self.state.store(s.index(), Ordering::Relaxed);
        if s != StreamState::Connecting {
            self.settled.store(true, Ordering::Relaxed);
        }
    }

    /// Whether the first connection attempt has ended (see `settled`).
    pub fn settled(&self) -> bool {
        self.settled.load(Ordering::Relaxed)
    }

    pub fn state(&self) -> StreamState {
        StreamState::from_index(self.state.load(Ordering::Relaxed))
    }

    /// A stream event was written: its reason becomes the status's.
    pub fn note(&self, reason: &'static str, detail: Option<String>) {
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Note {
            reason,
            detail,
            since: SystemTime::now(),
        };
    }

    pub fn latency(&self, seconds: f64) {
        self.latency_us
            .store((seconds * 1e6).max(1.0) as u64, Ordering::Relaxed);
    }

    pub fn view(&self) -> StatusView {
        let note = self.last.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let frames = self.decoded.get();
        let fps = {
            let mut r = self.rate.lock().unwrap_or_else(|p| p.into_inner());
            let dt = r.at.elapsed().as_secs_f64();
            if dt >= 1.0 {
                r.fps = frames.saturating_sub(r.frames) as f64 / dt;
                r.at = Instant::now();
                r.frames = frames;
            }
            r.fps
        };
        let lat = self.latency_us.load(Ordering::Relaxed);
        StatusView {
            state: self.state().as_str(),
            reason: note.reason,
            detail: note.detail,
            since: chrono::DateTime::<chrono::Utc>::from(note.since)
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            fps: (fps * 100.0).round() / 100.0,
            frames,
            drops: self.dropped.iter().map(IntCounter::get).sum(),
            latency_seconds: (lat > 0).then(|| lat as f64 / 1e6),
        }
    }
}
