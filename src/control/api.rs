//! The HTTP API under `/v1` (docs/api.md): streams added and removed while vigil runs, the
//! gallery, events (a list and a Server-Sent Events stream), snapshots and status.
//!
//! - Served by hyper on a small tokio runtime of its own (two workers), never by the decode or
//!   inference threads. Every connection that has not sent complete request headers within
//!   `api.idle_timeout_ms` is closed; at most `api.max_connections` are served at once.
//! - Tokens: `Authorization: Bearer TOKEN` or `X-Api-Key: TOKEN`; GET needs `read`, anything
//!   else `write`. `/healthz` and `/readyz` are open. A token is never logged: the log names
//!   its holder.
//! - Every error is `{"error": {"code", "message", "field"}}`, including the framework's own
//!   (unknown path, wrong method, body over the limit), which a response layer rewrites.
//! - Blocking work (face analysis, probing a file, stopping a stream) runs on tokio's blocking
//!   pool.

mod explain;
mod learn;

use super::gallery::{GalleryOps, OpError, Photo};
use super::state::State;
use super::token::Tokens;
use crate::config::{Loaded, Scope, StreamConfig};
use crate::event::recent::{After, Kept};
use crate::event::EventType;
use crate::gallery::image::ImageError;
use crate::gallery::GalleryError;
use crate::metrics::Metrics;
use crate::pipeline::{self, Prepared, RunOptions, Summary, Topology, TopologyError};
use crate::shutdown::Shutdown;
use crate::url::redact;
use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State as AxState};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    field: Option<String>,
    extra: Option<(&'static str, Value)>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            field: None,
            extra: None,
        }
    }

    fn field(mut self, f: impl Into<String>) -> ApiError {
        self.field = Some(f.into());
        self
    }
}

/// At most 200 characters of a message that may echo user input.
fn cap(s: &str) -> String {
    crate::echo::echo(s).into_owned()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut err =
            json!({"code": self.code, "message": cap(&self.message), "field": self.field});
        if let Some((k, v)) = self.extra {
            err[k] = v;
        }
        let mut r = (self.status, Json(json!({ "error": err }))).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"vigil\""),
            );
        }
        r
    }
}

impl From<OpError> for ApiError {
    fn from(e: OpError) -> ApiError {
        let msg = e.to_string();
        use StatusCode as S;
        match e {
            OpError::Image(ImageError::Format { .. }) => {
                ApiError::new(S::UNSUPPORTED_MEDIA_TYPE, "not_an_image", msg)
            }
            OpError::Image(ImageError::TooLarge { .. }) => {
                ApiError::new(S::PAYLOAD_TOO_LARGE, "too_many_pixels", msg)
            }
            OpError::Image(_) => ApiError::new(S::UNPROCESSABLE_ENTITY, "bad_image", msg),
            OpError::NoFace { .. } => ApiError::new(S::UNPROCESSABLE_ENTITY, "no_face", msg),
            OpError::SeveralFaces { boxes, .. } => {
                let mut e = ApiError::new(S::UNPROCESSABLE_ENTITY, "several_faces", msg);
                e.extra = Some(("boxes", json!(boxes)));
                e.field("face")
            }
            OpError::NoSuchFace { .. } => {
                ApiError::new(S::UNPROCESSABLE_ENTITY, "no_such_face", msg).field("face")
            }
            OpError::Gallery(GalleryError::Name { .. }) => {
                ApiError::new(S::UNPROCESSABLE_ENTITY, "invalid", msg).field("name")
            }
            OpError::Gallery(GalleryError::Unknown { .. }) => {
                ApiError::new(S::NOT_FOUND, "not_found", msg)
            }
            OpError::NotFound(_) => ApiError::new(S::NOT_FOUND, "not_found", msg),
            OpError::Gallery(GalleryError::StoreUnavailable { .. }) => {
                ApiError::new(S::SERVICE_UNAVAILABLE, "store_unavailable", msg)
            }
            OpError::Invalid { field, .. } => {
                ApiError::new(S::UNPROCESSABLE_ENTITY, "invalid", msg).field(field)
            }
            _ => {
                tracing::error!("gallery operation failed: {msg}");
                ApiError::new(S::INTERNAL_SERVER_ERROR, "internal", msg)
            }
        }
    }
}

type ApiResult = Result<Response, ApiError>;

