//! `/metrics`, `/healthz` and `/readyz` over HTTP/1.1 with axum, served from the start of a
//! run: `/healthz` always answers 200, `/readyz` 503 with the reason until ready, and `/metrics`
//! 503 until every configured stream's series exist (so its first 200 has them all).

use super::Metrics;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use std::net::SocketAddr;
use std::sync::Arc;

/// A running endpoint; dropping it stops the server and its runtime.
pub struct MetricsServer {
    pub addr: SocketAddr,
    runtime: Option<tokio::runtime::Runtime>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(std::time::Duration::from_secs(1));
        }
    }
}

/// Binds `listen` now (so a taken port is an error at start, not later) and serves in the
/// background.
pub fn serve(metrics: Arc<Metrics>, listen: &str) -> std::io::Result<MetricsServer> {
    let addr: SocketAddr = listen.parse().map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("metrics.listen `{listen}`: {e}"),
        )
    })?;
    let std_listener = std::net::TcpListener::bind(addr).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot listen on {addr} for metrics: {e}"),
        )
    })?;
    std_listener.set_nonblocking(true)?;
    let bound = std_listener.local_addr()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("metrics-http")
        .enable_all()
        .build()?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let listener = {
        let _guard = runtime.enter();
        tokio::net::TcpListener::from_std(std_listener)?
    };
    let m = metrics.clone();
    let app = Router::new()
        .route("/metrics", get(move || metrics_text(m.clone())))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(move || ready(metrics.clone())));
    runtime.spawn(async move {
        let server = axum::serve(listener, app).with_graceful_shutdown(async {
            let _ = stop_rx.await;
        });
        if let Err(e) = server.await {
            tracing::error!("metrics server stopped: {e}");
        }
    });
    Ok(MetricsServer {
        addr: bound,
        runtime: Some(runtime),
        stop: Some(stop_tx),
    })
}

async fn metrics_text(m: Arc<Metrics>) -> axum::response::Response {
    if !m.readiness.serving() {
        let why = m.readiness.not_ready().unwrap_or_default();
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}; the metrics are served once the streams have started\n"),
        )
            .into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        m.render(),
    )
        .into_response()
}

/// `/readyz`: 200 `ready`, or 503 `not ready: <reason>`. Shared with the API's router.
pub async fn ready(m: Arc<Metrics>) -> (StatusCode, String) {
    match m.readiness.not_ready() {
        None => (StatusCode::OK, "ready\n".into()),
        Some(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
}
