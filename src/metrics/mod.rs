//! Metrics: declared here once, registered once, and served over HTTP (`/metrics`, `/healthz`,
//! `/readyz`) on a small tokio runtime of their own, so scrapes never wait on decode or
//! inference threads. Names follow `vigil_<thing>_<unit>`; labels come only from small fixed
//! sets (stream, stage, model, type). See docs/metrics.md.

mod http;
mod ready;

pub use http::{ready, serve, MetricsServer};
pub use ready::Readiness;

use prometheus::{
    Counter, CounterVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry,
};

pub use crate::config::Branch;
pub use labels::{DownReason, Drop, LabelValue, Outcome, Stage, StreamState};

mod labels;

/// One stage's processed and dropped counters and its time per item.
#[derive(Clone)]
pub struct StageMeter {
    processed: IntCounter,
    seconds: Histogram,
    dropped: IntCounterVec,
    stage: Stage,
}

impl StageMeter {
    /// One item done, its work having started at `started`.
    pub fn done(&self, started: std::time::Instant) {
        self.processed.inc();
        self.seconds.observe(started.elapsed().as_secs_f64());
    }

    /// `n` items done together (a batch) since `started`; each is timed at its share.
    pub fn done_batch(&self, n: usize, started: std::time::Instant) {
        let each = started.elapsed().as_secs_f64() / n.max(1) as f64;
        for _ in 0..n {
            self.processed.inc();
            self.seconds.observe(each);
        }
    }

    /// An item dropped instead of processed.
    pub fn dropped(&self, reason: Drop) {
        self.dropped
            .with_label_values(&[self.stage.as_str(), reason.as_str()])
            .inc();
    }
}

