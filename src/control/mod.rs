//! The control plane: what changes a running vigil and what the CLI shares with it.
//!
//! - [`gallery`]: enrol, remove, identify and verify, calibrate, reject, unknown groups and
//!   tune, for `vigil gallery` and the API alike.
//! - [`api`]: the HTTP API under `/v1` (axum), with bearer tokens; `api/learn.rs` holds the
//!   routes of what the gallery learns (calibration, unknowns, rejections).
//! - [`explain`]: explanations of recent action events (occlusion maps), queued and computed
//!   on a thread and session of their own; `api/explain.rs` holds their routes.
//! - [`state`]: streams added and removed over the API, persisted crash-safely in
//!   `api.state_dir` so they survive a restart (the config file is never rewritten).
//! - [`token`]: API tokens: making them, and checking them in constant time.
//! - [`run`]: a run with the API: the topology, the config's and the persisted streams, the
//!   server, until a signal.

pub mod actions;
pub mod api;
pub mod console;
pub mod explain;
pub mod gallery;
pub mod state;
pub mod token;

use crate::metrics::Metrics;
use crate::pipeline::{self, Prepared, RunOptions, Summary};
use crate::shutdown::Shutdown;
use std::sync::Arc;

/// `vigil run`: runs the config's streams (and those the API added before) until every stream
/// has ended or, with the API, until `stop`. `metrics` is the one the caller's health server
/// (see [`serve_metrics`]) answers from; the run marks it ready (see [`Readiness`]).
///
/// [`Readiness`]: crate::metrics::Readiness
pub fn run(
    p: Prepared,
    mut opts: RunOptions,
    metrics: Arc<Metrics>,
    server: Option<&crate::metrics::MetricsServer>,
    stop: Shutdown,
) -> anyhow::Result<Summary> {
    let addr = server.map(|s| s.addr);
    if p.loaded.config.api.is_none() {
        let m = metrics.clone();
        return pipeline::run(p, opts, metrics, stop, move |topo| {
            streams_started(&m, topo, addr);
            Ok(())
        });
    }
    opts.serve = true;
    api::run(p, opts, metrics, addr, stop)
}

/// Every stream has started and its series exist: `/metrics` answers from now on, and
/// `/readyz` once no stream is still connecting for the first time.
pub(crate) fn streams_started(
    metrics: &Arc<Metrics>,
    topo: &Arc<pipeline::Topology>,
    addr: Option<std::net::SocketAddr>,
) {
    // Weak: the topology holds the metrics, which must not keep the topology alive.
    let topo = Arc::downgrade(topo);
    metrics.readiness.started(move || {
        let topo = topo.upgrade()?;
        let waiting: Vec<String> = topo
            .list()
            .into_iter()
            .filter(|s| !s.status.settled())
            .map(|s| s.config.id.clone())
            .collect();
        (!waiting.is_empty()).then(|| {
            format!(
                "stream {} has not opened yet (first connection)",
                waiting.join(", ")
            )
        })
    });
    if let Some(addr) = addr {
        tracing::info!("metrics on http://{addr}/metrics");
    }
}

/// Serves `/metrics`, `/healthz` and `/readyz` when the config asks for them, from now on:
/// call it before preparing, so a probe sees the process starting (`/readyz` 503 with the
/// reason) instead of nothing listening while the models and the gallery load.
pub fn serve_metrics(
    cfg: &crate::config::MetricsConfig,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<Option<crate::metrics::MetricsServer>> {
    if !cfg.enabled {
        return Ok(None);
    }
    let server = crate::metrics::serve(metrics.clone(), &cfg.listen)?;
    tracing::info!(
        "health on http://{0}/healthz, readiness on http://{0}/readyz",
        server.addr
    );
    Ok(Some(server))
}