/// Everything the handlers share.
pub struct Api {
    topo: Arc<Topology>,
    loaded: Arc<Loaded>,
    /// Which replica this is: a stream added here must hash here.
    shard: crate::cluster::Shard,
    state: Mutex<State>,
    config_ids: HashSet<String>,
    tokens: Tokens,
    ops: Option<Mutex<GalleryOps>>,
    /// Explanations of action events (with the action model and `api.event_clips` above 0).
    explanations: Option<Arc<super::explain::Explanations>>,
    started: Instant,
    stop: Shutdown,
}

/// Runs on tokio's blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("the operation failed: {e}"),
        )
    })
}

/// `vigil run` with an `api` section.
pub fn run(
    mut p: Prepared,
    opts: RunOptions,
    metrics: Arc<Metrics>,
    metrics_addr: Option<SocketAddr>,
    stop: Shutdown,
) -> anyhow::Result<Summary> {
    let loaded = Arc::new(p.loaded.clone());
    let api_cfg = loaded.config.api.clone().expect("run with an api section");
    let state = State::load(&loaded.resolve(&api_cfg.state_dir))?;
    let ops = match &p.faces {
        Some(f) => Some(Mutex::new(
            super::gallery::live(&loaded, f.gallery.clone()).map_err(|p| anyhow::anyhow!("{p}"))?,
        )),
        None => None,
    };
    let config_ids: HashSet<String> = loaded.config.streams.iter().map(|s| s.id.clone()).collect();
    if let Some(line) = p.shard_summary() {
        tracing::info!("cluster: {line}");
    }
    let shard = p.shard;
    // Explanations use a session of their own, made on the first one asked for, and the run's
    // own custom actions.
    let labels = p
        .action
        .as_ref()
        .filter(|_| api_cfg.event_clips > 0)
        .map(|a| crate::explain::Labels {
            model: a.labels.clone(),
            source: a.source.clone(),
            custom: a.custom.clone(),
            model_file: loaded
                .config
                .action
                .model
                .as_ref()
                .map(|m| loaded.resolve(&m.labels))
                .unwrap_or_default(),
            custom_file: pipeline::custom_actions_path(&loaded),
        });
    let explanations = match labels {
        Some(labels) => {
            let (l, threads, custom) = (
                loaded.clone(),
                api_cfg.explain_threads,
                labels.custom.clone(),
            );
            Some(Arc::new(super::explain::Explanations::start(
                labels,
                move || crate::explain::Explainer::with_custom(&l, threads, custom),
            )?))
        }
        None => None,
    };
    let streams = std::mem::take(&mut p.streams);
    let opener = Arc::new(crate::source::open::OpenCv);
    let topo = Topology::start(&mut p, opts, metrics.clone(), stop.clone(), opener)?;
    for s in streams {
        if state.is_removed(&s.id) {
            tracing::info!(stream = %s.id, "not started: removed over the API");
            continue;
        }
        topo.add(s)?;
    }
    for c in state.added() {
        if !shard.runs(&c.id) {
            // Added here when the replica count was different: it hashes elsewhere now.
            tracing::warn!(
                stream = %c.id,
                "added over the API to this replica, but with {} replicas it hashes to replica {}: \
                 not started here (add it there)",
                shard.replicas,
                shard.owner(&c.id)
            );
            continue;
        }
        match pipeline::prepare_stream(&loaded, c, true) {
            Ok(s) => {
                topo.add(s)?;
            }
            Err(errs) => {
                let why: Vec<String> = errs.iter().map(|(f, m)| format!("{f}: {m}")).collect();
                tracing::error!(
                    stream = %c.id,
                    "a stream added over the API cannot start: {}",
                    why.join("; ")
                );
            }
        }
    }
    let api = Arc::new(Api {
        topo: topo.clone(),
        loaded: loaded.clone(),
        shard,
        state: Mutex::new(state),
        config_ids,
        tokens: Tokens::new(&api_cfg.tokens),
        ops,
        explanations,
        started: Instant::now(),
        stop: stop.clone(),
    });
    super::streams_started(&metrics, &topo, metrics_addr);
    let server = serve(api, &api_cfg, metrics.clone())?;
    tracing::info!("API on http://{}/v1", server.addr);
    topo.wait();
    drop(server);
    topo.finish()
}

/// A running API server; dropping it stops it.
pub struct Server {
    pub addr: SocketAddr,
    runtime: Option<tokio::runtime::Runtime>,
    stop: Shutdown,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.cancel(crate::shutdown::Why::Exit);
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_secs(2));
        }
    }
}

