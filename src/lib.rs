//! vigil: video streams in, labelled events out.
//!
//! - [`config`]: the YAML schema, field positions, validation with `file:line:column` problems.
//! - [`source`]: frame readers (video files through OpenCV) and the reading loop.
//! - [`action`]: sampler, clip preprocessing and windows, the batching classifier, the smoother.
//! - [`infer`]: ONNX Runtime loading, sessions on a chosen execution provider, tensor contracts.
//! - [`face`]: MTCNN detection, five-point alignment, the embedder, per-stream tracks.
//! - [`gallery`]: the one-shot gallery: enrolment, persistence, verify and identify.
//! - [`event`]: the event schema and the sinks (stdout, JSONL file).
//! - [`metrics`]: the Prometheus registry and the `/metrics`, `/healthz`, `/readyz` endpoints.
//! - [`pipeline`]: preparation (what `vigil check` verifies) and the threads of a run.
//! - [`bench`]: the measurements behind `vigil bench`.

pub mod action;
pub mod bench;
pub mod config;
pub mod event;
pub mod face;
pub mod gallery;
pub mod infer;
pub mod metrics;
pub mod pipeline;
pub mod source;
