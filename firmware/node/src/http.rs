//! The box's HTTP face: web page, JSON API, live MP4, metrics.
//!
//! Every error is JSON (`{"error": "..."}`) with a 4xx status the client can act on, so the
//! page, scripts and `cambox` subcommands all read failures the same way.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::connection_limit;
use crate::live::{start_viewer, LiveError};
use crate::station::Station;
use crate::viewing::ViewingError;

const INDEX_HTML: &str = include_str!("web/index.html");
/// The API's OpenAPI document, written by hand: every route of [`router`] is in it (a test
/// checks), and hil-tests/box-schemathesis.sh checks a running box against it.
const OPENAPI_YAML: &str = include_str!("web/openapi.yaml");

/// A JSON error with its status.
#[derive(Debug)]
pub struct ApiError(pub StatusCode, pub String);

impl ApiError {
    pub fn new(status: StatusCode, msg: impl Into<String>) -> Self {
        Self(status, msg.into())
    }
}

impl From<ViewingError> for ApiError {
    fn from(e: ViewingError) -> Self {
        match e {
            ViewingError::NotFound(m) => Self(StatusCode::NOT_FOUND, m),
            ViewingError::Unavailable(m) => Self(StatusCode::SERVICE_UNAVAILABLE, m),
            ViewingError::Forbidden(m) => Self(StatusCode::FORBIDDEN, m),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

pub fn router(station: Arc<Station>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/api/v1/openapi.yaml", get(openapi))
        .route("/api/v1/status", get(status))
        .route("/api/v1/streams", get(streams))
        .route("/api/v1/live", post(set_live))
        .route("/api/v1/peers", get(peers))
        .route("/api/v1/button", post(button))
        .route("/api/v1/events", get(events))
        .route(
            "/api/v1/revocations",
            get(get_revocations).put(put_revocations),
        )
        .route("/live/{file}", get(live_mp4))
        .route("/metrics", get(metrics))
        .merge(crate::bus_api::routes())
        .merge(crate::whep::routes())
        .merge(crate::auth::routes())
        .merge(crate::update::api::routes())
        .fallback(not_found)
        .layer(axum::middleware::map_response(json_errors))
        .layer(axum::middleware::from_fn_with_state(
            station.clone(),
            crate::auth::guard,
        ))
        .with_state(station)
}

/// Binds `addr` and serves until the process ends.
pub async fn serve(addr: SocketAddr, station: Arc<Station>) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        std::io::Error::new(e.kind(), format!("cannot listen for HTTP on {addr}: {e}"))
    })?;
    serve_on(listener, station, None, None).await
}

/// The box's HTTPS side: a listener and the configuration with its certificate.
#[derive(Debug)]
pub struct Https {
    pub listener: tokio::net::TcpListener,
    pub config: Arc<rustls::ServerConfig>,
}

/// Serves the box; with `registry`, a registry too, under `/registry` (so one site needs
/// no server of its own). Clients' addresses are passed to handlers (the registry's
/// limits and address rules use them). One address holds at most
/// [`connection_limit::MAX_PER_SOURCE`] connections open on each port.
///
/// With `https`, the page, API and WHEP are served there and the plain port redirects to
/// it ([`crate::https`]).
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    station: Arc<Station>,
    registry: Option<Arc<cambox_registry::Registry>>,
    https: Option<Https>,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    let refused = station.metrics.http_refused_connections.clone();
    let limited = |l| {
        connection_limit::PerSourceListener::new(l, connection_limit::MAX_PER_SOURCE)
            .counting_in(refused.clone())
    };
    let registry_routes = registry.map(|r| {
        cambox_registry::api::spawn_expiry(r.clone());
        cambox_registry::api::router(r, "/registry")
    });
    let mut app = router(station.clone());
    let Some(https) = https else {
        if let Some(r) = registry_routes {
            app = app.nest("/registry", r);
        }
        // `tap_io` only for axum's `ConnectInfo`: it gives handlers the remote address for
        // any listener it wraps, ours included.
        return axum::serve(
            limited(listener).tap_io(|_| {}),
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await;
    };
    let https_port = https.listener.local_addr()?.port();
    let mut plain = Router::new()
        .route("/metrics", get(metrics))
        .route(
            "/api/v1/revocations",
            get(get_revocations).put(put_revocations),
        )
        .fallback(
            move |headers: axum::http::HeaderMap, uri: axum::http::Uri| async move {
                let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
                crate::https::redirect_to(https_port, host, &uri)
            },
        )
        .with_state(station);
    if let Some(r) = registry_routes {
        plain = plain.nest("/registry", r.clone());
        app = app.nest("/registry", r);
    }
    let app = app.layer(axum::middleware::from_fn(crate::https::over_tls));
    let tls = crate::https::TlsListener::new(limited(https.listener), https.config)?;
    let secure = axum::serve(
        tls.tap_io(|_| {}),
        app.into_make_service_with_connect_info::<SocketAddr>(),
    );
    let plain = axum::serve(
        limited(listener).tap_io(|_| {}),
        plain.into_make_service_with_connect_info::<SocketAddr>(),
    );
    tokio::select! {
        r = secure => r,
        r = plain => r,
    }
}