/// Binds now (a taken port is an error at start) and serves in the background.
pub fn serve(
    api: Arc<Api>,
    cfg: &crate::config::ApiConfig,
    metrics: Arc<Metrics>,
) -> anyhow::Result<Server> {
    let addr: SocketAddr = cfg
        .listen
        .parse()
        .map_err(|e| anyhow::anyhow!("api.listen `{}`: {e}", cfg.listen))?;
    let std_listener = std::net::TcpListener::bind(addr)
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr} for the API: {e}"))?;
    std_listener.set_nonblocking(true)?;
    let bound = std_listener.local_addr()?;
    // Blocking work (face analysis, starting and stopping streams) is serialised by the locks
    // it takes, so a few blocking threads are enough; idle ones leave quickly.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(16)
        .thread_keep_alive(Duration::from_millis(500))
        .thread_name("api-http")
        .enable_all()
        .build()?;
    let listener = {
        let _guard = runtime.enter();
        tokio::net::TcpListener::from_std(std_listener)?
    };
    let stop = api.stop.child();
    let app = router(api, cfg.max_body_bytes, metrics);
    let idle = Duration::from_millis(cfg.idle_timeout_ms);
    let slots = Arc::new(tokio::sync::Semaphore::new(cfg.max_connections));
    let server_stop = stop.clone();
    runtime.spawn(async move {
        let svc = hyper_util::service::TowerToHyperService::new(app);
        loop {
            let permit = tokio::select! {
                p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
                _ = server_stop.cancelled() => return,
            };
            let (tcp, _) = tokio::select! {
                a = listener.accept() => match a {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!("API accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = server_stop.cancelled() => return,
            };
            let (svc, stop) = (svc.clone(), server_stop.clone());
            tokio::spawn(async move {
                let _permit = permit;
                // A connection that sends nothing is closed after the idle timeout.
                if tokio::time::timeout(idle, tcp.readable()).await.is_err() {
                    return;
                }
                let io = hyper_util::rt::TokioIo::new(tcp);
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(idle)
                    .keep_alive(true)
                    .serve_connection(io, svc);
                tokio::pin!(conn);
                tokio::select! {
                    _ = conn.as_mut() => {}
                    _ = stop.cancelled() => {
                        conn.as_mut().graceful_shutdown();
                        let _ = tokio::time::timeout(Duration::from_secs(1), conn).await;
                    }
                }
            });
        }
    });
    Ok(Server {
        addr: bound,
        runtime: Some(runtime),
        stop,
    })
}

fn router(api: Arc<Api>, max_body: usize, metrics: Arc<Metrics>) -> Router {
    let ready_metrics = metrics.clone();
    Router::new()
        .route("/v1/streams", get(list_streams).post(add_stream))
        .route("/v1/streams/{id}", get(get_stream).delete(remove_stream))
        .route("/v1/streams/{id}/preview", get(preview))
        .route("/v1/gallery/people", get(list_people))
        .route("/v1/gallery/people/{name}/photos", post(enrol))
        .route("/v1/gallery/people/{name}/photos/{n}", get(chip))
        .route("/v1/gallery/people/{name}", delete(remove_person))
        .route("/v1/gallery/identify", post(identify))
        .route("/v1/gallery/verify", post(verify))
        .route("/v1/events", get(list_events))
        .route("/v1/events/stream", get(event_stream))
        .route("/v1/snapshots/{event_id}", get(snapshot))
        .route("/v1/status", get(status))
        .merge(learn::routes())
        .merge(explain::routes())
        .route("/healthz", get(|| async { "ok\n" }))
        .merge(super::console::routes())
        .route(
            "/readyz",
            get(move || crate::metrics::ready(ready_metrics.clone())),
        )
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such endpoint (see docs/api.md)",
            )
        })
        .layer(middleware::from_fn_with_state(api.clone(), auth))
        .layer(middleware::map_response(json_errors))
        .layer(axum::extract::DefaultBodyLimit::max(max_body))
        .with_state(api)
}

