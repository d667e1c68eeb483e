//! The registry's HTTP API (`/api/v1`), its OpenAPI document generated from these
//! handlers and the model types, and its web page.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::stream::{self, Stream, StreamExt};
use serde::Deserialize;
use tokio_stream::wrappers::BroadcastStream;
use utoipa::{IntoParams, OpenApi};

use crate::model::{
    BroadcastInfo, BroadcastList, BroadcastView, EnrolReply, Enrolment, ErrorBody, NodeList,
    NodeView, Reach, RegisterReply, Registration, RevocationsReply, SeenAddress, SignedEnrolment,
    SignedRegistration,
};
use crate::store::{Change, Registry, RegistryError};
use crate::updates::{UpdateDepot, UpdateRef, UpdateView};

const PAGE: &str = include_str!("page.html");

#[derive(OpenApi)]
#[openapi(
    info(
        title = "cambox registry",
        description = "Where cambox boxes announce themselves and their live streams so that boxes and viewers at other sites find them. Registrations are signed by the node key and expire unless renewed."
    ),
    paths(
        register,
        list_nodes,
        get_node,
        list_broadcasts,
        events,
        enrol,
        get_revocations,
        put_revocations,
        get_ca,
        get_address,
        list_updates,
        put_update,
        get_update,
        get_rollout,
        put_rollout
    ),
    components(schemas(
        Registration,
        SignedRegistration,
        Enrolment,
        SignedEnrolment,
        EnrolReply,
        RevocationsReply,
        BroadcastInfo,
        NodeView,
        BroadcastView,
        RegisterReply,
        Reach,
        SeenAddress,
        NodeList,
        BroadcastList,
        ErrorBody,
        UpdateRef,
        UpdateView,
        UpdateList,
        RolloutReply
    ))
)]
struct ApiDoc;

/// The OpenAPI document, with `base` as its server (where the registry is mounted).
pub fn openapi(base: &str) -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.servers = Some(vec![utoipa::openapi::Server::new(if base.is_empty() {
        "/"
    } else {
        base
    })]);
    doc
}

#[derive(Clone)]
struct App {
    registry: Arc<Registry>,
    openapi: Arc<String>,
}

/// The registry's routes; `base` is the path it is mounted at ("" standalone,
/// "/registry" inside a box). Serve with connect info (`into_make_service_with_connect_info`):
/// limits and unspecified addresses use the client's address.
pub fn router(registry: Arc<Registry>, base: &str) -> Router {
    let openapi = serde_json::to_string(&openapi(base)).unwrap_or_default();
    Router::new()
        .route("/", get(page))
        .route("/api/v1/register", post(register))
        .route("/api/v1/nodes", get(list_nodes))
        .route("/api/v1/nodes/{id}", get(get_node))
        .route("/api/v1/broadcasts", get(list_broadcasts))
        .route("/api/v1/events", get(events))
        .route("/api/v1/enrol", post(enrol))
        .route(
            "/api/v1/revocations",
            get(get_revocations).put(put_revocations),
        )
        .route("/api/v1/ca", get(get_ca))
        .route("/api/v1/address", get(get_address))
        .route(
            "/api/v1/updates",
            get(list_updates)
                .put(put_update)
                .layer(axum::extract::DefaultBodyLimit::disable()),
        )
        .route("/api/v1/updates/{id}", get(get_update))
        .route(
            "/api/v1/updates/{id}/rollout",
            get(get_rollout).put(put_rollout),
        )
        .route("/api/v1/openapi.json", get(openapi_json))
        .fallback(not_found)
        .with_state(App {
            registry,
            openapi: Arc::new(openapi),
        })
}

/// Expires entries every second, so the event stream reports removals on time.
pub fn spawn_expiry(registry: Arc<Registry>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            registry.expire(Instant::now(), wall_ms());
        }
    })
}