async fn index() -> Html<&'static str> {
    Html(INDEX_HTML)
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/yaml")], OPENAPI_YAML).into_response()
}

/// axum answers some requests before any handler runs: a body over its 2 MiB limit (413),
/// a path or query it cannot decode (400), a method the route lacks (405). It answers in
/// plain text or with no body; like every other error of the box, those become JSON.
async fn json_errors(res: Response) -> Response {
    let status = res.status();
    let json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if json || !(status.is_client_error() || status.is_server_error()) {
        return res;
    }
    let (mut parts, body) = res.into_parts();
    let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let msg = match text.trim() {
        "" => status.canonical_reason().unwrap_or("error").to_string(),
        t => t.to_string(),
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.remove(header::CONTENT_TYPE);
    let mut r = ApiError(status, msg).into_response();
    r.headers_mut().extend(parts.headers);
    r
}

async fn not_found() -> ApiError {
    ApiError(StatusCode::NOT_FOUND, "no such endpoint".into())
}

async fn status(State(st): State<Arc<Station>>) -> Response {
    Json(st.status()).into_response()
}

fn trust(st: &Station) -> Result<Arc<crate::mesh::trust::Trust>, ApiError> {
    st.mesh.get().and_then(|m| m.trust.clone()).ok_or_else(|| {
        ApiError(
            StatusCode::NOT_FOUND,
            "this box's mesh has no company CA (a lab mesh): nothing is revoked in it".into(),
        )
    })
}

/// The company CA's revocation list in force on this box, as the CA signed it.
async fn get_revocations(State(st): State<Arc<Station>>) -> Result<Response, ApiError> {
    let list = trust(&st)?.list().ok_or_else(|| {
        ApiError(
            StatusCode::NOT_FOUND,
            "the CA has revoked nothing yet".into(),
        )
    })?;
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], list).into_response())
}

/// A newer revocation list from the CA (`cambox ca revoke --push`): the box keeps it,
/// passes it to every neighbour and disconnects the nodes it revokes. The CA's signature
/// is what authorises it, so it needs no login.
async fn put_revocations(
    State(st): State<Arc<Station>>,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    let trust = trust(&st)?;
    let limit = cambox_trust::revocation::MAX_BYTES;
    let list = axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the list is over the {limit}-byte limit"),
        )
    })?;
    let mesh = st
        .mesh
        .get()
        .ok_or_else(|| ApiError(StatusCode::SERVICE_UNAVAILABLE, "the mesh is not up".into()))?;
    let adopted = mesh
        .revocations(list)
        .await
        .map_err(|e| ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("not taken: {e}")))?;
    Ok(Json(serde_json::json!({
        "number": trust.list_number(),
        "adopted": adopted,
    }))
    .into_response())
}

#[derive(Debug, Serialize)]
struct StreamEntry {
    name: String,
    /// The origin box's name (`--node`), followed by its short node id in parentheses when
    /// another box of the list has the same name.
    node: String,
    /// The origin box's short node id (what `name@<id>` and chat rooms name it by).
    node_id: String,
    site: String,
    live: bool,
    /// Relays between the origin and this box's neighbour (absent for its own stream).
    hops: Option<usize>,
    /// True for this box's own stream.
    local: bool,
    /// Where to play it: fragmented MP4 over HTTP.
    url: String,
    /// Where to play it over WebRTC: the WHEP endpoint (POST an SDP offer).
    whep: String,
    /// Its path on the box's RTSP server (`rtsp://<box>:<port><rtsp>`), when that serves.
    rtsp: Option<String>,
}