/// Rewrites the framework's plain-text errors (wrong method, body over the limit, a path that
/// does not decode) into the API's JSON error shape.
async fn json_errors(r: Response) -> Response {
    let s = r.status();
    let is_json = r
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(s.is_client_error() || s.is_server_error()) || is_json {
        return r;
    }
    let code = match s {
        StatusCode::PAYLOAD_TOO_LARGE => "too_large",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        s if s.is_server_error() => "internal",
        _ => "bad_request",
    };
    let (parts, body) = r.into_parts();
    let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let mut out =
        ApiError::new(s, code, String::from_utf8_lossy(&text).trim().to_string()).into_response();
    if let Some(allow) = parts.headers.get(header::ALLOW) {
        out.headers_mut().insert(header::ALLOW, allow.clone());
    }
    out
}

/// The token's holder and scope, checked before every `/v1` call.
async fn auth(AxState(api): AxState<Arc<Api>>, mut req: Request, next: Next) -> Response {
    if !req.uri().path().starts_with("/v1") || api.tokens.is_empty() {
        req.extensions_mut().insert(Caller {
            holder: None,
            scope: Scope::Write,
        });
        return next.run(req).await;
    }
    let h = req.headers();
    let presented = h
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .or_else(|| h.get("x-api-key").and_then(|v| v.to_str().ok()))
        .map(str::trim);
    let Some(presented) = presented else {
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a token is required: `Authorization: Bearer TOKEN` or `X-Api-Key: TOKEN`",
        )
        .into_response();
    };
    let Some((name, scope)) = api.tokens.check(presented) else {
        tracing::warn!(method = %req.method(), path = %req.uri().path(), "API call with an unknown token");
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the token is not valid",
        )
        .into_response();
    };
    let reads = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if !reads && scope == Scope::Read {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("the token of `{name}` may only read"),
        )
        .into_response();
    }
    tracing::debug!(caller = name, method = %req.method(), path = %req.uri().path(), "API call");
    let caller = Caller {
        holder: Some(name.to_string()),
        scope,
    };
    req.extensions_mut().insert(caller);
    next.run(req).await
}

/// Who made a call, for `GET /v1/status` (the console greys out what a read token cannot do).
#[derive(Clone)]
struct Caller {
    /// The token's holder (none without tokens).
    holder: Option<String>,
    scope: Scope,
}

fn stream_json(l: &pipeline::Listed) -> Value {
    let c = &l.config;
    let mut v = json!({
        "id": c.id,
        "url": redact(&c.url),
        "branches": c.branches,
        "loop": c.looped,
        "realtime": c.realtime,
        "source": if l.from_api { "api" } else { "config" },
    });
    if let (Value::Object(m), Ok(Value::Object(s))) =
        (&mut v, serde_json::to_value(l.status.view()))
    {
        m.extend(s);
    }
    v
}

async fn list_streams(AxState(api): AxState<Arc<Api>>) -> Json<Value> {
    let streams: Vec<Value> = api.topo.list().iter().map(stream_json).collect();
    Json(json!({ "streams": streams }))
}

async fn get_stream(AxState(api): AxState<Arc<Api>>, Path(id): Path<String>) -> ApiResult {
    match api.topo.get(&id) {
        Some(l) => Ok(Json(stream_json(&l)).into_response()),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no stream `{}`", cap(&id)),
        )),
    }
}

/// The stream's latest frame, annotated, as a JPEG. The first request after a quiet spell
/// starts feeding the preview; it waits up to a second for a frame, then answers 503
/// `no_frame` (a stream that is down has none).
async fn preview(AxState(api): AxState<Arc<Api>>, Path(id): Path<String>) -> ApiResult {
    let Some(l) = api.topo.get(&id) else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no stream `{}`", cap(&id)),
        ));
    };
    let preview = l.status.preview.clone();
    let until = Instant::now() + Duration::from_secs(1);
    loop {
        let p = preview.clone();
        let jpeg = blocking(move || p.jpeg()).await?.map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                format!("cannot draw the preview: {}", e.message),
            )
        })?;
        if let Some(jpeg) = jpeg {
            return Ok((
                [
                    (header::CONTENT_TYPE, "image/jpeg"),
                    (header::CACHE_CONTROL, "no-store"),
                ],
                jpeg.as_ref().clone(),
            )
                .into_response());
        }
        if Instant::now() >= until {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "no_frame",
                format!("stream `{}` has no frame to show yet", cap(&id)),
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A JSON body, strictly: malformed JSON or an unknown field is a 400 naming it. The content
/// type is not insisted on (`curl -d` sends a form type).
fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let v = deserialize_naming_field(&mut de)?;
    de.end()
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_json", e.to_string()))?;
    Ok(v)
}

