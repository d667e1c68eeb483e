//! Who is watching: people log in with the company's single sign-on (OpenID Connect) or a
//! local account, and every request of the page, the API, live MP4 and WHEP carries their
//! session (a cookie from the page, a bearer token from programs, as the WHEP draft says).
//!
//! A box with neither accounts nor single sign-on configured stays open, as a lab: the
//! page and `/api/v1/session` say so. With either, everything but the page itself, the
//! login routes, the CA-signed revocation lists, the metrics and the API's OpenAPI
//! document needs a session, and going live, the button, commands and chat need an
//! operator.

pub mod accounts;
pub mod attempts;
pub mod digest;
pub mod oidc;
pub mod rules;
pub mod sessions;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use self::accounts::{Accounts, Role};
use self::attempts::Attempts;
use self::oidc::Oidc;
use self::sessions::{Person, Sessions};
use crate::http::ApiError;
use crate::station::Station;

/// The session cookie's name.
pub const COOKIE: &str = "cambox_session";

/// The box's login configuration and live sessions.
#[derive(Debug)]
pub struct Auth {
    accounts: Accounts,
    oidc: Option<Oidc>,
    pub sessions: Sessions,
    attempts: Attempts,
    checks: tokio::sync::Semaphore,
}

impl Auth {
    pub fn new(accounts: Accounts, oidc: Option<Oidc>) -> Auth {
        Auth {
            accounts,
            oidc,
            sessions: Sessions::default(),
            attempts: Attempts::default(),
            checks: tokio::sync::Semaphore::new(attempts::CONCURRENT_CHECKS),
        }
    }

    /// Whether anybody must log in (accounts or single sign-on are configured).
    pub fn required(&self) -> bool {
        !self.accounts.users.is_empty() || self.oidc.is_some()
    }

    /// The person an RTSP `Authorization: Digest` header proves, for a request with
    /// `method` answering `nonce`; each failure counts against `source`'s attempts.
    pub fn rtsp_person(
        &self,
        header: Option<&str>,
        method: &str,
        nonce: &str,
        source: std::net::IpAddr,
    ) -> Result<Person, RtspRefusal> {
        let Some(c) = header.and_then(digest::parse) else {
            return Err(RtspRefusal::Ask);
        };
        // Only failures count: a player sends its credentials with every request.
        if self.attempts.over(source, Instant::now()) {
            return Err(RtspRefusal::TooMany);
        }
        let account = self.accounts.get(&c.username).filter(|a| {
            a.rtsp
                .as_deref()
                .is_some_and(|ha1| digest::verify(&c, ha1, method, nonce))
        });
        match account {
            Some(a) => Ok(Person {
                name: a.name.clone(),
                role: a.role,
                groups: a.groups.clone(),
                via: "local",
            }),
            None => {
                self.attempts.allow(source, Instant::now());
                Err(RtspRefusal::Wrong)
            }
        }
    }

    /// The person whose session `headers` carry (cookie or `Authorization: Bearer`).
    pub fn person(&self, headers: &HeaderMap) -> Option<Person> {
        let token = bearer(headers).or_else(|| cookie(headers))?;
        self.sessions.get(token, Instant::now())
    }
}

/// Why an RTSP request was not let in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RtspRefusal {
    /// No Digest credentials: ask for them.
    Ask,
    /// Credentials that are wrong (or of an account without an RTSP password).
    Wrong,
    /// Too many attempts from the address.
    TooMany,
}

/// The session token of an `Authorization: Bearer` header.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// The session token of the `cambox_session` cookie.
fn cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(COOKIE)?.strip_prefix('='))
}

/// What a request needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    Nothing,
    Viewer,
    Operator,
}

fn need(method: &Method, path: &str) -> Need {
    let open = matches!(
        path,
        "/" | "/api/v1/openapi.yaml"
            | "/api/v1/session"
            | "/api/v1/login"
            | "/api/v1/logout"
            | "/auth/login"
            | "/auth/callback"
            | "/api/v1/revocations"
            | "/metrics"
    );
    if open {
        return Need::Nothing;
    }
    let acts = *method == Method::POST
        && (matches!(
            path,
            "/api/v1/live"
                | "/api/v1/button"
                | "/api/v1/cmd"
                | "/api/v1/update"
                | "/api/v1/update/publish"
                | "/api/v1/update/rollout"
                | "/api/v1/update/now"
        ) || path.starts_with("/api/v1/chat/"));
    if acts {
        Need::Operator
    } else {
        Need::Viewer
    }
}

