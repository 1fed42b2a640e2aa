//! The API of explanations (docs/api.md#explanations): which parts of an action event's clip
//! drove its label, as `vigil explain` shows for a file. `POST` queues the job
//! ([`crate::control::explain`]), `GET` polls it and serves the JSON, the PNG contact sheet
//! and the MP4.

use super::{cap, recent, Api, ApiError, ApiResult};
use crate::control::explain::{Ask, Explanations, Job, Refused};
use crate::event::clips::EventClip;
use crate::event::EventType;
use crate::explain::Grid;
use axum::extract::{Path, Query, State as AxState};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use std::sync::Arc;

pub fn routes() -> Router<Arc<Api>> {
    Router::new()
        .route("/v1/events/{id}/explanation", post(ask).get(result))
        .route("/v1/events/{id}/explanation.png", get(png))
        .route("/v1/events/{id}/explanation.mp4", get(mp4))
}

/// Labels one request may ask for (one set of forward passes serves them all).
const MAX_LABELS: usize = 8;
/// The grid when none is asked for: as `vigil explain`'s default.
const DEFAULT_GRID: &str = "4x4x4";

fn explanations(api: &Api) -> Result<&Arc<Explanations>, ApiError> {
    api.explanations.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::CONFLICT,
            "explanations_off",
            "no action event can be explained here: the action branch is off \
             (`action.enabled`) or `api.event_clips` is 0",
        )
    })
}

fn not_found(m: String) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", m)
}

/// The kept clip of action event `id`: 404 for an event that is not (or no longer) kept, or
/// whose clip is not; 422 for an event that is not an action.
fn event_clip(api: &Api, id: &str) -> Result<Arc<EventClip>, ApiError> {
    let r = recent(api);
    if let Some(c) = r.clips.get(id) {
        return Ok(c);
    }
    match r.kind(id) {
        None => Err(not_found(format!(
            "no event `{}` among the recent ones (the newest `api.event_ring` are kept)",
            cap(id)
        ))),
        Some(k @ (EventType::ActionStarted | EventType::ActionEnded)) => Err(not_found(format!(
            "the clip of {} event `{}` is no longer kept (the newest {} action events' clips are: \
             `api.event_clips`)",
            k.as_str(),
            cap(id),
            r.clips.capacity()
        ))),
        Some(k) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "not_an_action",
            format!(
                "event `{}` is a {} event: only action events (action.started, action.ended) \
                 have a clip to explain",
                cap(id),
                k.as_str()
            ),
        )),
    }
}

fn invalid(field: &str, m: String) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", m).field(field)
}

/// What a job is at: its state, what was asked, and where its results are.
fn status(j: &Job) -> Value {
    let base = format!("/v1/events/{}/explanation", j.event);
    let (state, _, error) = j.view();
    json!({
        "event": j.event, "state": state, "labels": j.ask.labels,
        "grid": j.ask.grid.to_string(), "forward_passes": 1 + j.ask.grid.cells(),
        "links": {"json": base, "png": format!("{base}.png"), "mp4": format!("{base}.mp4")},
        "error": error,
    })
}

/// A pending job's answer: 202 with its state and a hint to poll again.
fn pending(j: &Job) -> Response {
    let mut r = (StatusCode::ACCEPTED, Json(status(j))).into_response();
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}