fn deserialize_naming_field<'de, T: serde::Deserialize<'de>>(
    de: &mut serde_json::Deserializer<serde_json::de::SliceRead<'de>>,
) -> Result<T, ApiError> {
    T::deserialize(de).map_err(|e| {
        let msg = e.to_string();
        let field = msg
            .strip_prefix("unknown field `")
            .and_then(|r| r.split('`').next())
            .map(str::to_string);
        let mut err = ApiError::new(StatusCode::BAD_REQUEST, "bad_json", msg);
        err.field = field;
        err
    })
}

async fn add_stream(AxState(api): AxState<Arc<Api>>, body: Bytes) -> ApiResult {
    let s: StreamConfig = parse_json(&body)?;
    if api
        .topo
        .get(&s.id)
        .is_some_and(|l| !l.status.ended.is_cancelled())
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "duplicate",
            format!("stream `{}` exists already", cap(&s.id)),
        )
        .field("id"));
    }
    let a = api.clone();
    let added = blocking(move || -> Result<Value, ApiError> {
        let prepared = pipeline::prepare_stream(&a.loaded, &s, true).map_err(|errs| {
            let (field, msg) = errs.into_iter().next().unwrap_or(("", String::new()));
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", msg).field(field)
        })?;
        // Checked once the entry is valid: a bad id is `invalid` on every replica.
        if !a.shard.runs(&s.id) {
            let owner = a.shard.owner(&s.id);
            let mut e = ApiError::new(
                StatusCode::CONFLICT,
                "other_replica",
                format!(
                    "stream `{}` hashes to replica {owner} of {} (this is replica {}): add it there",
                    cap(&s.id),
                    a.shard.replicas,
                    a.shard.ordinal
                ),
            )
            .field("id");
            e.extra = Some(("owner", json!(owner)));
            return Err(e);
        }
        a.topo.add(prepared).map_err(|e| match e {
            TopologyError::Duplicate(_) => {
                ApiError::new(StatusCode::CONFLICT, "duplicate", e.to_string()).field("id")
            }
            TopologyError::Full => {
                ApiError::new(StatusCode::CONFLICT, "too_many_streams", e.to_string())
            }
            TopologyError::Stopping => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "stopping", e.to_string())
            }
            e => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
        })?;
        let persisted = a
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .add(&s, a.config_ids.contains(&s.id));
        if let Err(e) = persisted {
            let _ = a.topo.remove(&s.id, Duration::from_secs(10));
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                format!("the stream could not be persisted, so it was not added: {e}"),
            ));
        }
        tracing::info!(stream = %s.id, url = %redact(&s.url), "stream added over the API");
        Ok(a.topo
            .get(&s.id)
            .map(|l| stream_json(&l))
            .unwrap_or(Value::Null))
    })
    .await??;
    Ok((StatusCode::CREATED, Json(added)).into_response())
}

async fn remove_stream(AxState(api): AxState<Arc<Api>>, Path(id): Path<String>) -> ApiResult {
    let a = api.clone();
    blocking(move || -> Result<(), ApiError> {
        a.topo.remove(&id, Duration::from_secs(30)).map_err(|_| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no stream `{}`", cap(&id)),
            )
        })?;
        a.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id, a.config_ids.contains(&id))
            .map_err(|e| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    format!("the stream was removed, but that could not be persisted: {e}"),
                )
            })
    })
    .await??;
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn ops(api: &Api) -> Result<&Mutex<GalleryOps>, ApiError> {
    api.ops.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::CONFLICT,
            "faces_disabled",
            "the face branch is off in this vigil's config (`faces.enabled`)",
        )
    })
}

/// Runs `op` on the gallery operations, on the blocking pool.
async fn with_ops(
    api: &Arc<Api>,
    op: impl FnOnce(&mut GalleryOps) -> Result<Value, OpError> + Send + 'static,
) -> Result<Value, ApiError> {
    let a = api.clone();
    blocking(move || -> Result<Value, ApiError> {
        let mut ops = ops(&a)?.lock().unwrap_or_else(|p| p.into_inner());
        Ok(op(&mut ops)?)
    })
    .await?
}

async fn list_people(AxState(api): AxState<Arc<Api>>) -> ApiResult {
    Ok(Json(with_ops(&api, |ops| ops.list()).await?).into_response())
}

