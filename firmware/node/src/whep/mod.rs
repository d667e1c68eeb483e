//! WHEP (WebRTC-HTTP Egress Protocol, the IETF draft built like WHIP of RFC 9725): a
//! player POSTs its SDP offer to `/whep/<broadcast>` and gets the answer, with the
//! session's URL in `Location`; `DELETE` on that URL ends it.
//!
//! The box is ICE-lite: it offers a host candidate per address the viewer can reach, on
//! UDP and on TCP, and answers the viewer's connectivity checks, so no STUN or TURN server
//! is involved and trickle ICE is not needed (PATCH answers 405, as the draft allows).
//! All sessions share the box's two WebRTC ports ([`ports`]).

pub mod ports;
pub mod session;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, post};
use axum::Router;
use str0m::change::SdpOffer;
use str0m::net::TcpType;
use str0m::{Candidate, IceCreds, RtcConfig};
use tokio::sync::watch;

use crate::http::ApiError;
use crate::station::Station;

/// Largest SDP offer accepted; browsers send 5-10 KiB.
pub const MAX_OFFER: usize = 64 * 1024;
/// Sessions one box serves at once; past this, 503 (each costs a task and its buffers).
const MAX_SESSIONS: usize = 200;
/// Sessions still connecting (ICE and DTLS not done) from one address at most; past
/// this, 429. A session waits up to 15 s for its peer with a socket and a task of its
/// own, so 200 offers from one address that never connected filled the box and locked
/// every real viewer out for 15 s. A player makes one offer per play; a page showing a
/// grid of this box's streams, or people behind one NAT pressing play at once, stay
/// within this.
pub const MAX_CONNECTING_PER_SOURCE: usize = 16;

/// One WHEP session as the HTTP side knows it.
#[derive(Debug)]
struct Session {
    stop: watch::Sender<bool>,
    source: IpAddr,
    /// Set by the session's task once ICE and DTLS are up.
    connected: Arc<AtomicBool>,
}

/// The box's WHEP sessions, by id.
#[derive(Debug, Default)]
pub struct Sessions {
    live: Mutex<HashMap<String, Session>>,
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn count(&self) -> usize {
        self.lock().len()
    }

    /// Sessions from `source` whose peer has not connected yet.
    fn connecting_from(&self, source: IpAddr) -> usize {
        self.lock()
            .values()
            .filter(|s| s.source == source && !s.connected.load(Ordering::Relaxed))
            .count()
    }
}

pub fn routes() -> Router<Arc<Station>> {
    Router::new()
        .route("/whep/{name}", post(offer).options(options))
        .route(
            "/whep/session/{id}",
            delete(end).patch(no_trickle).options(options),
        )
}

/// What a WHEP client may do here (the draft's discovery of `Accept-Post`).
async fn options() -> Response {
    (
        StatusCode::NO_CONTENT,
        [
            (header::ALLOW, "POST, DELETE, OPTIONS"),
            (
                header::HeaderName::from_static("accept-post"),
                "application/sdp",
            ),
        ],
    )
        .into_response()
}

async fn no_trickle() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "this box is ICE-lite and takes no trickled candidates: send them in the offer",
    )
}

/// Parses the offer before anything is opened, so a bad one costs nothing.
pub fn parse_offer(body: &[u8]) -> Result<SdpOffer, String> {
    if body.len() > MAX_OFFER {
        return Err(format!(
            "the offer is {} bytes; at most {MAX_OFFER}",
            body.len()
        ));
    }
    let text = std::str::from_utf8(body).map_err(|_| "the offer is not UTF-8 text".to_string())?;
    if !text.trim_start().starts_with("v=0") {
        return Err("the body is not an SDP offer (it must start with v=0)".into());
    }
    SdpOffer::from_sdp_string(text).map_err(|e| format!("malformed SDP offer: {e}"))
}