pub fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(ErrorBody { error: self.1 })).into_response()
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        let status = match &e {
            RegistryError::Malformed(_) | RegistryError::Skew(..) => StatusCode::BAD_REQUEST,
            RegistryError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            RegistryError::RateLimited(..) => StatusCode::TOO_MANY_REQUESTS,
            RegistryError::Signature(_) | RegistryError::Token => StatusCode::UNAUTHORIZED,
            RegistryError::NotAllowed(_) | RegistryError::NotEnrolled(_) => StatusCode::FORBIDDEN,
            RegistryError::Replay(..) => StatusCode::CONFLICT,
            RegistryError::Full(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiError(status, e.to_string())
    }
}

/// The whole body, if it is within `limit` bytes (413 otherwise).
async fn read_body(body: Body, limit: usize) -> Result<axum::body::Bytes, ApiError> {
    axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is over the {limit}-byte limit"),
        )
    })
}

async fn not_found() -> ApiError {
    ApiError(StatusCode::NOT_FOUND, "no such endpoint".into())
}

async fn page() -> Html<&'static str> {
    Html(PAGE)
}

async fn openapi_json(State(app): State<App>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        app.openapi.as_str().to_owned(),
    )
        .into_response()
}

/// Register or renew a node.
#[utoipa::path(
    post,
    path = "/api/v1/register",
    request_body = SignedRegistration,
    responses(
        (status = 200, description = "Stored; the other nodes", body = RegisterReply),
        (status = 400, description = "Malformed, or the clock is off", body = ErrorBody),
        (status = 401, description = "Bad signature or missing token", body = ErrorBody),
        (status = 403, description = "Node not on the allow-list, or not enrolled by the company CA", body = ErrorBody),
        (status = 409, description = "Replayed or out-of-order registration", body = ErrorBody),
        (status = 413, description = "Body or entries over the limits", body = ErrorBody),
        (status = 429, description = "Too many registrations from this source", body = ErrorBody),
        (status = 503, description = "The registry is full", body = ErrorBody),
    )
)]
async fn register(
    State(app): State<App>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<RegisterReply>, ApiError> {
    let source = source(&app, peer, &headers);
    let bytes = read_body(body, app.registry.limits.max_body_bytes).await?;
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let reply = app
        .registry
        .register(Instant::now(), wall_ms(), source, token, &bytes)?;
    Ok(Json(reply))
}

fn company_ca(app: &App) -> Result<&crate::CompanyCa, ApiError> {
    app.registry.admission.ca.as_deref().ok_or_else(|| {
        ApiError(
            StatusCode::NOT_FOUND,
            "this registry has no company CA (cambox registry --ca FILE): its mesh is a lab".into(),
        )
    })
}

/// Enrol a box: a node certificate for the key that signed the request, if its join token
/// is the CA's, unexpired and for the site asked.
#[utoipa::path(
    post,
    path = "/api/v1/enrol",
    request_body = SignedEnrolment,
    responses(
        (status = 200, description = "The node certificate and the CA", body = EnrolReply),
        (status = 400, description = "Malformed, or the clock is off", body = ErrorBody),
        (status = 403, description = "Bad token or signature, or a revoked node", body = ErrorBody),
        (status = 404, description = "No company CA or no enrolment key here", body = ErrorBody),
        (status = 413, description = "Body over the limit", body = ErrorBody),
        (status = 429, description = "Too many requests from this source", body = ErrorBody),
    )
)]
async fn enrol(
    State(app): State<App>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<EnrolReply>, ApiError> {
    let ca = company_ca(&app)?;
    app.registry
        .count_source(wall_ms(), source(&app, peer, &headers))?;
    let bytes = read_body(body, app.registry.limits.max_body_bytes).await?;
    let signed: SignedEnrolment = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("not an enrolment: {e}")))?;
    let max_skew = app.registry.limits.max_skew.as_secs();
    let skew = wall_ms().abs_diff(signed.enrolment.timestamp_ms) / 1000;
    if skew > max_skew {
        return Err(RegistryError::Skew(skew, max_skew).into());
    }
    let e = &signed.enrolment;
    if e.name.chars().count() > 256 || e.site.chars().count() > 256 {
        return Err(ApiError(
            StatusCode::PAYLOAD_TOO_LARGE,
            "name and site hold at most 256 characters".into(),
        ));
    }
    let reply = ca
        .enrol(&signed, SystemTime::now())
        .map_err(|e| ApiError(StatusCode::FORBIDDEN, e))?;
    tracing::info!(node = %signed.enrolment.node, site = %signed.enrolment.site, name = %signed.enrolment.name, "enrolled a box");
    Ok(Json(reply))
}