/// Every metric vigil exports.
pub struct Metrics {
    registry: Registry,
    /// Frames read from the source, per stream.
    frames_decoded: IntCounterVec,
    /// Frames a branch's sampler kept, per stream and stage (`action`, `faces`); a frame kept
    /// twice counts twice.
    frames_sampled: IntCounterVec,
    /// Faces found by the detector, per stream.
    faces_detected: IntCounterVec,
    /// Clips that went through the classifier, per stream.
    clips_classified: IntCounterVec,
    /// Events handed to the sinks, per event type.
    events_emitted: IntCounterVec,
    /// Failed sink writes, per sink.
    sink_errors: IntCounterVec,
    /// Deliveries by network sinks, per sink and outcome (`ok`, `error`).
    sink_published: IntCounterVec,
    /// Events waiting in a network sink's spool.
    spool_depth: IntGaugeVec,
    /// Events dropped from a full spool, per sink.
    spool_dropped: IntCounterVec,
    /// Wall time of one inference call, per model.
    inference_seconds: HistogramVec,
    /// Clips in one inference call, per model.
    inference_batch: HistogramVec,
    /// Items waiting in a stage's input queue.
    queue_depth: IntGaugeVec,
    /// 1 while a stream is being read.
    stream_up: IntGaugeVec,
    /// Per stream, 1 for its current state (see `source::supervisor::STATES`), 0 for the others.
    stream_state: IntGaugeVec,
    /// Frames dropped by the live policy, per stream, stage (the branch whose queue was full,
    /// or `faces` at the face worker's queue) and reason (`queue_full`, `shutdown`).
    frames_dropped: IntCounterVec,
    /// Clips not classified, per stream and reason (`classifier_busy`, `shutdown`).
    clips_dropped: IntCounterVec,
    /// Clips not classified because their stream's label was stable (`action.schedule`).
    clips_skipped: IntCounterVec,
    /// Live streams lost while up and reconnected, per stream and reason (`disconnected`,
    /// `stalled`, `error`).
    stream_reconnects: IntCounterVec,
    /// Failed connection attempts, per stream.
    stream_connect_failures: IntCounterVec,
    /// Seconds spent waiting on frozen live streams before giving up on them, per stream.
    stream_stalled_seconds: CounterVec,
    /// Seconds a file source waited for room in a full queue, per stream.
    stream_blocked_seconds: CounterVec,
    /// Seconds from reading a frame to its result reaching the events stage, per stage
    /// (`action`: a clip's last frame; `faces`: a sampled frame).
    capture_latency: HistogramVec,
    /// 1 once the models are loaded and every stream has opened or is retrying; set at each
    /// scrape from `readiness`.
    ready: IntGauge,
    /// What `/readyz` answers; see [`Readiness`].
    pub readiness: Readiness,
    /// Items each stage finished, per stage.
    stage_processed: IntCounterVec,
    /// Items each stage dropped, per stage and reason.
    stage_dropped: IntCounterVec,
    /// Seconds of work per item, per stage.
    stage_seconds: HistogramVec,
    /// With a shared gallery store: `vigil_gallery_store_up` and
    /// `vigil_gallery_sync_lag_seconds`, registered when first asked for.
    gallery_store: std::sync::OnceLock<(IntGauge, prometheus::Gauge)>,
    /// The motion gate's `vigil_motion_active` and `vigil_motion_skipped_total`, registered
    /// when the first gated stream starts.
    motion: std::sync::OnceLock<(IntGaugeVec, IntCounterVec)>,
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("registered once");
            c
        };
        let frames_decoded = counter(
            "vigil_frames_decoded_total",
            "Frames read from the source.",
            &["stream"],
        );
        let frames_sampled = counter(
            "vigil_frames_sampled_total",
            "Frames kept by a branch's sampler.",
            &["stream", "stage"],
        );
        let faces_detected = counter(
            "vigil_faces_detected_total",
            "Faces found by the face detector.",
            &["stream"],
        );
        let clips_classified = counter(
            "vigil_clips_classified_total",
            "Clips classified by the action model.",
            &["stream"],
        );
        let events_emitted = counter(
            "vigil_events_emitted_total",
            "Events handed to the sinks.",
            &["type"],
        );
        let sink_errors = counter(
            "vigil_sink_errors_total",
            "Failed writes to a sink.",
            &["sink"],
        );
        let sink_published = counter(
            "vigil_sink_published_total",
            "Delivery attempts by network sinks, by outcome.",
            &["sink", "outcome"],
        );
        let spool_dropped = counter(
            "vigil_spool_dropped_total",
            "Events dropped from a full spool.",
            &["sink"],
        );
        let spool_depth = IntGaugeVec::new(
            Opts::new(
                "vigil_spool_depth_events",
                "Events waiting in a network sink's spool.",
            ),
            &["sink"],
        )
        .expect("valid metric");
        let stage_processed = counter(
            "vigil_stage_processed_total",
            "Items a stage finished.",
            &["stage"],
        );
        let stage_dropped = counter(
            "vigil_stage_dropped_total",
            "Items a stage dropped.",
            &["stage", "reason"],
        );
        let stage_seconds = HistogramVec::new(
            HistogramOpts::new("vigil_stage_seconds", "Seconds of work per item.").buckets(vec![
                0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                5.0, 10.0,
            ]),
            &["stage"],
        )
        .expect("valid metric");
        let frames_dropped = counter(
            "vigil_frames_dropped_total",
            "Frames dropped by the live policy.",
            &["stream", "stage", "reason"],
        );
        let clips_dropped = counter(
            "vigil_clips_dropped_total",
            "Clips dropped before classification.",
            &["stream", "reason"],
        );
        let clips_skipped = counter(
            "vigil_clips_skipped_total",
            "Clips not classified while their stream's label was stable (adaptive scheduling).",
            &["stream"],
        );
        let stream_reconnects = counter(
            "vigil_stream_reconnects_total",
            "Live streams lost while up, and reconnected.",
            &["stream", "reason"],
        );
        let stream_connect_failures = counter(
            "vigil_stream_connect_failures_total",
            "Failed connection attempts to a live stream.",
            &["stream"],
        );
        let seconds = |name: &str, help: &str| {
            let c = CounterVec::new(Opts::new(name, help), &["stream"]).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("registered once");
            c
        };
        let stream_stalled_seconds = seconds(
            "vigil_stream_stalled_seconds_total",
            "Seconds spent waiting on a frozen live stream.",
        );
        let stream_blocked_seconds = seconds(
            "vigil_stream_blocked_seconds_total",
            "Seconds a file source waited for room downstream.",
        );
        let capture_latency = HistogramVec::new(
            HistogramOpts::new(
                "vigil_capture_latency_seconds",
                "Seconds from reading a frame to its result reaching the events stage.",
            )
            .buckets(vec![
                0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 7.5, 10.0, 15.0, 20.0,
                30.0, 60.0, 120.0,
            ]),
            &["stage"],
        )
        .expect("valid metric");

        let inference_seconds = HistogramVec::new(
            HistogramOpts::new(
                "vigil_inference_seconds",
                "Wall time of one inference call.",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
            &["model"],
        )
        .expect("valid metric");
        let inference_batch = HistogramVec::new(
            HistogramOpts::new(
                "vigil_inference_batch_clips",
                "Clips in one inference call.",
            )
            .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0]),
            &["model"],
        )
        .expect("valid metric");
        let queue_depth = IntGaugeVec::new(
            Opts::new(
                "vigil_queue_depth_items",
                "Items waiting in a stage's input queue.",
            ),
            &["stage"],
        )
        .expect("valid metric");
        let stream_up = IntGaugeVec::new(
            Opts::new("vigil_stream_up", "1 while the stream is being read."),
            &["stream"],
        )
        .expect("valid metric");
        let stream_state = IntGaugeVec::new(
            Opts::new(
                "vigil_stream_state",
                "1 for the stream's current state, 0 for the others.",
            ),
            &["stream", "state"],
        )
        .expect("valid metric");
        let ready = IntGauge::new(
            "vigil_ready",
            "1 once models are loaded and streams opened.",
        )
        .expect("valid metric");
        let build_info = IntGaugeVec::new(
            Opts::new(
                "vigil_build_info",
                "Always 1; the labels say which build runs.",
            ),
            &["version"],
        )
        .expect("valid metric");
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        for m in [
            Box::new(inference_seconds.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(inference_batch.clone()),
            Box::new(capture_latency.clone()),
            Box::new(stage_seconds.clone()),
            Box::new(queue_depth.clone()),
            Box::new(stream_up.clone()),
            Box::new(stream_state.clone()),
            Box::new(spool_depth.clone()),
            Box::new(ready.clone()),
            Box::new(build_info),
            Box::new(prometheus::process_collector::ProcessCollector::new(
                std::process::id() as i32,
                "vigil",
            )),
        ] {
            registry.register(m).expect("registered once");
        }
        // Every stage's series exist from the start, before anything runs.
        for &stage in Stage::ALL {
            stage_processed.with_label_values(&[stage.as_str()]);
            stage_seconds.with_label_values(&[stage.as_str()]);
        }
        Metrics {
            registry,
            frames_decoded,
            frames_sampled,
            faces_detected,
            clips_classified,
            events_emitted,
            sink_errors,
            sink_published,
            spool_depth,
            spool_dropped,
            inference_seconds,
            inference_batch,
            queue_depth,
            stream_up,
            stream_state,
            frames_dropped,
            clips_dropped,
            clips_skipped,
            stream_reconnects,
            stream_connect_failures,
            stream_stalled_seconds,
            stream_blocked_seconds,
            capture_latency,
            ready,
            readiness: Readiness::new(),
            stage_processed,
            stage_dropped,
            stage_seconds,
            gallery_store: std::sync::OnceLock::new(),
            motion: std::sync::OnceLock::new(),
        }
    }

    /// The shared gallery store's gauges: whether it answered at the last try, and seconds
    /// since this node last knew it held every change (0 while the store is up).
    pub fn gallery_store(&self) -> (IntGauge, prometheus::Gauge) {
        self.gallery_store
            .get_or_init(|| {
                let up = IntGauge::new(
                    "vigil_gallery_store_up",
                    "1 while the shared gallery store answers, 0 while it does not.",
                )
                .expect("valid metric");
                let lag = prometheus::Gauge::new(
                    "vigil_gallery_sync_lag_seconds",
                    "Seconds since this node last knew it held every gallery change (0 while the store is up).",
                )
                .expect("valid metric");
                for m in [
                    Box::new(up.clone()) as Box<dyn prometheus::core::Collector>,
                    Box::new(lag.clone()),
                ] {
                    self.registry.register(m).expect("registered once");
                }
                (up, lag)
            })
            .clone()
    }

    fn motion(&self) -> &(IntGaugeVec, IntCounterVec) {
        self.motion.get_or_init(|| {
            let active = IntGaugeVec::new(
                Opts::new(
                    "vigil_motion_active",
                    "1 while the stream's motion gate is open (something moved lately).",
                ),
                &["stream"],
            )
            .expect("valid metric");
            let skipped = IntCounterVec::new(
                Opts::new(
                    "vigil_motion_skipped_total",
                    "Work the motion gate saved: clips not classified (stage action), sampled frames not searched for faces (stage faces).",
                ),
                &["stream", "stage"],
            )
            .expect("valid metric");
            for m in [
                Box::new(active.clone()) as Box<dyn prometheus::core::Collector>,
                Box::new(skipped.clone()),
            ] {
                self.registry.register(m).expect("registered once");
            }
            (active, skipped)
        })
    }

    /// 1 while the stream's motion gate is open.
    pub fn motion_active(&self, stream: &str) -> IntGauge {
        self.motion().0.with_label_values(&[stream])
    }

    /// Clips (`action`) or sampled frames (`faces`) the motion gate kept from inference.
    pub fn motion_skipped(&self, stream: &str, branch: Branch) -> IntCounter {
        self.motion()
            .1
            .with_label_values(&[stream, branch.as_str()])
    }

    /// Prepares the motion gate's series of a gated stream.
    pub fn init_motion(&self, s: &str, branches: &[Branch]) {
        self.motion_active(s);
        for &b in branches {
            self.motion_skipped(s, b);
        }
    }

    /// Prepares the series that exist while a stream runs, so each shows 0 rather than
    /// appearing only once something happens.
    pub fn init_stream(&self, s: &str, branches: &[Branch]) {
        self.frames_decoded(s);
        for &b in branches {
            self.frames_sampled(s, b);
            for &d in &[Drop::QueueFull, Drop::Shutdown] {
                self.frames_dropped(s, b, d);
            }
        }
        if branches.contains(&Branch::Action) {
            self.clips_classified(s);
            self.clips_skipped(s);
            for &d in &[Drop::ClassifierBusy, Drop::Shutdown] {
                self.clips_dropped(s, d);
            }
        }
        if branches.contains(&Branch::Faces) {
            self.faces_detected(s);
        }
        self.stream_up(s);
        for &state in StreamState::ALL {
            self.stream_state(s, state);
        }
        self.stream_connect_failures(s);
        for &r in &[
            DownReason::Disconnected,
            DownReason::Stalled,
            DownReason::Error,
        ] {
            self.stream_reconnects(s, r);
        }
        self.stream_stalled_seconds(s);
        self.stream_blocked_seconds(s);
    }

    /// Removes a removed stream's series, so a camera taken away leaves no stale series behind
    /// (and churn of stream ids cannot grow the registry).
    pub fn forget_stream(&self, s: &str) {
        let _ = self.frames_decoded.remove_label_values(&[s]);
        for &b in Branch::ALL {
            let _ = self.frames_sampled.remove_label_values(&[s, b.as_str()]);
            for &d in Drop::ALL {
                let _ = self
                    .frames_dropped
                    .remove_label_values(&[s, b.as_str(), d.as_str()]);
            }
        }
        for &d in Drop::ALL {
            let _ = self.clips_dropped.remove_label_values(&[s, d.as_str()]);
        }
        for v in [
            &self.clips_classified,
            &self.clips_skipped,
            &self.faces_detected,
            &self.stream_connect_failures,
        ] {
            let _ = v.remove_label_values(&[s]);
        }
        let _ = self.stream_up.remove_label_values(&[s]);
        for &state in StreamState::ALL {
            let _ = self.stream_state.remove_label_values(&[s, state.as_str()]);
        }
        for &r in DownReason::ALL {
            let _ = self.stream_reconnects.remove_label_values(&[s, r.as_str()]);
        }
        let _ = self.stream_stalled_seconds.remove_label_values(&[s]);
        let _ = self.stream_blocked_seconds.remove_label_values(&[s]);
        if let Some((active, skipped)) = self.motion.get() {
            let _ = active.remove_label_values(&[s]);
            for &b in Branch::ALL {
                let _ = skipped.remove_label_values(&[s, b.as_str()]);
            }
        }
    }

    /// Prepares the series of the shared stages: every stage, the enabled branches' latency
    /// and queue, the models, every event type.
    pub fn init_shared<T: LabelValue>(
        &self,
        branches: &[Branch],
        models: &[&str],
        event_types: impl IntoIterator<Item = T>,
    ) {
        for &stage in Stage::ALL {
            self.stage(stage);
        }
        for &b in branches {
            self.capture_latency(b);
            self.queue_depth(match b {
                Branch::Action => Stage::Classifier,
                Branch::Faces => Stage::Faces,
            });
        }
        for t in event_types {
            self.event_emitted(t);
        }
        for m in models {
            self.inference_seconds(m);
            self.inference_batch(m);
        }
    }

    /// The meter of one stage; its series exist from this call on.
    pub fn stage(&self, stage: Stage) -> StageMeter {
        StageMeter {
            processed: self.stage_processed.with_label_values(&[stage.as_str()]),
            seconds: self.stage_seconds.with_label_values(&[stage.as_str()]),
            dropped: self.stage_dropped.clone(),
            stage,
        }
    }

    /// Items `stage` finished so far.
    pub fn stage_processed(&self, stage: Stage) -> u64 {
        self.stage_processed
            .with_label_values(&[stage.as_str()])
            .get()
    }

    /// Prepares the series of the configured sinks (`stdout`, `file`, `mqtt`, `webhook`).
    pub fn init_sinks(&self, sinks: &[&'static str]) {
        for s in sinks {
            self.sink_errors(s);
            if matches!(*s, "mqtt" | "webhook") {
                for &o in Outcome::ALL {
                    self.sink_published(s, o);
                }
                self.spool_depth(s);
                self.spool_dropped(s);
            }
        }
    }

    pub fn frames_decoded(&self, stream: &str) -> IntCounter {
        self.frames_decoded.with_label_values(&[stream])
    }

    pub fn frames_sampled(&self, stream: &str, branch: Branch) -> IntCounter {
        self.frames_sampled
            .with_label_values(&[stream, branch.as_str()])
    }

    pub fn faces_detected(&self, stream: &str) -> IntCounter {
        self.faces_detected.with_label_values(&[stream])
    }

    pub fn clips_classified(&self, stream: &str) -> IntCounter {
        self.clips_classified.with_label_values(&[stream])
    }

    /// `t` is an event type.
    pub fn event_emitted(&self, t: impl LabelValue) -> IntCounter {
        self.events_emitted.with_label_values(&[t.label()])
    }

    /// `sink` is a [`crate::config::SinkConfig::name`].
    pub fn sink_errors(&self, sink: &'static str) -> IntCounter {
        self.sink_errors.with_label_values(&[sink])
    }

    pub fn sink_published(&self, sink: &'static str, outcome: Outcome) -> IntCounter {
        self.sink_published
            .with_label_values(&[sink, outcome.as_str()])
    }

    pub fn spool_depth(&self, sink: &'static str) -> IntGauge {
        self.spool_depth.with_label_values(&[sink])
    }

    pub fn spool_dropped(&self, sink: &'static str) -> IntCounter {
        self.spool_dropped.with_label_values(&[sink])
    }

    /// `model` is the model file's stem.
    pub fn inference_seconds(&self, model: &str) -> Histogram {
        self.inference_seconds.with_label_values(&[model])
    }

    pub fn inference_batch(&self, model: &str) -> Histogram {
        self.inference_batch.with_label_values(&[model])
    }

    pub fn queue_depth(&self, stage: Stage) -> IntGauge {
        self.queue_depth.with_label_values(&[stage.as_str()])
    }

    pub fn stream_up(&self, stream: &str) -> IntGauge {
        self.stream_up.with_label_values(&[stream])
    }

    pub fn stream_state(&self, stream: &str, state: StreamState) -> IntGauge {
        self.stream_state
            .with_label_values(&[stream, state.as_str()])
    }

    pub fn frames_dropped(&self, stream: &str, branch: Branch, why: Drop) -> IntCounter {
        self.frames_dropped
            .with_label_values(&[stream, branch.as_str(), why.as_str()])
    }

    pub fn clips_dropped(&self, stream: &str, why: Drop) -> IntCounter {
        self.clips_dropped
            .with_label_values(&[stream, why.as_str()])
    }

    /// Clips skipped as stable, over every stream still known.
    pub fn clips_skipped_total(&self) -> u64 {
        use prometheus::core::Collector;
        self.clips_skipped
            .collect()
            .iter()
            .flat_map(|f| f.get_metric())
            .map(|m| m.get_counter().get_value() as u64)
            .sum()
    }

    pub fn clips_skipped(&self, stream: &str) -> IntCounter {
        self.clips_skipped.with_label_values(&[stream])
    }

    pub fn stream_reconnects(&self, stream: &str, why: DownReason) -> IntCounter {
        self.stream_reconnects
            .with_label_values(&[stream, why.as_str()])
    }

    pub fn stream_connect_failures(&self, stream: &str) -> IntCounter {
        self.stream_connect_failures.with_label_values(&[stream])
    }

    pub fn stream_stalled_seconds(&self, stream: &str) -> Counter {
        self.stream_stalled_seconds.with_label_values(&[stream])
    }

    pub fn stream_blocked_seconds(&self, stream: &str) -> Counter {
        self.stream_blocked_seconds.with_label_values(&[stream])
    }

    pub fn capture_latency(&self, branch: Branch) -> Histogram {
        self.capture_latency.with_label_values(&[branch.as_str()])
    }

    /// The exposition text, as `/metrics` serves it.
    pub fn render(&self) -> String {
        self.ready
            .set(i64::from(self.readiness.not_ready().is_none()));
        let mut buf = String::new();
        prometheus::TextEncoder::new()
            .encode_utf8(&self.registry.gather(), &mut buf)
            .expect("text encoding of gathered metrics");
        buf
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