/// The image of a request: the body itself (`image/jpeg`, `image/png`, `image/bmp`) or the
/// first file of a `multipart/form-data` body.
async fn image_body(headers: &HeaderMap, body: Bytes) -> Result<Bytes, ApiError> {
    let raw = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    // The type compares without case; the boundary keeps its own.
    let ct = raw.to_ascii_lowercase();
    if ct.starts_with("image/jpeg") || ct.starts_with("image/png") || ct.starts_with("image/bmp") {
        return Ok(body);
    }
    if ct.starts_with("multipart/form-data") {
        let boundary = multer::parse_boundary(raw)
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_multipart", e.to_string()))?;
        let stream = futures_util::stream::once(async move { Ok::<Bytes, std::io::Error>(body) });
        let mut mp = multer::Multipart::new(stream, boundary);
        loop {
            match mp.next_field().await {
                Ok(Some(f)) => {
                    if f.file_name().is_some() || f.name() == Some("image") {
                        return f.bytes().await.map_err(|e| {
                            ApiError::new(StatusCode::BAD_REQUEST, "bad_multipart", e.to_string())
                        });
                    }
                }
                Ok(None) => {
                    return Err(ApiError::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "no_image",
                        "the multipart body has no file part",
                    ))
                }
                Err(e) => {
                    return Err(ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "bad_multipart",
                        e.to_string(),
                    ))
                }
            }
        }
    }
    Err(ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "not_an_image",
        format!(
            "send the photo as image/jpeg, image/png or multipart/form-data, not `{}`",
            cap(&ct)
        ),
    ))
}

/// Runs `op` on the gallery operations with the request's image, on the blocking pool.
async fn with_photo(
    api: &Arc<Api>,
    headers: &HeaderMap,
    body: Bytes,
    op: impl FnOnce(&mut GalleryOps, &Photo) -> Result<Value, OpError> + Send + 'static,
) -> Result<Value, ApiError> {
    ops(api)?;
    let img = image_body(headers, body).await?;
    with_ops(api, move |ops| {
        let photo = Photo::Bytes {
            label: "the uploaded photo",
            bytes: &img,
        };
        op(ops, &photo)
    })
    .await
}

/// A number query parameter within `range`, or `default` when absent.
fn number(
    q: &HashMap<String, String>,
    name: &'static str,
    range: std::ops::RangeInclusive<usize>,
    default: Option<usize>,
) -> Result<Option<usize>, ApiError> {
    match q.get(name) {
        None => Ok(default),
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| range.contains(n))
            .map(Some)
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid",
                    format!(
                        "`{name}` must be a number {}..={}, got `{}`",
                        range.start(),
                        range.end(),
                        cap(v)
                    ),
                )
                .field(name)
            }),
    }
}

fn face_param(q: &HashMap<String, String>) -> Result<Option<usize>, ApiError> {
    number(q, "face", 0..=1000, None)
}

async fn enrol(
    AxState(api): AxState<Arc<Api>>,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let face = face_param(&q)?;
    let v = match event_param(&q, &headers, &body)? {
        // The face of an event's snapshot (a `face.unknown` named from the console): the
        // largest face in it unless `face` says otherwise.
        Some(event) => {
            let bytes = snapshot_bytes(&api, &event).await?;
            let label = format!("the snapshot of event {}", cap(&event));
            with_ops(&api, move |ops| {
                let photo = Photo::Bytes {
                    label: &label,
                    bytes: &bytes,
                };
                ops.enroll(&name, std::slice::from_ref(&photo), face.or(Some(0)))
            })
            .await?
        }
        None => {
            with_photo(&api, &headers, body, move |ops, photo| {
                ops.enroll(&name, std::slice::from_ref(photo), face)
            })
            .await?
        }
    };
    tracing::info!(person = %v["enrolled"].as_str().unwrap_or(""), "enrolled over the API");
    Ok((StatusCode::CREATED, Json(v)).into_response())
}

/// The aligned chip of a person's `n`th enrolment (from 0), as a JPEG.
async fn chip(
    AxState(api): AxState<Arc<Api>>,
    Path((name, n)): Path<(String, usize)>,
) -> ApiResult {
    let who = name.clone();
    let chip = blocking(move || -> Result<Option<Vec<u8>>, ApiError> {
        let ops = ops(&api)?.lock().unwrap_or_else(|p| p.into_inner());
        Ok(ops.chip(&name, n)?)
    })
    .await??;
    match chip {
        Some(jpeg) => Ok(([(header::CONTENT_TYPE, "image/jpeg")], jpeg).into_response()),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no thumbnail for enrolment {n} of `{}`", cap(&who)),
        )),
    }
}