async fn ask(
    AxState(api): AxState<Arc<Api>>,
    Path(id): Path<String>,
    Query(q): Query<Vec<(String, String)>>,
) -> ApiResult {
    let ex = explanations(&api)?;
    let clip = event_clip(&api, &id)?;
    let mut labels: Vec<String> = Vec::new();
    let mut grid = None;
    for (k, v) in q {
        match k.as_str() {
            "label" => {
                if !labels.contains(&v) {
                    labels.push(v);
                }
            }
            "grid" if grid.is_none() => grid = Some(v),
            "grid" => return Err(invalid("grid", "give `grid` once".into())),
            _ => {
                return Err(invalid(
                    &k,
                    format!("`{}` is not a parameter here (`label`, `grid`)", cap(&k)),
                ))
            }
        }
    }
    // By default the event's own label.
    if labels.is_empty() {
        labels.push(clip.label.clone());
    }
    if labels.len() > MAX_LABELS {
        return Err(invalid(
            "label",
            format!("at most {MAX_LABELS} labels at once, got {}", labels.len()),
        ));
    }
    ex.labels
        .check(&labels)
        .map_err(|e| invalid("label", e.to_string()))?;
    let grid_text = grid.as_deref().unwrap_or(DEFAULT_GRID);
    let grid: Grid = grid_text
        .parse()
        .map_err(|e: String| invalid("grid", format!("`grid` {}", cap(&e))))?;
    let frames = clip.frames.len();
    let side = clip
        .frames
        .first()
        .map_or(0, |f| ((f.len() / 3) as f64).sqrt() as usize);
    if grid.t > frames || grid.h > side || grid.w > side {
        return Err(invalid(
            "grid",
            format!(
                "grid {grid} has more cells along an axis than the clip has frames ({frames}) \
                 or pixels ({side})"
            ),
        ));
    }
    let (job, _) = ex
        .ask(&id, clip, Ask { labels, grid })
        .map_err(|r| match r {
            Refused::Busy => ApiError::new(
                StatusCode::CONFLICT,
                "busy",
                format!(
                    "an explanation of event `{}` with other labels or grid is being computed: \
                     wait for it (GET /v1/events/{{id}}/explanation)",
                    cap(&id)
                ),
            ),
            Refused::Full => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                format!(
                    "{} explanations wait already: try again later",
                    crate::control::explain::QUEUE
                ),
            ),
        })?;
    tracing::info!(event = %id, labels = ?job.ask.labels, grid = %job.ask.grid, "explanation asked over the API");
    let mut r = match job.view() {
        ("done", _, _) => (StatusCode::OK, Json(status(&job))).into_response(),
        _ => pending(&job),
    };
    if let Ok(loc) = HeaderValue::from_str(&format!("/v1/events/{}/explanation", job.event)) {
        r.headers_mut().insert(header::LOCATION, loc);
    }
    Ok(r)
}

/// The job of event `id`, or 404 naming why there is none.
fn job(api: &Api, id: &str) -> Result<Arc<Job>, ApiError> {
    let ex = explanations(api)?;
    ex.get(id).ok_or_else(|| match recent(api).kind(id) {
        None if recent(api).clips.get(id).is_none() => not_found(format!(
            "no event `{}` among the recent ones, and no explanation of it",
            cap(id)
        )),
        _ => not_found(format!(
            "no explanation of event `{}` was asked for (or it is no longer kept): \
             POST /v1/events/{{id}}/explanation first",
            cap(id)
        )),
    })
}

/// The finished output of event `id`'s job, or the answer to give instead: 202 while it runs,
/// 500 when it failed.
fn finished(
    api: &Api,
    id: &str,
) -> Result<Result<Arc<crate::control::explain::Output>, Response>, ApiError> {
    let j = job(api, id)?;
    match j.view() {
        (_, Some(out), _) => Ok(Ok(out)),
        (_, None, Some(err)) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "explain_failed",
            format!("explaining event `{}` failed: {err}", cap(id)),
        )),
        _ => Ok(Err(pending(&j))),
    }
}

async fn result(AxState(api): AxState<Arc<Api>>, Path(id): Path<String>) -> ApiResult {
    Ok(match finished(&api, &id)? {
        Ok(out) => Json(out.json.clone()).into_response(),
        Err(r) => r,
    })
}

async fn png(AxState(api): AxState<Arc<Api>>, Path(id): Path<String>) -> ApiResult {
    Ok(match finished(&api, &id)? {
        Ok(out) => ([(header::CONTENT_TYPE, "image/png")], out.png.clone()).into_response(),
        Err(r) => r,
    })
}

async fn mp4(AxState(api): AxState<Arc<Api>>, Path(id): Path<String>) -> ApiResult {
    Ok(match finished(&api, &id)? {
        Ok(out) => match &out.mp4 {
            Some(v) => ([(header::CONTENT_TYPE, "video/mp4")], v.clone()).into_response(),
            None => {
                return Err(not_found(format!(
                    "the explanation of event `{}` has no MP4: OpenCV cannot write one on this \
                     machine (the PNG and JSON are there)",
                    cap(&id)
                )))
            }
        },
        Err(r) => r,
    })
}
