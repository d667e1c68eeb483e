//! The box's HTTP face: web page, JSON API, live MP4, metrics.
//!
//! Every error is JSON (`{"error": "..."}`) with a 4xx status the client can act on, so the
//! page, scripts and `cambox` subcommands all read failures the same way.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::live::{start_viewer, LiveError};
use crate::station::Station;

const INDEX_HTML: &str = include_str!("web/index.html");

/// A JSON error with its status.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

pub fn router(station: Arc<Station>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/api/v1/status", get(status))
        .route("/api/v1/streams", get(streams))
        .route("/api/v1/live", post(set_live))
        .route("/live/{file}", get(live_mp4))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .with_state(station)
}

/// Binds `addr` and serves until the process ends.
pub async fn serve(addr: SocketAddr, station: Arc<Station>) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        std::io::Error::new(e.kind(), format!("cannot listen for HTTP on {addr}: {e}"))
    })?;
    serve_on(listener, station).await
}

pub async fn serve_on(
    listener: tokio::net::TcpListener,
    station: Arc<Station>,
) -> std::io::Result<()> {
    axum::serve(listener, router(station)).await
}

async fn index() -> Html<&'static str> {
    Html(INDEX_HTML)
}

async fn not_found() -> ApiError {
    ApiError(StatusCode::NOT_FOUND, "no such endpoint".into())
}

async fn status(State(st): State<Arc<Station>>) -> Response {
    Json(st.status()).into_response()
}

#[derive(Debug, Serialize)]
struct StreamEntry {
    name: String,
    node: String,
    site: String,
    live: bool,
    /// Where to play it: fragmented MP4 over HTTP.
    url: String,
}

async fn streams(State(st): State<Arc<Station>>) -> Response {
    let s = st.status();
    let entry = StreamEntry {
        url: format!("/live/{}.mp4", s.stream),
        name: s.stream,
        node: s.node,
        site: s.site,
        live: s.live,
    };
    Json(serde_json::json!({ "streams": [entry] })).into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LiveRequest {
    /// `true` to go live, `false` to stop; absent toggles, like the button.
    live: Option<bool>,
}

async fn set_live(State(st): State<Arc<Station>>, body: Bytes) -> Result<Response, ApiError> {
    let req: LiveRequest = if body.iter().all(u8::is_ascii_whitespace) {
        LiveRequest { live: None }
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError(
                StatusCode::BAD_REQUEST,
                format!("body must be JSON like {{\"live\": true}}: {e}"),
            )
        })?
    };
    let station = st.clone();
    let result = tokio::task::spawn_blocking(move || {
        let want = req.live.unwrap_or(!station.is_live());
        station.set_live(want)
    })
    .await
    .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    match result {
        Ok(()) => Ok(Json(st.status()).into_response()),
        // The request was fine; the box could not do it (camera missing, encoder failed).
        Err(e) => Err(ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("cannot go live: {e}"),
        )),
    }
}

async fn live_mp4(
    State(st): State<Arc<Station>>,
    Path(file): Path<String>,
) -> Result<Response, ApiError> {
    let Some(name) = file.strip_suffix(".mp4") else {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("'{file}' is not a stream: use /live/<stream>.mp4"),
        ));
    };
    if name != st.settings.stream {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!(
                "unknown stream '{name}'; this box streams '{}'",
                st.settings.stream
            ),
        ));
    }
    let Some(broadcast) = st.broadcast() else {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("stream '{name}' is not live; press the button or POST /api/v1/live"),
        ));
    };
    let (mime, mut rx) =
        start_viewer(broadcast, st.metrics.clone())
            .await
            .map_err(|e| match e {
                LiveError::Ended => {
                    ApiError(StatusCode::NOT_FOUND, format!("stream '{name}' ended"))
                }
                other => ApiError(StatusCode::SERVICE_UNAVAILABLE, other.to_string()),
            })?;
    let stream = futures_util::stream::poll_fn(move |cx| {
        rx.poll_recv(cx).map(|o| o.map(Ok::<_, std::io::Error>))
    });
    Ok((
        [
            (header::CONTENT_TYPE, mime),
            (header::CACHE_CONTROL, "no-store".to_string()),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

async fn metrics(State(st): State<Arc<Station>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        st.metrics.render(),
    )
        .into_response()
}