/// The box's routes check the session here before anything else runs.
pub async fn guard(State(st): State<Arc<Station>>, mut req: Request, next: Next) -> Response {
    let Some(auth) = st.auth.get().filter(|a| a.required()) else {
        return next.run(req).await;
    };
    match need(req.method(), req.uri().path()) {
        Need::Nothing => next.run(req).await,
        wanted => match auth.person(req.headers()) {
            None => unauthorized(),
            Some(p) if wanted == Need::Operator && p.role < Role::Operator => ApiError(
                StatusCode::FORBIDDEN,
                format!("only operators may do this; {} is a {}", p.name, p.role),
            )
            .into_response(),
            Some(p) => {
                // Handlers that record who did what find the person here.
                req.extensions_mut().insert(p);
                next.run(req).await
            }
        },
    }
}

fn unauthorized() -> Response {
    let mut r = ApiError(
        StatusCode::UNAUTHORIZED,
        "log in first: the page's login, POST /api/v1/login, or /auth/login for single sign-on; \
         programs send the session token as Authorization: Bearer"
            .into(),
    )
    .into_response();
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer realm=\"cambox\""),
    );
    r
}

pub fn routes() -> Router<Arc<Station>> {
    Router::new()
        .route("/api/v1/session", get(session))
        .route("/api/v1/login", post(login))
        .route("/api/v1/logout", post(logout))
        .route("/auth/login", get(sso_login))
        .route("/auth/callback", get(sso_callback))
}

#[derive(Debug, Serialize)]
struct SessionView {
    /// Whether this box asks people to log in.
    required: bool,
    /// Who this request is logged in as.
    person: Option<Person>,
    /// Whether single sign-on is there (`/auth/login`).
    sso: bool,
    /// Whether local accounts are there (`POST /api/v1/login`).
    accounts: bool,
}

async fn session(State(st): State<Arc<Station>>, headers: HeaderMap) -> Json<SessionView> {
    let auth = st.auth.get();
    Json(SessionView {
        required: auth.is_some_and(|a| a.required()),
        person: auth.and_then(|a| a.person(&headers)),
        sso: auth.is_some_and(|a| a.oidc.is_some()),
        accounts: auth.is_some_and(|a| !a.accounts.users.is_empty()),
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    name: String,
    password: String,
}

/// Counts an attempt from `source` against its allowance.
fn attempt(auth: &Auth, source: SocketAddr) -> Result<(), ApiError> {
    if auth.attempts.allow(source.ip(), Instant::now()) {
        Ok(())
    } else {
        Err(ApiError(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "too many login attempts from {}: at most {} a minute",
                source.ip(),
                attempts::PER_ADDRESS_PER_MINUTE
            ),
        ))
    }
}

fn configured(st: &Station) -> Result<Arc<Auth>, ApiError> {
    st.auth
        .get()
        .filter(|a| a.required())
        .cloned()
        .ok_or_else(|| {
            ApiError(
                StatusCode::NOT_FOUND,
                "this box has no accounts and no single sign-on: nobody needs to log in".into(),
            )
        })
}

/// A session cookie for `token` (HttpOnly: scripts on the page never see it).
fn session_cookie(token: &str, max_age: Duration) -> String {
    format!(
        "{COOKIE}={token}; HttpOnly; SameSite=Lax; Path=/; Max-Age={}",
        max_age.as_secs()
    )
}

async fn login(
    State(st): State<Arc<Station>>,
    ConnectInfo(source): ConnectInfo<SocketAddr>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let auth = configured(&st)?;
    attempt(&auth, source)?;
    let LoginBody { name, password } = serde_json::from_slice(&body).map_err(|e| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("expected {{\"name\": ..., \"password\": ...}}: {e}"),
        )
    })?;
    if name.len() > 256 || password.len() > 1024 {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "name or password too long".into(),
        ));
    }
    let _permit = tokio::time::timeout(Duration::from_secs(5), auth.checks.acquire())
        .await
        .ok()
        .and_then(Result::ok)
        .ok_or_else(|| {
            ApiError(
                StatusCode::SERVICE_UNAVAILABLE,
                "the box is busy checking passwords; try again".into(),
            )
        })?;
    let checker = auth.clone();
    let account = tokio::task::spawn_blocking(move || {
        checker
            .accounts
            .verify(&name, &password)
            .map(|a| (a.name.clone(), a.role, a.groups.clone()))
    })
    .await
    .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let Some((name, role, groups)) = account else {
        tracing::info!(%source, "a login with a wrong name or password");
        return Err(ApiError(
            StatusCode::UNAUTHORIZED,
            "wrong name or password".into(),
        ));
    };
    let person = Person {
        name,
        role,
        groups,
        via: "local",
    };
    start_session(&auth, person, None)
}