/// The company CA's newest revocation list this registry holds (text, as the CA signed it).
#[utoipa::path(
    get,
    path = "/api/v1/revocations",
    responses(
        (status = 200, description = "The list", content_type = "text/plain", body = String),
        (status = 404, description = "No company CA, or no list yet", body = ErrorBody),
    )
)]
async fn get_revocations(State(app): State<App>) -> Result<Response, ApiError> {
    let ca = company_ca(&app)?;
    let text = ca.rule().revocations().text().to_owned();
    if text.is_empty() {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            "the CA has revoked nothing yet".into(),
        ));
    }
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response())
}

/// Hand the registry a newer revocation list (`cambox ca revoke --push`); the CA's
/// signature is what authorises it.
#[utoipa::path(
    put,
    path = "/api/v1/revocations",
    request_body(content = String, content_type = "text/plain"),
    responses(
        (status = 200, description = "Taken, or already held", body = RevocationsReply),
        (status = 400, description = "Not a list this CA signed", body = ErrorBody),
        (status = 404, description = "No company CA", body = ErrorBody),
        (status = 413, description = "Over the size limit", body = ErrorBody),
    )
)]
async fn put_revocations(
    State(app): State<App>,
    body: Body,
) -> Result<Json<RevocationsReply>, ApiError> {
    let ca = company_ca(&app)?;
    let bytes = read_body(body, cambox_trust::revocation::MAX_BYTES).await?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| ApiError(StatusCode::BAD_REQUEST, "the list is not text".into()))?;
    let adopted = ca
        .adopt(text)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("not taken: {e}")))?;
    Ok(Json(RevocationsReply {
        number: ca.rule().revocations().number,
        adopted,
    }))
}

/// The company CA's certificate, PEM.
#[utoipa::path(
    get,
    path = "/api/v1/ca",
    responses(
        (status = 200, description = "The CA certificate", content_type = "application/x-pem-file", body = String),
        (status = 404, description = "No company CA", body = ErrorBody),
    )
)]
async fn get_ca(State(app): State<App>) -> Result<Response, ApiError> {
    let ca = company_ca(&app)?;
    let pem =
        cambox_trust::pem::encode_certificates(std::slice::from_ref(ca.rule().ca_certificate()));
    Ok(([(header::CONTENT_TYPE, "application/x-pem-file")], pem).into_response())
}

/// The address a request comes from, as the registry sees it: a box compares it with its
/// own to find a NAT or a proxy between (`cambox doctor`).
#[utoipa::path(
    get,
    path = "/api/v1/address",
    responses((status = 200, body = SeenAddress))
)]
async fn get_address(
    State(app): State<App>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Json<SeenAddress> {
    Json(SeenAddress {
        address: source(&app, peer, &headers).to_string(),
    })
}

/// Where a request comes from: the connection's address, or behind a reverse proxy
/// (`forwarded_for`) the last address the proxy appended to `X-Forwarded-For` (earlier
/// ones are the client's word, and could be anything).
fn source(app: &App, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
    let forwarded = || {
        let last = headers.get_all("x-forwarded-for").iter().next_back()?;
        last.to_str().ok()?.rsplit(',').next()?.trim().parse().ok()
    };
    let ip = match app.registry.limits.forwarded_for {
        true => forwarded().unwrap_or(peer.ip()),
        false => peer.ip(),
    };
    ip.to_canonical()
}

#[derive(Debug, Deserialize, IntoParams)]
struct SiteFilter {
    /// Only nodes at this site.
    site: Option<String>,
}

/// Registered nodes.
#[utoipa::path(
    get,
    path = "/api/v1/nodes",
    params(SiteFilter),
    responses((status = 200, body = NodeList), (status = 400, body = ErrorBody))
)]
async fn list_nodes(State(app): State<App>, Query(f): Query<SiteFilter>) -> Json<NodeList> {
    Json(NodeList {
        nodes: app.registry.nodes(Instant::now(), f.site.as_deref()),
    })
}