/// This box's own stream (live or not) and every broadcast the mesh knows, those this
/// person may not watch left out.
async fn streams(State(st): State<Arc<Station>>, who: Who) -> Result<Response, ApiError> {
    let rules = st.auth.get().is_some_and(|a| a.required()).then(|| {
        let s = &st.settings;
        move |rule: &str| {
            who.as_deref()
                .is_some_and(|p| crate::auth::rules::allows(rule, &s.watch_default, p, &s.site))
        }
    });
    let allowed = |rule: &str| rules.as_ref().is_none_or(|ok| ok(rule));
    let s = st.status();
    let rtsp = s.rtsp_listen.is_some();
    let rtsp_path = |name: &str| rtsp.then(|| format!("/{name}"));
    // A box whose mesh has not started has no id yet; its entry is the only one then.
    let own_id = s
        .node_id
        .as_deref()
        .map_or(String::new(), |id| id.chars().take(12).collect());
    let own_allowed = allowed(&st.settings.watch);
    let mut list = vec![StreamEntry {
        url: format!("/live/{}.mp4", s.stream),
        whep: format!("/whep/{}", s.stream),
        rtsp: rtsp_path(&s.stream),
        name: s.stream,
        node: s.node,
        node_id: own_id,
        site: s.site,
        live: s.live,
        hops: None,
        local: true,
    }];
    list.retain(|_| own_allowed);
    if let Some(mesh) = st.mesh.get() {
        let known = mesh.list().await.map_err(unavailable)?;
        let known = known.into_iter().filter(|b| !b.local && allowed(&b.watch));
        list.extend(known.map(|b| StreamEntry {
            url: format!("/live/{}@{}.mp4", b.name, b.origin),
            whep: format!("/whep/{}@{}", b.name, b.origin),
            rtsp: rtsp_path(&format!("{}@{}", b.name, b.origin)),
            name: b.name,
            node: if b.box_name.is_empty() {
                b.origin.clone()
            } else {
                b.box_name
            },
            node_id: b.origin,
            site: b.site,
            live: true,
            hops: Some(b.hops),
            local: false,
        }));
    }
    name_colliding_boxes(&mut list);
    Ok(Json(serde_json::json!({ "streams": list })).into_response())
}

/// Where two different boxes of the list share a name, each shows its short id too.
fn name_colliding_boxes(list: &mut [StreamEntry]) {
    let mut ids_by_name: HashMap<String, HashSet<String>> = HashMap::new();
    for e in list.iter() {
        ids_by_name
            .entry(e.node.clone())
            .or_default()
            .insert(e.node_id.clone());
    }
    for e in list.iter_mut() {
        if ids_by_name.get(&e.node).is_some_and(|ids| ids.len() > 1) {
            e.node = format!("{} ({})", e.node, e.node_id);
        }
    }
}

/// The request was fine; the box cannot serve it now (503 with the reason).
pub(crate) fn unavailable(e: impl std::fmt::Display) -> ApiError {
    ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
}

