//! The API of what the gallery learns from its user (docs/faces.md): the calibration, the
//! groups of unknown faces and their naming, and negative examples (a photo, or the snapshot
//! of an event, that is not a given person).

use super::{
    cap, event_param, parse_json, snapshot_bytes, with_ops, with_photo, ApiError, ApiResult,
};
use super::{face_param, Api};
use crate::control::gallery::Photo;
use axum::body::Bytes;
use axum::extract::{Path, Query, State as AxState};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};

use std::collections::HashMap;
use std::sync::Arc;

pub fn routes() -> Router<Arc<Api>> {
    Router::new()
        .route("/v1/gallery/calibration", get(calibration))
        .route("/v1/unknowns", get(unknowns))
        .route("/v1/unknowns/{id}/name", post(name_unknown))
        .route("/v1/gallery/people/{name}/rejections", post(reject))
}

async fn calibration(
    AxState(api): AxState<Arc<Api>>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    let far = match q.get("far") {
        None => 0.001,
        Some(v) => v.parse::<f64>().map_err(|_| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid",
                format!("`far` must be a number between 0 and 1, got `{}`", cap(v)),
            )
            .field("far")
        })?,
    };
    Ok(Json(with_ops(&api, move |ops| ops.calibrate(far)).await?).into_response())
}

async fn unknowns(AxState(api): AxState<Arc<Api>>) -> ApiResult {
    Ok(Json(with_ops(&api, |ops| ops.unknowns()).await?).into_response())
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NameBody {
    name: String,
}

async fn name_unknown(
    AxState(api): AxState<Arc<Api>>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult {
    let b: NameBody = parse_json(&body)?;
    let v = with_ops(&api, move |ops| ops.name_unknown(&id, &b.name)).await?;
    tracing::info!(group = %v["id"].as_str().unwrap_or(""), person = %v["enrolled"].as_str().unwrap_or(""), "unknown group named over the API");
    Ok(Json(v).into_response())
}

/// A negative example of `name`: the uploaded photo, or the snapshot of a recent event (with
/// `faces.snapshots` on) given as `{"event": ID}` or `?event=ID`.
async fn reject(
    AxState(api): AxState<Arc<Api>>,
    Path(name): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let face = face_param(&q)?;
    let v = match event_param(&q, &headers, &body)? {
        Some(event) => {
            let bytes = snapshot_bytes(&api, &event).await?;
            let label = format!("the snapshot of event {}", cap(&event));
            with_ops(&api, move |ops| {
                let photo = Photo::Crop {
                    label: &label,
                    bytes: &bytes,
                };
                ops.reject(&name, &photo, face)
            })
            .await?
        }
        None => {
            with_photo(&api, &headers, body, move |ops, photo| {
                ops.reject(&name, photo, face)
            })
            .await?
        }
    };
    Ok((StatusCode::CREATED, Json(v)).into_response())
}