/// One node.
#[utoipa::path(
    get,
    path = "/api/v1/nodes/{id}",
    params(("id" = String, Path, description = "The node id, 64 hex digits")),
    responses(
        (status = 200, body = NodeView),
        (status = 404, description = "Not registered (or expired)", body = ErrorBody)
    )
)]
async fn get_node(
    State(app): State<App>,
    Path(id): Path<String>,
) -> Result<Json<NodeView>, ApiError> {
    app.registry
        .node(Instant::now(), &id)
        .map(Json)
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no node {id} is registered")))
}

#[derive(Debug, Deserialize, IntoParams)]
struct BroadcastFilter {
    /// Only broadcasts from this site.
    site: Option<String>,
    /// Only broadcasts with this name.
    name: Option<String>,
}

/// Broadcasts of all registered nodes.
#[utoipa::path(
    get,
    path = "/api/v1/broadcasts",
    params(BroadcastFilter),
    responses((status = 200, body = BroadcastList), (status = 400, body = ErrorBody))
)]
async fn list_broadcasts(
    State(app): State<App>,
    Query(f): Query<BroadcastFilter>,
) -> Json<BroadcastList> {
    Json(BroadcastList {
        broadcasts: app
            .registry
            .broadcasts(Instant::now(), f.site.as_deref(), f.name.as_deref()),
    })
}

/// Changes as Server-Sent Events: `add` and `update` carry a NodeView, `remove` the node
/// id. The stream starts with an `add` for every node registered now.
#[utoipa::path(
    get,
    path = "/api/v1/events",
    responses((status = 200, description = "text/event-stream of add, update and remove", content_type = "text/event-stream", body = String))
)]
async fn events(State(app): State<App>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    // Subscribe before the snapshot, so nothing falls between the two.
    let changes = BroadcastStream::new(app.registry.subscribe());
    let now = app.registry.nodes(Instant::now(), None);
    let snapshot = stream::iter(now.into_iter().map(Change::Add));
    let live = changes.filter_map(|c| async move { c.ok() });
    let stream = snapshot.chain(live).map(|c| Ok(to_event(&c)));
    Sse::new(stream).keep_alive(KeepAlive::default())
}

fn to_event(c: &Change) -> Event {
    match c {
        Change::Add(v) => Event::default()
            .event("add")
            .data(serde_json::to_string(v).unwrap_or_default()),
        Change::Update(v) => Event::default()
            .event("update")
            .data(serde_json::to_string(v).unwrap_or_default()),
        Change::Remove(id) => Event::default()
            .event("remove")
            .data(serde_json::json!({ "node": id }).to_string()),
    }
}

/// The largest bundle taken (a root file system of a few hundred MB fits).
const MAX_BUNDLE: u64 = 2 << 30;

#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct UpdateList {
    pub updates: Vec<UpdateView>,
}

#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct RolloutReply {
    pub bundle: String,
    /// The rollout, for people ("paused, 10 % of sites hq").
    pub rollout: String,
    /// False when the registry held it, or a newer one, already.
    pub newer: bool,
}

fn depot(app: &App) -> Result<&UpdateDepot, ApiError> {
    app.registry.updates.as_ref().ok_or_else(|| {
        ApiError(
            StatusCode::NOT_FOUND,
            "this registry takes no updates (cambox registry --release-keys FILE --updates DIR)"
                .into(),
        )
    })
}

