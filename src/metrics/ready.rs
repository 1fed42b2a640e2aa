//! Readiness, as `/readyz` answers it. `vigil run` serves `/healthz` and `/readyz` from its
//! first moment, before the models and the gallery are loaded (an HNSW build at a large gallery
//! takes minutes), so a probe can tell "starting" from "dead". `/readyz` answers 503 with the
//! reason until every model is loaded and every stream has opened or is retrying; `/metrics`
//! answers 503 until every stream's series exist, so its first 200 already has all of them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// Why a run is not ready yet, or `None` when it is: the streams' check, installed once the
/// models are loaded.
type StreamsCheck = Box<dyn Fn() -> Option<String> + Send + Sync>;

pub struct Readiness {
    /// Set while preparing (loading models, the gallery, its index); `None` afterwards.
    preparing: Mutex<Option<String>>,
    /// Asked at every `/readyz` once prepared: which stream has not yet opened or failed.
    streams: Mutex<Option<StreamsCheck>>,
    /// Every stream's series is registered: `/metrics` may answer.
    serving: AtomicBool,
    /// Ready once, ready for good: a stream added over the API later, or a camera reconnecting,
    /// must not take a serving instance out of its load balancer.
    ready: AtomicBool,
}

impl Readiness {
    pub fn new() -> Readiness {
        Readiness {
            preparing: Mutex::new(Some("starting".into())),
            streams: Mutex::new(None),
            serving: AtomicBool::new(false),
            ready: AtomicBool::new(false),
        }
    }

    /// What the run is doing before it can be ready (shown by `/readyz`).
    pub fn preparing(&self, what: &str) {
        *self.preparing.lock().unwrap_or_else(|p| p.into_inner()) = Some(what.to_string());
    }

    /// The models are loaded and the streams started: from now on readiness is `streams()`,
    /// `None` when every stream has opened or is retrying. `/metrics` answers from now on.
    pub fn started(&self, streams: impl Fn() -> Option<String> + Send + Sync + 'static) {
        *self.streams.lock().unwrap_or_else(|p| p.into_inner()) = Some(Box::new(streams));
        *self.preparing.lock().unwrap_or_else(|p| p.into_inner()) = None;
        self.serving.store(true, Ordering::SeqCst);
        // A run with no stream to wait for is ready now, before any is added over the API.
        let _ = self.not_ready();
    }

    /// Whether `/metrics` may answer (every configured stream's series exist).
    pub fn serving(&self) -> bool {
        self.serving.load(Ordering::SeqCst)
    }

    /// `None` when ready, else why not.
    pub fn not_ready(&self) -> Option<String> {
        if self.ready.load(Ordering::SeqCst) {
            return None;
        }
        if let Some(why) = &*self.preparing.lock().unwrap_or_else(|p| p.into_inner()) {
            return Some(why.clone());
        }
        let why = match &*self.streams.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(check) => check(),
            None => Some("starting".into()),
        };
        if why.is_none() {
            self.ready.store(true, Ordering::SeqCst);
        }
        why
    }
}

impl Default for Readiness {
    fn default() -> Self {
        Readiness::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU8;
    use std::sync::Arc;

    #[test]
    fn ready_only_once_prepared_and_every_stream_has_opened_or_failed() {
        let r = Readiness::new();
        assert_eq!(r.not_ready().as_deref(), Some("starting"));
        assert!(!r.serving());
        r.preparing("loading the models");
        assert_eq!(r.not_ready().as_deref(), Some("loading the models"));
        let connecting = Arc::new(AtomicU8::new(1));
        let c = connecting.clone();
        r.started(move || {
            (c.load(Ordering::SeqCst) > 0).then(|| "stream cam has not opened yet".to_string())
        });
        assert!(r.serving());
        assert_eq!(
            r.not_ready().as_deref(),
            Some("stream cam has not opened yet")
        );
        connecting.store(0, Ordering::SeqCst);
        assert_eq!(r.not_ready(), None);
        // Ready for good: a stream connecting later does not take it back.
        connecting.store(1, Ordering::SeqCst);
        assert_eq!(r.not_ready(), None);
    }
}