async fn remove_person(AxState(api): AxState<Arc<Api>>, Path(name): Path<String>) -> ApiResult {
    Ok(Json(with_ops(&api, move |ops| ops.remove(&name)).await?).into_response())
}

async fn identify(
    AxState(api): AxState<Arc<Api>>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let top = number(&q, "top", 1..=100, Some(3))?.unwrap_or(3);
    let mut v = with_photo(&api, &headers, body, move |ops, photo| {
        ops.identify(photo, top)
    })
    .await?;
    if let Value::Object(m) = &mut v {
        m.remove("image");
    }
    Ok(Json(v).into_response())
}

async fn verify(
    AxState(api): AxState<Arc<Api>>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let Some(name) = q.get("name").cloned() else {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            "`?name=` names the person to verify against",
        )
        .field("name"));
    };
    let face = face_param(&q)?;
    let v = with_photo(&api, &headers, body, move |ops, photo| {
        ops.verify(&name, photo, face)
    })
    .await?;
    Ok(Json(json!({
        "same": v["same"], "distance": v["distance"], "threshold": v["threshold"],
        "identity": v["identity"], "box": v["box"],
    }))
    .into_response())
}

fn recent(api: &Api) -> &Arc<crate::event::recent::Recent> {
    api.topo.recent().expect("the API runs with an event ring")
}

