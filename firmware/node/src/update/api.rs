//! `GET /api/v1/update` (the last update's record) and `POST /api/v1/update` (an operator
//! sends a bundle: the box checks it, writes it into the other slot, and reboots to try
//! it, at once with `?now=true`, else when it is no longer live); publishing a bundle or
//! a rollout to the mesh through this box.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

use super::apply::{self, Facts};
use crate::station::Station;

/// The largest bundle taken over HTTP (a root file system of a few hundred MB fits).
const MAX_BUNDLE: u64 = 2 << 30;

pub fn routes() -> Router<Arc<Station>> {
    Router::new()
        .route(
            "/api/v1/update",
            get(status).post(upload).layer(DefaultBodyLimit::disable()),
        )
        .route(
            "/api/v1/update/publish",
            post(publish).layer(DefaultBodyLimit::disable()),
        )
        .route("/api/v1/update/rollout", post(rollout))
        .route("/api/v1/update/now", post(install_now))
}

/// An operator has the update that waits for the box to stop being live installed now.
async fn install_now(State(st): State<Arc<Station>>) -> Response {
    if st.install_now() {
        tracing::info!("an operator asked for the waiting update now");
        (
            StatusCode::ACCEPTED,
            Json(serde_json::json!({ "installing": true })),
        )
            .into_response()
    } else {
        error(
            StatusCode::CONFLICT,
            "no update waits for this box to stop being live",
        )
    }
}

