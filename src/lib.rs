//! vigil: video streams in, labelled events out.
//!
//! - [`config`]: the YAML schema, field positions, validation with `file:line:column` problems.
//! - [`source`]: frame readers (video files through OpenCV) and the reading loop.
//! - [`action`]: sampler, clip preprocessing and windows, the batching classifier, the smoother.
//! - [`infer`]: ONNX Runtime loading, sessions on a chosen execution provider, tensor contracts.
//! - [`face`]: MTCNN detection, five-point alignment, the embedder, per-stream tracks.
//! - [`gallery`]: the one-shot gallery: enrolment, persistence, verify and identify; what it
//!   learns from the user (calibration, unknown-face groups, negatives, a triplet-loss head).
//! - [`event`]: the event schema and the sinks (stdout, JSONL file).
//! - [`metrics`]: the Prometheus registry and the `/metrics`, `/healthz`, `/readyz` endpoints.
//! - [`pipeline`]: preparation (what `vigil check` verifies), the runtime topology that adds
//!   and removes streams while the shared stages run, and a whole run.
//! - [`control`]: the control plane: the HTTP API, persisted runtime changes, gallery
//!   operations shared by the CLI and the API, tokens.
//! - [`stage`]: the one contract every stage follows; [`shutdown`]: the one way to stop.
//! - [`annotate`]: annotated video of file streams.
//! - [`cluster`]: which streams this replica runs (rendezvous hashing over `cluster.replicas`).
//! - [`url`]: what a stream's `url` names (file, camera, network stream) and credential redaction.
//! - [`bench`]: the measurements behind `vigil bench`.
//! - [`explain`]: occlusion maps of what drove a label (`vigil explain`, and the API's
//!   explanations of action events).
//! - [`durable`]: crash-safe replacement of a file (gallery, persisted API state).
//! - [`echo`]: how users' values are repeated in messages (cut to 200 characters).
//!
//! Layers, lowest first (each imports only from those before it): `durable`, `echo`, `url`,
//! `cluster`, `config`, `shutdown`, `metrics`, `stage`, `source`, `infer`, `event`, `annotate`,
//! `gallery`, `action`, `face`, `pipeline`, `explain`, `control`, `bench`.

pub mod action;
pub mod annotate;
pub mod bench;
pub mod cluster;
pub mod config;
pub mod control;
pub mod draw;
pub mod durable;
pub mod echo;
pub mod event;
pub mod explain;
pub mod face;
pub mod gallery;
pub mod infer;
pub mod metrics;
pub mod pipeline;
pub mod preview;
pub mod shutdown;
pub mod source;
pub mod stage;
pub mod url;