/// The update bundles the registry holds, and the boxes seeding each now.
#[utoipa::path(
    get,
    path = "/api/v1/updates",
    responses(
        (status = 200, description = "The bundles held", body = UpdateList),
        (status = 404, description = "The registry takes no updates", body = ErrorBody),
    )
)]
async fn list_updates(State(app): State<App>) -> Result<Json<UpdateList>, ApiError> {
    Ok(Json(UpdateList {
        updates: depot(&app)?.list(),
    }))
}

/// Publish an update bundle (`cambox update publish --registry`): the release key's
/// signature authorises it, checked before the payload is read; every chunk is checked
/// before it is kept. A couple of boxes fetch it and publish it to the mesh.
#[utoipa::path(
    put,
    path = "/api/v1/updates",
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses(
        (status = 201, description = "Kept; boxes will seed it", body = UpdateView),
        (status = 400, description = "Not a whole bundle", body = ErrorBody),
        (status = 403, description = "Not signed by a release key the registry trusts, or not newer than the one held", body = ErrorBody),
        (status = 404, description = "The registry takes no updates", body = ErrorBody),
        (status = 413, description = "Over the size limit", body = ErrorBody),
        (status = 429, description = "Too many requests from this source", body = ErrorBody),
        (status = 507, description = "The bundle cannot be stored", body = ErrorBody),
    )
)]
async fn put_update(
    State(app): State<App>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let depot = depot(&app)?;
    app.registry
        .count_source(wall_ms(), source(&app, peer, &headers))?;
    let path = depot.upload_path();
    let kept = match receive_bundle(depot, body, &path).await {
        Ok(()) => {
            let at = path.clone();
            tokio::task::spawn_blocking(move || cambox_update::Bundle::check_file(&at))
                .await
                .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
                .and_then(|r| {
                    r.map_err(|e| {
                        ApiError(StatusCode::BAD_REQUEST, format!("not a whole bundle: {e}"))
                    })
                })
                .and_then(|b| {
                    depot
                        .keep(b, &path)
                        .map_err(|e| ApiError(StatusCode::FORBIDDEN, e))
                })
        }
        Err(e) => Err(e),
    };
    let view = match kept {
        Ok(v) => v,
        Err(e) => {
            let _ = tokio::fs::remove_file(&path).await;
            return Err(e);
        }
    };
    tracing::info!(bundle = %view.bundle, board = %view.board, version = %view.version, "update bundle published at the registry");
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

/// Streams an upload to `path`: its head is read and admitted first, so a bundle nobody
/// signed is refused before its payload is.
async fn receive_bundle(
    depot: &UpdateDepot,
    body: Body,
    path: &std::path::Path,
) -> Result<(), ApiError> {
    use tokio::io::AsyncWriteExt;
    let io = |e: std::io::Error| {
        ApiError(
            StatusCode::INSUFFICIENT_STORAGE,
            format!("cannot store the bundle: {e}"),
        )
    };
    let mut out = tokio::fs::File::create(path).await.map_err(io)?;
    let mut stream = body.into_data_stream();
    let mut head: Option<Vec<u8>> = Some(Vec::new());
    let mut got = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.to_string()))?;
        got += chunk.len() as u64;
        if got > MAX_BUNDLE {
            return Err(ApiError(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("a bundle of more than {MAX_BUNDLE} bytes"),
            ));
        }
        match head.as_mut() {
            Some(buf) => {
                buf.extend_from_slice(&chunk);
                if let Some(bundle) = head_of(buf)? {
                    depot
                        .admit(&bundle)
                        .map_err(|e| ApiError(StatusCode::FORBIDDEN, e))?;
                    out.write_all(buf).await.map_err(io)?;
                    head = None;
                }
            }
            None => out.write_all(&chunk).await.map_err(io)?,
        }
    }
    if head.is_some() {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "not a whole bundle: it ends inside its head".into(),
        ));
    }
    out.sync_all().await.map_err(io)
}