/// An operator passes a signed rollout of an offered bundle to the mesh through this box.
async fn rollout(State(st): State<Arc<Station>>, body: axum::body::Bytes) -> Response {
    let Some(mesh) = st.mesh.get().cloned() else {
        return error(StatusCode::CONFLICT, "this box is not in a mesh");
    };
    let rollout = match cambox_update::Rollout::from_bytes(&body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let plan = rollout.plan.clone();
    match mesh.publish_rollout(rollout).await {
        Ok(Ok(newer)) => {
            tracing::info!(bundle = %plan.bundle, rollout = %plan.describe(), newer, "update rollout published to the mesh");
            (
                StatusCode::ACCEPTED,
                Json(serde_json::json!({
                    "bundle": plan.bundle,
                    "rollout": plan.describe(),
                    "newer": newer,
                })),
            )
                .into_response()
        }
        Ok(Err(e)) => error(StatusCode::FORBIDDEN, e),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

/// An operator publishes a bundle through this box: it keeps it and offers it to the
/// mesh, whose boxes of its board fetch it and install it.
async fn publish(State(st): State<Arc<Station>>, body: Body) -> Response {
    let (Some(data), Some(mesh)) = (st.update_dir.get().cloned(), st.mesh.get().cloned()) else {
        return error(StatusCode::CONFLICT, "this box is not in a mesh");
    };
    let file = data.join("publish.cbx");
    if let Err(e) = receive(body, &file).await {
        return e;
    }
    // Every chunk checked here, off the mesh's driver, before the mesh keeps it.
    let checking = file.clone();
    let checked =
        tokio::task::spawn_blocking(move || cambox_update::Bundle::check_file(&checking).map(drop))
            .await;
    if let Ok(Err(e)) | Err(e) = checked.map_err(|e| e.to_string()) {
        let _ = tokio::fs::remove_file(&file).await;
        return error(StatusCode::BAD_REQUEST, format!("not a whole bundle: {e}"));
    }
    match mesh.publish_update(file.clone()).await {
        Ok(Ok(id)) => {
            tracing::info!(bundle = %id, "update published to the mesh");
            (
                StatusCode::ACCEPTED,
                Json(serde_json::json!({ "bundle": id })),
            )
                .into_response()
        }
        Ok(Err(e)) => {
            let _ = tokio::fs::remove_file(&file).await;
            error(StatusCode::FORBIDDEN, e)
        }
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": msg.into() }))).into_response()
}

async fn status(State(st): State<Arc<Station>>) -> Response {
    // What runs, on an image with two slots (null elsewhere).
    let running = Facts::of_this_box().ok().map(|f| {
        serde_json::json!({
            "board": f.release.board,
            "version": f.release.version.to_string(),
            "slot": f.booted,
            "default": f.card.default_slot().ok(),
        })
    });
    let status = st.status();
    Json(serde_json::json!({
        "update": status.update,
        "running": running,
        "offers": status.offers,
    }))
    .into_response()
}

#[derive(Debug, serde::Deserialize)]
struct UploadQuery {
    /// Reboot into it now, even while live.
    #[serde(default)]
    now: bool,
    /// Install an older version or the same one again.
    #[serde(default)]
    force: bool,
}

async fn upload(
    State(st): State<Arc<Station>>,
    Query(q): Query<UploadQuery>,
    body: Body,
) -> Response {
    let facts = match Facts::of_this_box() {
        Ok(f) => f,
        Err(e) => {
            return error(
                StatusCode::CONFLICT,
                format!("this box cannot update itself: {e:#}"),
            )
        }
    };
    let Some(data) = st.update_dir.get().cloned() else {
        return error(StatusCode::CONFLICT, "this box keeps no data directory");
    };
    let file = data.join("upload.cbx");
    if let Err(e) = receive(body, &file).await {
        return e;
    }
    let installing = {
        let (facts, file, data) = (facts.clone(), file.clone(), data.clone());
        tokio::task::spawn_blocking(move || {
            let r = apply::install_file(&facts, &file, &data, q.force, |_| {});
            let _ = std::fs::remove_file(&file);
            r
        })
    };
    let record = match installing.await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            let refused = e
                .downcast_ref::<cambox_update::install::InstallError>()
                .is_some_and(|e| matches!(e, cambox_update::install::InstallError::Refused(_)));
            let code = if refused {
                StatusCode::FORBIDDEN
            } else {
                StatusCode::BAD_REQUEST
            };
            tracing::warn!("update refused: {e:#}");
            return error(code, format!("{e:#}"));
        }
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    tracing::info!(version = %record.version, slot = %record.slot, "update installed; rebooting to try it{}", if q.now || !st.is_live() { "" } else { " when the box stops being live" });
    st.set_update(Some(record.clone()));
    tokio::spawn(reboot_when_idle(st, facts, record.clone(), data, q.now));
    (
        StatusCode::ACCEPTED,
        Json(serde_json::json!({ "update": record })),
    )
        .into_response()
}

/// Streams the body to `file`, bounded.
async fn receive(body: Body, file: &PathBuf) -> Result<(), Response> {
    let io = |e: std::io::Error| {
        error(
            StatusCode::INSUFFICIENT_STORAGE,
            format!("cannot store the bundle at {}: {e}", file.display()),
        )
    };
    let mut out = tokio::fs::File::create(file).await.map_err(io)?;
    let mut stream = body.into_data_stream();
    let mut got = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| error(StatusCode::BAD_REQUEST, e.to_string()))?;
        got += chunk.len() as u64;
        if got > MAX_BUNDLE {
            let _ = tokio::fs::remove_file(file).await;
            return Err(error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("a bundle of more than {MAX_BUNDLE} bytes"),
            ));
        }
        out.write_all(&chunk).await.map_err(io)?;
    }
    out.sync_all().await.map_err(io)
}

/// A live box finishes what it films first: the reboot waits until it is not live.
async fn reboot_when_idle(
    st: Arc<Station>,
    facts: Facts,
    record: crate::update::Record,
    data: PathBuf,
    now: bool,
) {
    if !now && !st.until_not_live().await {
        return;
    }
    // Time for the answer to leave.
    tokio::time::sleep(Duration::from_millis(500)).await;
    match tokio::task::spawn_blocking(move || apply::reboot_to_try(&facts, &record, &data)).await {
        Ok(Err(e)) => tracing::warn!("cannot reboot to try the update: {e:#}"),
        Err(e) => tracing::warn!("cannot reboot to try the update: {e}"),
        Ok(Ok(())) => {}
    }
}
