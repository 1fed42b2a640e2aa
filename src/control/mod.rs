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

/// `vigil run`: runs the config's streams (and those the API added before), serves the metrics
/// (and, with an `api` section, the API) once they have started, until every stream has ended
/// or, with the API, until `stop`.
pub fn run(p: Prepared, mut opts: RunOptions, stop: Shutdown) -> anyhow::Result<Summary> {
    let metrics = Arc::new(Metrics::new());
    if p.loaded.config.api.is_none() {
        let m = metrics.clone();
        let cfg = p.loaded.config.metrics.clone();
        return pipeline::run(p, opts, metrics, stop, move |_| serve_metrics(&cfg, &m));
    }
    opts.serve = true;
    api::run(p, opts, metrics, stop)
}

/// Serves `/metrics`, `/healthz` and `/readyz` when the config asks for them.
pub fn serve_metrics(
    cfg: &crate::config::MetricsConfig,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<Option<crate::metrics::MetricsServer>> {
    if !cfg.enabled {
        return Ok(None);
    }
    let server = crate::metrics::serve(metrics.clone(), &cfg.listen)?;
    tracing::info!("metrics on http://{}/metrics", server.addr);
    Ok(Some(server))
}