/// The bundle head at the start of `buf`, once all of it is there.
fn head_of(buf: &[u8]) -> Result<Option<cambox_update::Bundle>, ApiError> {
    let bad = |e: String| ApiError(StatusCode::BAD_REQUEST, format!("not a bundle: {e}"));
    let magic = cambox_update::bundle::MAGIC;
    let start = buf.len().min(magic.len());
    if buf[..start] != magic[..start] {
        return Err(bad(
            "it does not start as one (cambox release pack makes them)".into(),
        ));
    }
    let Some(len) = buf.get(magic.len()..magic.len() + 4) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
    if len > cambox_update::bundle::MAX_MANIFEST {
        return Err(bad(format!("a manifest of {len} bytes")));
    }
    if buf.len() < magic.len() + 4 + len + 1 + 64 {
        return Ok(None);
    }
    cambox_update::Bundle::read_head(&mut &buf[..])
        .map(Some)
        .map_err(bad)
}

/// A bundle the registry holds, whole (seeds fetch it to publish it to the mesh).
#[utoipa::path(
    get,
    path = "/api/v1/updates/{id}",
    params(("id" = String, Path, description = "The bundle's id (16 hex digits)")),
    responses(
        (status = 200, description = "The bundle", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 404, description = "No such bundle, or the registry takes no updates", body = ErrorBody),
    )
)]
async fn get_update(State(app): State<App>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let (path, size) = depot(&app)?
        .file(&id)
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no bundle {id} here")))?;
    let file = tokio::fs::File::open(&path)
        .await
        .map_err(|e| ApiError(StatusCode::NOT_FOUND, format!("bundle {id}: {e}")))?;
    let chunks = stream::unfold(Some(file), |file| async move {
        use tokio::io::AsyncReadExt;
        let mut file = file?;
        let mut buf = vec![0u8; 64 << 10];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(axum::body::Bytes::from(buf)), Some(file)))
            }
            Err(e) => Some((Err(e), None)),
        }
    });
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_LENGTH, size.to_string()),
        ],
        Body::from_stream(chunks),
    )
        .into_response())
}

/// The newest rollout of a bundle held here, as the release key signed it.
#[utoipa::path(
    get,
    path = "/api/v1/updates/{id}/rollout",
    params(("id" = String, Path, description = "The bundle's id (16 hex digits)")),
    responses(
        (status = 200, description = "The signed rollout", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 404, description = "No rollout of such a bundle here", body = ErrorBody),
    )
)]
async fn get_rollout(State(app): State<App>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let doc = depot(&app)?.rollout(&id).ok_or_else(|| {
        ApiError(
            StatusCode::NOT_FOUND,
            format!("no rollout of bundle {id} here"),
        )
    })?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], doc).into_response())
}

/// Hand the registry a newer rollout of a bundle it holds (`cambox update publish
/// ROLLOUT --registry`); the release key's signature authorises it. Boxes whose offer has
/// an older one fetch it at their next registration.
#[utoipa::path(
    put,
    path = "/api/v1/updates/{id}/rollout",
    params(("id" = String, Path, description = "The bundle's id (16 hex digits)")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses(
        (status = 200, description = "Taken, or an equal or newer one is held", body = RolloutReply),
        (status = 400, description = "Not a rollout, or of another bundle", body = ErrorBody),
        (status = 403, description = "Not signed by a release key the registry trusts, or no such bundle here", body = ErrorBody),
        (status = 404, description = "The registry takes no updates", body = ErrorBody),
        (status = 413, description = "Over the size limit", body = ErrorBody),
    )
)]
async fn put_rollout(
    State(app): State<App>,
    Path(id): Path<String>,
    body: Body,
) -> Result<Json<RolloutReply>, ApiError> {
    let depot = depot(&app)?;
    let bytes = read_body(body, 64 << 10).await?;
    let rollout = cambox_update::Rollout::from_bytes(&bytes)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, e))?;
    let plan = rollout.plan.clone();
    if plan.bundle != id {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!("the rollout is of bundle {}, not {id}", plan.bundle),
        ));
    }
    let newer = depot
        .set_rollout(rollout)
        .map_err(|e| ApiError(StatusCode::FORBIDDEN, e))?;
    Ok(Json(RolloutReply {
        rollout: plan.describe(),
        bundle: plan.bundle,
        newer,
    }))
}
