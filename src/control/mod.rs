//! The control plane: what changes a running vigil and what the CLI shares with it.
//!
//! - [`gallery`]: enrol, remove, identify and verify, for `vigil gallery` and the API alike.
//! - [`api`]: the HTTP API under `/v1` (axum), with bearer tokens.
//! - [`state`]: streams added and removed over the API, persisted crash-safely in
//!   `api.state_dir` so they survive a restart (the config file is never rewritten).
//! - [`token`]: API tokens: making them, and checking them in constant time.
//! - [`run`]: a run with the API: the topology, the config's and the persisted streams, the
//!   server, until a signal.

pub mod api;
pub mod gallery;
pub mod state;
pub mod token;

use crate::metrics::Metrics;
use crate::pipeline::{self, Prepared, RunOptions, Summary};
use crate::shutdown::Shutdown;
use std::sync::Arc;

/// `vigil run`: serves the metrics (and, with an `api` section, the API), runs the config's
/// streams (and those the API added before), until every stream has ended or, with the API,
/// until `stop`.
pub fn run(p: Prepared, mut opts: RunOptions, stop: Shutdown) -> anyhow::Result<Summary> {
    let cfg = p.loaded.config.clone();
    let metrics = Arc::new(Metrics::new());
    let _server = if cfg.metrics.enabled {
        let server = crate::metrics::serve(metrics.clone(), &cfg.metrics.listen)?;
        tracing::info!("metrics on http://{}/metrics", server.addr);
        Some(server)
    } else {
        None
    };
    if cfg.api.is_none() {
        return pipeline::run(p, opts, metrics, stop);
    }
    opts.serve = true;
    api::run(p, opts, metrics, stop)
}