/// The overlay's neighbours of this box.
async fn peers(State(st): State<Arc<Station>>) -> Result<Response, ApiError> {
    let Some(mesh) = st.mesh.get() else {
        return Ok(Json(serde_json::json!({ "peers": [] })).into_response());
    };
    let peers = mesh.peers().await.map_err(unavailable)?;
    Ok(Json(serde_json::json!({ "peers": peers })).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LiveRequest {
    /// `true` to go live, `false` to stop; absent toggles, like the button.
    live: Option<bool>,
}

type Who = Option<axum::Extension<crate::auth::sessions::Person>>;

async fn set_live(
    State(st): State<Arc<Station>>,
    who: Who,
    body: Bytes,
) -> Result<Response, ApiError> {
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
    let (want, result) = tokio::task::spawn_blocking(move || {
        let want = req.live.unwrap_or(!station.is_live());
        (want, station.set_live(want))
    })
    .await
    .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let outcome = match &result {
        Ok(()) if want => "on".to_string(),
        Ok(()) => "off".to_string(),
        Err(e) => format!("failed to go live: {e}"),
    };
    st.audit(crate::audit::Record::by("live", who.as_deref()).detail(outcome));
    match result {
        Ok(()) => Ok(Json(st.status()).into_response()),
        // The request was fine; the box could not do it (camera missing, encoder failed).
        Err(e) => Err(ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("cannot go live: {e}"),
        )),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
enum PressKind {
    Short,
    Long,
    VeryLong,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ButtonRequest {
    /// A whole press, held as long as its kind needs.
    press: Option<PressKind>,
    /// Hold (`true`) or let go (`false`), for a page whose button follows the mouse.
    hold: Option<bool>,
}

/// Presses the simulated board's button. It goes through the same debouncing and press
/// lengths as a real one, so a long press takes 5 s here too.
async fn button(
    State(st): State<Arc<Station>>,
    who: Who,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: ButtonRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!(
                "body must be JSON like {{\"press\": \"short\"|\"long\"|\"very_long\"}} \
                 or {{\"hold\": true|false}}: {e}"
            ),
        )
    })?;
    let Some(vb) = st.virtual_button() else {
        return Err(match st.status().board {
            "none" => ApiError(
                StatusCode::SERVICE_UNAVAILABLE,
                "this box has no board attached (yet)".into(),
            ),
            kind => ApiError(
                StatusCode::CONFLICT,
                format!("this box's button is on its {kind} board: press the real one"),
            ),
        });
    };
    st.audit(
        crate::audit::Record::by("button", who.as_deref())
            .detail("the page's box button (the box records what it did)"),
    );
    let now = std::time::Instant::now();
    let held = match (req.press, req.hold) {
        (Some(p), None) => {
            let held = match p {
                PressKind::Short => std::time::Duration::from_millis(200),
                PressKind::Long => {
                    crate::board::button::LONG + std::time::Duration::from_millis(500)
                }
                PressKind::VeryLong => {
                    crate::board::button::VERY_LONG + std::time::Duration::from_millis(500)
                }
            };
            vb.press(now, held);
            serde_json::json!({ "held_ms": held.as_millis() as u64 })
        }
        (None, Some(down)) => {
            vb.hold(down);
            serde_json::json!({ "down": down })
        }
        _ => {
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                "give exactly one of \"press\" and \"hold\"".into(),
            ))
        }
    };
    Ok((StatusCode::ACCEPTED, Json(held)).into_response())
}

/// Server-sent events: `led` with the LED's view on every change of state or level.
async fn events(
    State(st): State<Arc<Station>>,
) -> axum::response::sse::Sse<
    impl futures_util::Stream<Item = Result<axum::response::sse::Event, std::convert::Infallible>>,
> {
    use axum::response::sse::{Event, KeepAlive, Sse};
    use futures_util::StreamExt;
    let leds = tokio_stream::wrappers::WatchStream::new(st.led()).map(|v| {
        Ok(Event::default()
            .event("led")
            .data(serde_json::to_string(&v).unwrap_or_default()))
    });
    Sse::new(leds).keep_alive(KeepAlive::default())
}

async fn live_mp4(
    State(st): State<Arc<Station>>,
    Path(file): Path<String>,
    person: Option<axum::Extension<crate::auth::sessions::Person>>,
    axum::extract::ConnectInfo(client): axum::extract::ConnectInfo<SocketAddr>,
) -> Result<Response, ApiError> {
    let Some(name) = file.strip_suffix(".mp4") else {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("'{file}' is not a stream: use /live/<stream>.mp4"),
        ));
    };
    let viewing = crate::viewing::open(&st, name, person.as_deref())
        .await
        .map_err(ApiError::from)?;
    let broadcast = viewing.broadcast.clone();
    let (mime, mut rx) =
        start_viewer(broadcast, st.metrics.clone())
            .await
            .map_err(|e| match e {
                LiveError::Ended => {
                    ApiError(StatusCode::NOT_FOUND, format!("stream '{name}' ended"))
                }
                other => ApiError(StatusCode::SERVICE_UNAVAILABLE, other.to_string()),
            })?;
    let viewer =
        crate::watchers::Viewer::at(&st, person.as_deref(), "mp4", name, Some(client.ip()))
            .with_origin(viewing.origin());
    let counted = crate::watchers::ViewerGuard::new(&st, viewer);
    // Watching (through the mesh too) lasts as long as this response is being read.
    let stream = futures_util::stream::poll_fn(move |cx| {
        let _watching = (&viewing, &counted);
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