/// A new session: the cookie, and the token in the body for programs; then to `to`.
fn start_session(auth: &Auth, person: Person, to: Option<&str>) -> Result<Response, ApiError> {
    let token = auth
        .sessions
        .create(person.clone(), Instant::now())
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    tracing::info!(name = %person.name, via = person.via, role = %person.role, "logged in");
    let cookie = session_cookie(&token, sessions::SESSION_TTL);
    let mut r = match to {
        Some(to) => Redirect::to(to).into_response(),
        None => Json(serde_json::json!({ "person": person, "token": token })).into_response(),
    };
    if let Ok(v) = header::HeaderValue::from_str(&cookie) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(r)
}

async fn logout(State(st): State<Arc<Station>>, headers: HeaderMap) -> Response {
    if let Some(auth) = st.auth.get() {
        if let Some(token) = bearer(&headers).or_else(|| cookie(&headers)) {
            auth.sessions.end(token);
        }
    }
    let mut r = StatusCode::NO_CONTENT.into_response();
    if let Ok(v) = header::HeaderValue::from_str(&session_cookie("", Duration::ZERO)) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

fn sso(auth: &Auth) -> Result<&Oidc, ApiError> {
    auth.oidc.as_ref().ok_or_else(|| {
        ApiError(
            StatusCode::NOT_FOUND,
            "this box has no single sign-on (oidc_issuer)".into(),
        )
    })
}

/// This box's callback as the browser reached the box.
fn callback_url(headers: &HeaderMap, over_tls: bool) -> Result<String, ApiError> {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_graphic()))
        .ok_or_else(|| ApiError(StatusCode::BAD_REQUEST, "no Host header".into()))?;
    let scheme = if over_tls { "https" } else { "http" };
    Ok(format!("{scheme}://{host}/auth/callback"))
}

async fn sso_login(
    State(st): State<Arc<Station>>,
    ConnectInfo(source): ConnectInfo<SocketAddr>,
    over_tls: Option<axum::Extension<crate::https::OverTls>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let auth = configured(&st)?;
    let oidc = sso(&auth)?;
    attempt(&auth, source)?;
    let url = oidc
        .begin(&callback_url(&headers, over_tls.is_some())?)
        .await
        .map_err(|e| ApiError(StatusCode::BAD_GATEWAY, e))?;
    Ok(Redirect::to(&url).into_response())
}

#[derive(Debug, Deserialize)]
struct Callback {
    state: Option<String>,
    code: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

async fn sso_callback(
    State(st): State<Arc<Station>>,
    Query(cb): Query<Callback>,
) -> Result<Response, ApiError> {
    let auth = configured(&st)?;
    let oidc = sso(&auth)?;
    if let Some(e) = cb.error {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            format!(
                "the provider did not log you in: {e} {}",
                cb.error_description.unwrap_or_default()
            ),
        ));
    }
    let (Some(state), Some(code)) = (cb.state, cb.code) else {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "a callback needs state and code".into(),
        ));
    };
    let person = oidc.finish(&state, &code).await.map_err(|e| {
        tracing::warn!(issuer = oidc.issuer(), "single sign-on failed: {e}");
        ApiError(StatusCode::FORBIDDEN, format!("single sign-on failed: {e}"))
    })?;
    start_session(&auth, person, Some("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_and_login_are_open_acting_needs_an_operator_and_the_rest_a_viewer() {
        assert_eq!(need(&Method::GET, "/"), Need::Nothing);
        assert_eq!(need(&Method::POST, "/api/v1/login"), Need::Nothing);
        assert_eq!(need(&Method::GET, "/api/v1/openapi.yaml"), Need::Nothing);
        assert_eq!(need(&Method::GET, "/api/v1/status"), Need::Viewer);
        assert_eq!(need(&Method::GET, "/live/hall.mp4"), Need::Viewer);
        assert_eq!(need(&Method::POST, "/whep/hall"), Need::Viewer);
        assert_eq!(need(&Method::GET, "/anything/new"), Need::Viewer);
        assert_eq!(need(&Method::POST, "/api/v1/live"), Need::Operator);
        assert_eq!(need(&Method::POST, "/api/v1/chat/site:x"), Need::Operator);
        assert_eq!(need(&Method::GET, "/api/v1/chat/site:x"), Need::Viewer);
    }

    #[test]
    fn the_session_is_read_from_a_bearer_token_or_the_cookie() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            "a=b; cambox_session=tok; c=d".parse().unwrap(),
        );
        assert_eq!(cookie(&h), Some("tok"));
        h.insert(header::AUTHORIZATION, "Bearer other".parse().unwrap());
        assert_eq!(bearer(&h), Some("other"));
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, "cambox_sessionx=tok".parse().unwrap());
        assert_eq!(cookie(&h), None);
    }
}