async fn list_events(
    AxState(api): AxState<Arc<Api>>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    let limit = number(&q, "limit", 1..=10_000, Some(100))?.unwrap_or(100);
    let r = recent(&api);
    let (events, gap) = match q.get("after") {
        Some(id) => {
            let (ev, found) = r.after(Some(id), limit);
            (ev, found == After::Gap)
        }
        None => (r.latest(limit), false),
    };
    // The events as written (their own field order), not re-serialised.
    let lines: Vec<&str> = events.iter().map(|k| k.json.as_str()).collect();
    let body = format!("{{\"events\":[{}],\"gap\":{gap}}}", lines.join(","));
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// Which events a subscriber wants.
struct Filter {
    stream: Option<String>,
    kinds: Option<Vec<EventType>>,
}

impl Filter {
    fn from(q: &HashMap<String, String>) -> Result<Filter, ApiError> {
        let kinds = match q.get("type") {
            None => None,
            Some(t) => Some(
                t.split(',')
                    .map(|s| {
                        EventType::parse(s.trim()).ok_or_else(|| {
                            ApiError::new(
                                StatusCode::UNPROCESSABLE_ENTITY,
                                "invalid",
                                format!("`{}` is not an event type", cap(s)),
                            )
                            .field("type")
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };
        Ok(Filter {
            stream: q.get("stream").cloned(),
            kinds,
        })
    }

    fn wants(&self, k: &Kept) -> bool {
        self.stream.as_ref().is_none_or(|s| *s == k.stream)
            && self.kinds.as_ref().is_none_or(|ks| ks.contains(&k.kind))
    }
}

async fn event_stream(
    AxState(api): AxState<Arc<Api>>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> ApiResult {
    let filter = Filter::from(&q)?;
    let r = recent(&api).clone();
    let mut live = r.subscribe();
    let last = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut first: Vec<SseEvent> = Vec::new();
    let mut sent = 0u64;
    if let Some(last) = &last {
        let (backlog, found) = r.after(Some(last), usize::MAX);
        if found == After::Gap {
            first.push(gap_event(last));
        }
        for k in &backlog {
            sent = k.seq;
            if filter.wants(k) {
                first.push(sse_event(k));
            }
        }
    }
    let stop = api.stop.clone();
    let stream = async_stream(first, move |out| {
        let (filter, stop) = (filter, stop);
        async move {
            loop {
                let k = tokio::select! {
                    k = live.recv() => k,
                    _ = stop.cancelled() => return,
                    // The client went away.
                    _ = out.closed() => return,
                };
                match k {
                    Ok(k) => {
                        if k.seq <= sent || !filter.wants(&k) {
                            continue;
                        }
                        sent = k.seq;
                        if out.send(sse_event(&k)).await.is_err() {
                            return;
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        let e = SseEvent::default()
                            .event("gap")
                            .data(json!({"missed": n}).to_string());
                        if out.send(e).await.is_err() {
                            return;
                        }
                    }
                    Err(_) => return,
                }
            }
        }
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

fn sse_event(k: &Kept) -> SseEvent {
    SseEvent::default().id(k.id.clone()).data(k.json.clone())
}

fn gap_event(after: &str) -> SseEvent {
    SseEvent::default().event("gap").data(
        json!({"after": cap(after), "message": "events after this id are older than the ring; the oldest kept follow"})
            .to_string(),
    )
}

/// A stream of SSE events: `first`, then what `produce` sends, through a small channel.
fn async_stream<F, Fut>(
    first: Vec<SseEvent>,
    produce: F,
) -> impl futures_util::Stream<Item = Result<SseEvent, std::convert::Infallible>>
where
    F: FnOnce(tokio::sync::mpsc::Sender<SseEvent>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel::<SseEvent>(64);
    tokio::spawn(produce(tx));
    let head = futures_util::stream::iter(first.into_iter().map(Ok));
    let tail =
        futures_util::stream::unfold(
            rx,
            |mut rx| async move { rx.recv().await.map(|e| (Ok(e), rx)) },
        );
    futures_util::StreamExt::chain(head, tail)
}

async fn snapshot(AxState(api): AxState<Arc<Api>>, Path(id): Path<String>) -> ApiResult {
    let bytes = snapshot_bytes(&api, &id).await?;
    Ok(([(header::CONTENT_TYPE, "image/jpeg")], bytes).into_response())
}

/// The JPEG of a recent event's snapshot.
/// The event whose snapshot a gallery call takes its face from: `?event=ID`, or a JSON body
/// `{"event": ID}` (both endpoints that take one accept either spelling).
fn event_param(
    q: &HashMap<String, String>,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Option<String>, ApiError> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct EventBody {
        event: String,
    }
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("application/json"));
    // An empty body says nothing, whatever its type.
    let is_json = is_json && !body.iter().all(u8::is_ascii_whitespace);
    match (q.get("event"), is_json) {
        (Some(e), false) => Ok(Some(e.clone())),
        (None, true) => Ok(Some(parse_json::<EventBody>(body)?.event)),
        (Some(_), true) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            "give the event once: `?event=ID` or a JSON body `{\"event\": ID}`, not both",
        )
        .field("event")),
        (None, false) => Ok(None),
    }
}

async fn snapshot_bytes(api: &Api, id: &str) -> Result<Vec<u8>, ApiError> {
    let not_found = |m: String| ApiError::new(StatusCode::NOT_FOUND, "not_found", m);
    let path = match recent(api).snapshot(id) {
        None => {
            return Err(not_found(format!(
                "no event `{}` among the recent ones",
                cap(id)
            )))
        }
        Some(None) => return Err(not_found(format!("event `{}` has no snapshot", cap(id)))),
        Some(Some(p)) => p,
    };
    blocking(move || std::fs::read(&path))
        .await?
        .map_err(|e| not_found(format!("the snapshot of event `{}` is gone: {e}", cap(id))))
}

async fn status(
    AxState(api): AxState<Arc<Api>>,
    axum::Extension(caller): axum::Extension<Caller>,
) -> Json<Value> {
    let streams = api.topo.list();
    let up = streams.iter().filter(|s| s.status.state().is_up()).count();
    let gallery = api.topo.gallery().map(|g| {
        let people = g.people();
        json!({
            "path": g.path.display().to_string(),
            "people": people.len(),
            "embeddings": people.iter().map(|p| p.embeddings).sum::<usize>(),
        })
    });
    let cfg = api.topo.config();
    let model = |p: Option<&std::path::Path>| {
        p.and_then(|p| p.file_stem())
            .map(|s| s.to_string_lossy().into_owned())
    };
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": api.started.elapsed().as_secs_f64().round(),
        "models": {
            "action": cfg.action.model.as_ref().filter(|_| cfg.action.enabled).and_then(|m| model(Some(&m.path))),
            "face_embedder": cfg.faces.embedder.as_ref().filter(|_| cfg.faces.enabled).and_then(|e| model(Some(&e.path))),
        },
        "streams": {"total": streams.len(), "up": up},
        "gallery": gallery,
        "access": {"holder": caller.holder, "scope": caller.scope},
    }))
}