async fn offer(
    State(st): State<Arc<Station>>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    Path(name): Path<String>,
    person: Option<axum::Extension<crate::auth::sessions::Person>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    // A person the stream's rule does not let in learns so before anything is parsed.
    crate::viewing::may_watch(&st, &name, person.as_deref()).await?;
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ctype.starts_with("application/sdp") {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("WHEP takes Content-Type application/sdp, not '{ctype}'"),
        ));
    }
    let offer = parse_offer(&body).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e))?;
    if st.whep.count() >= MAX_SESSIONS {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("this box already serves {MAX_SESSIONS} WebRTC viewers"),
        ));
    }
    let source = client.ip().to_canonical();
    if st.whep.connecting_from(source) >= MAX_CONNECTING_PER_SOURCE {
        st.metrics.whep_refused_connecting.inc();
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "{MAX_CONNECTING_PER_SOURCE} WebRTC sessions from {source} are still connecting; \
                 retry once one has connected or given up (within 15 s)"
            ),
        ));
    }
    let viewing = crate::viewing::open(&st, &name, person.as_deref()).await?;
    let origin = viewing.origin();

    let ports = st.webrtc_ports().await.map_err(crate::http::unavailable)?;
    let candidates = candidates(&ports, client.ip()).map_err(crate::http::unavailable)?;
    let creds = IceCreds::new();
    let link = ports.register(&creds.ufrag);
    let (rtc, answer) = negotiate(offer, creds, &candidates).map_err(|e| e.into_api())?;

    // 128 random bits: a session URL cannot be guessed by another viewer.
    let id = crate::viewing::random_id(16);
    let location = format!("/whep/session/{id}");
    let (stop_tx, stop) = watch::channel(false);
    let connected = Arc::new(AtomicBool::new(false));
    st.whep.lock().insert(
        id.clone(),
        Session {
            stop: stop_tx,
            source,
            connected: connected.clone(),
        },
    );
    let setup = session::Setup {
        id: id.clone(),
        rtc,
        link,
        viewing,
        metrics: st.metrics.clone(),
        stop,
        connected,
    };
    let station = st.clone();
    let viewer = crate::watchers::Viewer::at(&st, person.as_deref(), "whep", &name, Some(source))
        .with_origin(origin);
    let guard = crate::watchers::ViewerGuard::new(&st, viewer);
    tokio::spawn(async move {
        let _guard = guard;
        session::run(setup).await;
        station.whep.lock().remove(&id);
    });
    Ok((
        StatusCode::CREATED,
        [
            (header::CONTENT_TYPE, "application/sdp".to_string()),
            (header::LOCATION, location),
        ],
        answer,
    )
        .into_response())
}

/// Why an offer could not be answered.
#[derive(Debug)]
pub enum NegotiateError {
    /// The offer is not one this box can answer (400, 406).
    Offer(StatusCode, String),
    Internal(String),
}

impl NegotiateError {
    fn into_api(self) -> ApiError {
        match self {
            Self::Offer(code, m) => ApiError::new(code, m),
            Self::Internal(m) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, m),
        }
    }
}

/// Answers `offer` as an ICE-lite peer with `creds` and `candidates`, sending H.264 and
/// Opus. Returns the peer and the answer's SDP.
pub fn negotiate(
    offer: SdpOffer,
    creds: IceCreds,
    candidates: &[Candidate],
) -> Result<(str0m::Rtc, String), NegotiateError> {
    let mut rtc = RtcConfig::new()
        .set_ice_lite(true)
        .set_local_ice_credentials(creds)
        .clear_codecs()
        .enable_h264(true)
        .enable_opus(true, false)
        .build(std::time::Instant::now());
    for c in candidates {
        rtc.add_local_candidate(c.clone());
    }
    let answer = rtc
        .sdp_api()
        .accept_offer(offer)
        .map_err(|e| {
            NegotiateError::Offer(
                StatusCode::BAD_REQUEST,
                format!("cannot answer the offer: {e}"),
            )
        })?
        .to_sdp_string();
    if !offers_h264(&answer) {
        return Err(NegotiateError::Offer(
            StatusCode::NOT_ACCEPTABLE,
            "the offer has no H.264 (packetization-mode 1) video this box could send".into(),
        ));
    }
    Ok((rtc, answer))
}

/// Ends a session (the viewer closed its player).
async fn end(State(st): State<Arc<Station>>, Path(id): Path<String>) -> Result<Response, ApiError> {
    match st.whep.lock().remove(&id) {
        Some(session) => {
            let _ = session.stop.send(true);
            Ok(StatusCode::OK.into_response())
        }
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no WHEP session '{id}' (it ended, or was never made here)"),
        )),
    }
}

/// A host candidate on UDP, and one on TCP (passive) when ICE-TCP is on, for each address
/// the viewer can reach: loopback for a viewer on this machine, else every address of the
/// box in the viewer's family.
pub fn candidates(ports: &ports::Ports, client: IpAddr) -> std::io::Result<Vec<Candidate>> {
    let ips: Vec<IpAddr> = if client.is_loopback() {
        vec![if client.is_ipv4() {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            client
        }]
    } else {
        crate::board::runner::addresses()
            .into_iter()
            .filter(|ip| ip.is_ipv4() == client.to_canonical().is_ipv4())
            .collect()
    };
    if ips.is_empty() {
        return Err(std::io::Error::other(format!(
            "this box has no address in {client}'s family to offer"
        )));
    }
    let bad = |e: str0m::error::IceError| std::io::Error::other(e.to_string());
    let mut out = Vec::new();
    for ip in ips {
        out.push(Candidate::host(ports.udp_addr(ip)?, "udp").map_err(bad)?);
        if let Some(tcp) = ports.tcp_addr(ip) {
            out.push(
                Candidate::builder()
                    .tcp()
                    .host(tcp)
                    .tcptype(TcpType::Passive)
                    .build()
                    .map_err(bad)?,
            );
        }
    }
    Ok(out)
}

/// The answer names H.264 in packetization mode 1 (what the box sends).
fn offers_h264(answer: &str) -> bool {
    answer
        .lines()
        .any(|l| l.starts_with("a=rtpmap:") && l.contains("H264/90000"))
}
