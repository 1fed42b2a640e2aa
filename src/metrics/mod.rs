//! Metrics: declared here once, registered once, and served over HTTP (`/metrics`, `/healthz`,
//! `/readyz`) on a small tokio runtime of their own, so scrapes never wait on decode or
//! inference threads. Names follow `vigil_<thing>_<unit>`; labels come only from small fixed
//! sets (stream, stage, model, type). See docs/metrics.md.

mod http;

pub use http::{serve, MetricsServer};

use prometheus::{
    HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

/// Every metric vigil exports.
pub struct Metrics {
    pub registry: Registry,
    /// Frames read from the source, per stream.
    pub frames_decoded: IntCounterVec,
    /// Frames a branch's sampler kept, per stream and stage (`action`, `faces`); a frame kept
    /// twice counts twice.
    pub frames_sampled: IntCounterVec,
    /// Faces found by the detector, per stream.
    pub faces_detected: IntCounterVec,
    /// Clips that went through the classifier, per stream.
    pub clips_classified: IntCounterVec,
    /// Events handed to the sinks, per event type.
    pub events_emitted: IntCounterVec,
    /// Failed sink writes, per sink.
    pub sink_errors: IntCounterVec,
    /// Wall time of one inference call, per model.
    pub inference_seconds: HistogramVec,
    /// Clips in one inference call, per model.
    pub inference_batch: HistogramVec,
    /// Items waiting in a stage's input queue.
    pub queue_depth: IntGaugeVec,
    /// 1 while a stream is being read.
    pub stream_up: IntGaugeVec,
    /// 1 once the models are loaded and the streams opened.
    pub ready: IntGauge,
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
            Box::new(queue_depth.clone()),
            Box::new(stream_up.clone()),
            Box::new(ready.clone()),
            Box::new(build_info),
            Box::new(prometheus::process_collector::ProcessCollector::new(
                std::process::id() as i32,
                "vigil",
            )),
        ] {
            registry.register(m).expect("registered once");
        }
        Metrics {
            registry,
            frames_decoded,
            frames_sampled,
            faces_detected,
            clips_classified,
            events_emitted,
            sink_errors,
            inference_seconds,
            inference_batch,
            queue_depth,
            stream_up,
            ready,
        }
    }

    /// Prepares the label sets that exist from the start, so every series shows 0 rather than
    /// appearing only once something happens.
    pub fn init_streams(&self, streams: &[&str], stages: &[&str], models: &[&str]) {
        for s in streams {
            self.frames_decoded.with_label_values(&[s]);
            for stage in stages {
                self.frames_sampled.with_label_values(&[s, stage]);
            }
            if stages.contains(&"action") {
                self.clips_classified.with_label_values(&[s]);
            }
            if stages.contains(&"faces") {
                self.faces_detected.with_label_values(&[s]);
            }
            self.stream_up.with_label_values(&[s]);
        }
        for t in crate::event::EventType::ALL {
            self.events_emitted.with_label_values(&[t.as_str()]);
        }
        for m in models {
            self.inference_seconds.with_label_values(&[m]);
            self.inference_batch.with_label_values(&[m]);
        }
        for stage in stages {
            let queue = if *stage == "action" {
                "classifier"
            } else {
                stage
            };
            self.queue_depth.with_label_values(&[queue]);
        }
    }

    /// The exposition text, as `/metrics` serves it.
    pub fn render(&self) -> String {
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
