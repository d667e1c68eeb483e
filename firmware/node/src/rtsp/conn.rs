//! One RTSP client connection: requests in, responses and (for TCP) interleaved media out.
//!
//! One task per connection owns the socket, the session and its track readers, so there
//! are no locks and a slow client only slows itself: while its socket will not take more,
//! its readers fall behind and later skip whole groups (the broadcast's drop rule).
//! Anything that does not parse as RTSP gets `400 Bad Request` and the connection is closed.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cambox_media::annexb::AvcConfig;
use cambox_media::broadcast::{ReadObject, TrackReader};
use cambox_media::rtp;
use rtsp_types::headers::{RtpLowerTransport, Transport, Transports};
use rtsp_types::{Message, Method, ParseError, Request};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use super::sdp;
use crate::auth::digest;
use crate::auth::sessions::Person;
use crate::auth::RtspRefusal;
use crate::station::Station;
use crate::viewing::{
    next_or_pending, readers_from_newest_keyframe, AbortOnDrop, Viewing, ViewingError,
};
use crate::watchers::{Viewer, ViewerGuard};

/// How long the server waits for a client before it gives up on it.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// A connection with no request and no RTCP (over TCP or UDP) for this long ends; it
    /// is the `timeout` the server announces in `Session`.
    pub session_timeout: Duration,
    /// A client that accepts no bytes for this long while media waits is dropped.
    pub write_stall: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            session_timeout: Duration::from_secs(60),
            write_stall: Duration::from_secs(10),
        }
    }
}
/// Largest request (headers and body) accepted.
const MAX_REQUEST: usize = 64 * 1024;
/// RTP payload size: fits a 1500-byte Ethernet frame with IP, UDP and RTP headers.
const MAX_PAYLOAD: usize = 1400;
/// How long DESCRIBE waits for a keyframe (it carries the parameter sets the SDP needs).
const KEYFRAME_WAIT: Duration = Duration::from_secs(5);
const PUBLIC: &str =
    "OPTIONS, DESCRIBE, SETUP, PLAY, PAUSE, TEARDOWN, GET_PARAMETER, SET_PARAMETER";

/// Where a track's packets go.
#[derive(Debug)]
enum Out {
    /// `$`-framed on the RTSP connection, on this channel (RTCP on the next).
    Interleaved(u8),
    /// UDP from our socket to the client's RTP port.
    Udp {
        rtp: Arc<UdpSocket>,
        to: SocketAddr,
        _rtcp_listener: AbortOnDrop,
    },
}

#[derive(Debug)]
struct TrackOut {
    out: Out,
    sender: rtp::Sender,
    /// RTP timestamp of capture time 0, random so streams are not correlated.
    base: u32,
}

#[derive(Debug)]
struct Session {
    id: String,
    name: String,
    viewing: Viewing,
    video: Option<TrackOut>,
    audio: Option<TrackOut>,
    readers: Option<Readers>,
    _counted: Option<ViewerGuard>,
}

#[derive(Debug)]
struct Readers {
    video: Option<TrackReader>,
    audio: Option<TrackReader>,
}

/// A parsed request, reduced to what the server looks at.
#[derive(Debug)]
pub struct Req {
    pub method: Method,
    pub uri: String,
    pub cseq: String,
    pub session: Option<String>,
    pub transports: Option<Transports>,
    /// The `Authorization` header, for Digest authentication.
    pub authorization: Option<String>,
}

/// What parsing the start of the input buffer gave.
#[derive(Debug)]
pub enum Parsed {
    Request(Req, usize),
    /// Interleaved data from the client (RTCP receiver reports), skipped.
    Data(usize),
    Incomplete,
    Garbage,
}

/// Parses one message from the front of `buf` (the fuzzed entry point).
pub fn parse(buf: &[u8]) -> Parsed {
    match Message::<Vec<u8>>::parse(buf) {
        Ok((Message::Request(r), used)) => match reduce(&r) {
            Some(req) => Parsed::Request(req, used),
            None => Parsed::Garbage,
        },
        Ok((Message::Data(_), used)) => Parsed::Data(used),
        Ok((Message::Response(_), _)) => Parsed::Garbage,
        Err(ParseError::Incomplete(_)) if buf.len() < MAX_REQUEST => Parsed::Incomplete,
        Err(_) => Parsed::Garbage,
    }
}

fn reduce(r: &Request<Vec<u8>>) -> Option<Req> {
    let cseq = r
        .header(&rtsp_types::headers::CSEQ)?
        .as_str()
        .trim()
        .to_string();
    let uri = r
        .request_uri()
        .map(|u| u.to_string())
        .unwrap_or_else(|| "*".into());
    let session = r.header(&rtsp_types::headers::SESSION).map(|v| {
        v.as_str()
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_string()
    });
    let transports = r.typed_header::<Transports>().ok().flatten();
    let authorization = r
        .header(&rtsp_types::headers::AUTHORIZATION)
        .map(|v| v.as_str().to_owned());
    Some(Req {
        method: r.method().clone(),
        uri,
        cseq,
        session,
        transports,
        authorization,
    })
}

/// The broadcast named by a request URL, and the track control when there is one:
/// `rtsp://box:8554/hall@3fa2/trackID=1` -> ("hall@3fa2", Some("trackID=1")).
pub fn split_uri(uri: &str) -> Option<(String, Option<String>)> {
    let path = match uri.find("://") {
        Some(i) => {
            let rest = &uri[i + 3..];
            &rest[rest.find('/')?..]
        }
        None => uri,
    };
    let path = path.split(['?', '#']).next().unwrap_or("");
    let mut parts: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let control = match parts.last() {
        Some(l) if l.starts_with("trackID=") => parts.pop().map(str::to_string),
        _ => None,
    };
    if parts.len() != 1 {
        return None;
    }
    let name = percent_decode(parts[0])?;
    (!name.is_empty()).then_some((name, control))
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Serves one connection until the client leaves, errs, or times out.
pub async fn serve(station: Arc<Station>, mut stream: TcpStream, peer: SocketAddr, limits: Limits) {
    let local = match stream.local_addr() {
        Ok(a) => a,
        Err(_) => return,
    };
    let mut c = Conn {
        station,
        limits,
        described: None,
        peer,
        local,
        inbuf: Vec::with_capacity(4096),
        session: None,
        last_heard: Instant::now(),
        rtcp_heard: Arc::new(AtomicU64::new(0)),
        started: Instant::now(),
        nonce: random_hex(),
        person: None,
    };
    match c.run(&mut stream).await {
        Ok(()) => tracing::debug!(%peer, "RTSP client left"),
        Err(e) => tracing::info!(%peer, "RTSP client dropped: {e}"),
    }
}

struct Conn {
    station: Arc<Station>,
    limits: Limits,
    /// The broadcast the last DESCRIBE opened, until a SETUP takes it.
    described: Option<(String, Viewing)>,
    peer: SocketAddr,
    local: SocketAddr,
    inbuf: Vec<u8>,
    session: Option<Session>,
    last_heard: Instant,
    /// Milliseconds since `started` when RTCP last came over UDP.
    rtcp_heard: Arc<AtomicU64>,
    started: Instant,
    /// This connection's Digest challenge.
    nonce: String,
    /// Who the client proved to be, on a box where people log in.
    person: Option<Person>,
}

fn random_hex() -> String {
    let mut raw = [0u8; 16];
    let _ = getrandom::fill(&mut raw);
    raw.iter().map(|b| format!("{b:02x}")).collect()
}

impl Conn {
    async fn run(&mut self, stream: &mut TcpStream) -> Result<(), String> {
        let mut buf = vec![0u8; 8192];
        loop {
            let heard = self
                .last_heard
                .max(self.started + Duration::from_millis(self.rtcp_heard.load(Ordering::Relaxed)));
            if heard.elapsed() > self.limits.session_timeout {
                return Err(format!(
                    "nothing heard for {:?}",
                    self.limits.session_timeout
                ));
            }
            let idle = tokio::time::sleep(Duration::from_secs(1));
            let (video, audio) = match self.session.as_mut().and_then(|s| s.readers.as_mut()) {
                Some(r) => (r.video.as_mut(), r.audio.as_mut()),
                None => (None, None),
            };
            tokio::select! {
                n = stream.read(&mut buf) => {
                    let n = n.map_err(|e| format!("read: {e}"))?;
                    if n == 0 {
                        return Ok(());
                    }
                    self.last_heard = Instant::now();
                    self.inbuf.extend_from_slice(&buf[..n]);
                    self.handle_input(stream).await?;
                }
                o = next_or_pending(video) => match o {
                    Some(o) => self.send(stream, true, o).await?,
                    None => return Err("the broadcast ended".into()),
                },
                o = next_or_pending(audio) => match o {
                    Some(o) => self.send(stream, false, o).await?,
                    None => {
                        if let Some(r) = self.session.as_mut().and_then(|s| s.readers.as_mut()) {
                            r.audio = None;
                        }
                    }
                },
                _ = idle => {}
            }
        }
    }

    /// Handles every whole message in the buffer; an error closes the connection.
    async fn handle_input(&mut self, stream: &mut TcpStream) -> Result<(), String> {
        loop {
            match parse(&self.inbuf) {
                Parsed::Incomplete => return Ok(()),
                Parsed::Data(used) => {
                    self.inbuf.drain(..used);
                }
                Parsed::Garbage => {
                    self.station.metrics.rtsp_bad_requests.inc();
                    let msg = "RTSP/1.0 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";
                    let _ = write_all(stream, msg.as_bytes(), self.limits.write_stall).await;
                    return Err("sent something that is not RTSP".into());
                }
                Parsed::Request(req, used) => {
                    self.inbuf.drain(..used);
                    let reply = self.respond(req).await;
                    write_all(stream, reply.as_bytes(), self.limits.write_stall).await?;
                }
            }
        }
    }

    async fn respond(&mut self, req: Req) -> String {
        let cseq = req.cseq.clone();
        let login = match req.method {
            Method::Options => Ok(()),
            _ => self.login(&req),
        };
        let result = match (&req.method, login) {
            (_, Err(refused)) => Err(refused),
            (Method::Options, _) => Ok(Reply::ok().header("Public", PUBLIC)),
            (Method::Describe, _) => self.describe(&req).await,
            (Method::Setup, _) => self.setup(&req).await,
            (Method::Play, _) => self.play(&req),
            (Method::Pause, _) => self.pause(&req),
            (Method::Teardown, _) => self.teardown(&req),
            (Method::GetParameter | Method::SetParameter, _) => self.keepalive(&req),
            _ => Err(Reply::status(405, "Method Not Allowed").header("Allow", PUBLIC)),
        };
        result.unwrap_or_else(|e| e).render(&cseq)
    }

    /// On a box where people log in, the client must prove an account by Digest (once a
    /// connection: players send the header with every request anyway).
    fn login(&mut self, req: &Req) -> Result<(), Reply> {
        let Some(auth) = self.station.auth.get().filter(|a| a.required()) else {
            return Ok(());
        };
        if self.person.is_some() {
            return Ok(());
        }
        let method: &str = (&req.method).into();
        match auth.rtsp_person(
            req.authorization.as_deref(),
            method,
            &self.nonce,
            self.peer.ip(),
        ) {
            Ok(p) => {
                self.person = Some(p);
                Ok(())
            }
            Err(RtspRefusal::TooMany) => Err(Reply::status(403, "Forbidden").body(
                "text/plain",
                "too many failed logins from this address; wait a minute",
            )),
            Err(why) => Err(Reply::status(401, "Unauthorized")
                .header("WWW-Authenticate", &digest::challenge(&self.nonce))
                .body(
                    "text/plain",
                    if why == RtspRefusal::Wrong {
                        "wrong name or password (local accounts only: cambox user add)"
                    } else {
                        "this box asks viewers to log in: rtsp://NAME:PASSWORD@box/stream"
                    },
                )),
        }
    }

    fn server_ip(&self) -> String {
        self.local.ip().to_canonical().to_string()
    }

    async fn open(&self, name: &str) -> Result<Viewing, Reply> {
        crate::viewing::open(&self.station, name, self.person.as_ref())
            .await
            .map_err(|e| match e {
                ViewingError::NotFound(m) => Reply::status(404, "Not Found").body("text/plain", m),
                ViewingError::Unavailable(m) => {
                    Reply::status(503, "Service Unavailable").body("text/plain", m)
                }
                ViewingError::Forbidden(m) => Reply::status(403, "Forbidden").body("text/plain", m),
            })
    }

    async fn describe(&mut self, req: &Req) -> Result<Reply, Reply> {
        let (name, _) = split_uri(&req.uri).ok_or_else(not_a_stream)?;
        let viewing = self.open(&name).await?;
        let b = viewing.broadcast.clone();
        let keyframe = match b.video.latest_group_head() {
            Some(k) => k,
            None => {
                let mut r = b.video.subscribe();
                tokio::time::timeout(KEYFRAME_WAIT, r.next())
                    .await
                    .ok()
                    .flatten()
                    .map(|o| o.object)
                    .ok_or_else(|| {
                        Reply::status(503, "Service Unavailable").body(
                            "text/plain",
                            format!("'{name}' has produced no keyframe yet"),
                        )
                    })?
            }
        };
        let avc = AvcConfig::from_keyframe(&keyframe.payload).map_err(|e| {
            Reply::status(500, "Internal Server Error").body("text/plain", e.to_string())
        })?;
        let body = sdp::describe(
            &name,
            &avc,
            b.rate.as_f64(),
            b.audio.is_some(),
            &self.server_ip(),
        );
        let base = format!("rtsp://{}/{}/", self.local, name);
        // Kept for the SETUP that follows, so a relay does not leave the broadcast's tree
        // between the two requests only to join it again.
        self.described = Some((name, viewing));
        Ok(Reply::ok()
            .header("Content-Base", &base)
            .body("application/sdp", body))
    }

    async fn setup(&mut self, req: &Req) -> Result<Reply, Reply> {
        let (name, control) = split_uri(&req.uri).ok_or_else(not_a_stream)?;
        let video = match control.as_deref() {
            Some(sdp::VIDEO_CONTROL) | None => true,
            Some(sdp::AUDIO_CONTROL) => false,
            Some(other) => {
                return Err(Reply::status(404, "Not Found").body(
                    "text/plain",
                    format!("no track '{other}'; this stream has trackID=0 and trackID=1"),
                ))
            }
        };
        match (&self.session, &req.session) {
            (Some(s), Some(id)) if &s.id != id => return Err(session_not_found()),
            (Some(s), _) if s.name != name => {
                return Err(Reply::status(455, "Method Not Valid in This State").body(
                    "text/plain",
                    "one session per connection: this one plays another stream",
                ))
            }
            (None, Some(_)) => return Err(session_not_found()),
            _ => {}
        }
        if self.session.is_none() {
            let viewing = match self.described.take() {
                Some((n, v)) if n == name => v,
                _ => self.open(&name).await?,
            };
            self.session = Some(Session {
                id: crate::viewing::random_id(8),
                name: name.clone(),
                viewing,
                video: None,
                audio: None,
                readers: None,
                _counted: None,
            });
        }
        let has_audio = self
            .session
            .as_ref()
            .is_some_and(|s| s.viewing.broadcast.audio.is_some());
        if !video && !has_audio {
            return Err(
                Reply::status(404, "Not Found").body("text/plain", "this stream has no sound")
            );
        }
        let transports = req.transports.as_ref().ok_or_else(|| {
            Reply::status(461, "Unsupported Transport").body(
                "text/plain",
                "SETUP needs a Transport header (RTP/AVP or RTP/AVP/TCP)",
            )
        })?;
        let channel_hint = if video { 0 } else { 2 };
        let (out, transport_reply) = self.choose_transport(transports, channel_hint).await?;
        let track = TrackOut {
            out,
            sender: rtp::Sender {
                payload_type: if video { sdp::VIDEO_PT } else { sdp::AUDIO_PT },
                ssrc: random_u32(),
                sequence: random_u32() as u16,
            },
            base: random_u32(),
        };
        let timeout = self.limits.session_timeout.as_secs().max(1);
        let s = self.session.as_mut().expect("made above");
        let ssrc = track.sender.ssrc;
        if video {
            s.video = Some(track);
        } else {
            s.audio = Some(track);
        }
        Ok(Reply::ok()
            .header("Transport", &format!("{transport_reply};ssrc={ssrc:08X}"))
            .header("Session", &format!("{};timeout={}", s.id, timeout)))
    }

    /// The first transport offered that this server speaks: RTP over the RTSP connection,
    /// or RTP over UDP to the client's ports (multicast is not served).
    async fn choose_transport(
        &mut self,
        offered: &Transports,
        channel_hint: u8,
    ) -> Result<(Out, String), Reply> {
        for t in offered.iter() {
            let Transport::Rtp(t) = t else { continue };
            if t.params.multicast {
                continue;
            }
            match t.lower_transport {
                Some(RtpLowerTransport::Tcp) => {
                    let ch = t.params.interleaved.map_or(channel_hint, |(a, _)| a);
                    if ch == u8::MAX {
                        continue;
                    }
                    return Ok((
                        Out::Interleaved(ch),
                        format!("RTP/AVP/TCP;unicast;interleaved={}-{}", ch, ch + 1),
                    ));
                }
                None | Some(RtpLowerTransport::Udp) => {
                    let Some((rtp_port, rtcp_port)) = t.params.client_port else {
                        continue;
                    };
                    let rtcp_port = rtcp_port.unwrap_or(rtp_port.wrapping_add(1));
                    let (rtp_sock, rtcp_sock) = bind_pair(self.local.ip()).await.map_err(|e| {
                        Reply::status(503, "Service Unavailable")
                            .body("text/plain", format!("cannot open UDP ports: {e}"))
                    })?;
                    let server = (
                        rtp_sock.local_addr().map(|a| a.port()).unwrap_or(0),
                        rtcp_sock.local_addr().map(|a| a.port()).unwrap_or(0),
                    );
                    let heard = self.rtcp_heard.clone();
                    let started = self.started;
                    // RTCP receiver reports keep a UDP session alive.
                    let listener = tokio::spawn(async move {
                        let mut b = [0u8; 1500];
                        while rtcp_sock.recv_from(&mut b).await.is_ok() {
                            heard.store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
                        }
                    });
                    return Ok((
                        Out::Udp {
                            rtp: Arc::new(rtp_sock),
                            to: SocketAddr::new(self.peer.ip(), rtp_port),
                            _rtcp_listener: AbortOnDrop(vec![listener]),
                        },
                        format!(
                            "RTP/AVP;unicast;client_port={rtp_port}-{rtcp_port};server_port={}-{}",
                            server.0, server.1
                        ),
                    ));
                }
                Some(RtpLowerTransport::Other(_)) => continue,
            }
        }
        Err(Reply::status(461, "Unsupported Transport").body(
            "text/plain",
            "this server speaks RTP/AVP (UDP unicast) and RTP/AVP/TCP (interleaved)",
        ))
    }

    fn session_for(&mut self, req: &Req) -> Result<&mut Session, Reply> {
        match (&mut self.session, &req.session) {
            (Some(s), Some(id)) if &s.id == id => Ok(s),
            _ => Err(session_not_found()),
        }
    }

    fn play(&mut self, req: &Req) -> Result<Reply, Reply> {
        let local = self.local;
        let station = self.station.clone();
        let peer = self.peer.ip();
        let person = self.person.clone();
        let s = self.session_for(req)?;
        if s.video.is_none() && s.audio.is_none() {
            return Err(Reply::status(455, "Method Not Valid in This State")
                .body("text/plain", "SETUP a track before PLAY"));
        }
        if s.readers.is_none() {
            let (video, audio) = readers_from_newest_keyframe(&s.viewing.broadcast);
            s.readers = Some(Readers {
                video: s.video.as_ref().map(|_| video),
                audio: s.audio.as_ref().and(audio),
            });
            let viewer = Viewer::at(&station, person.as_ref(), "rtsp", &s.name, Some(peer))
                .with_origin(s.viewing.origin());
            s._counted = Some(ViewerGuard::new(&station, viewer));
        }
        let mut info = Vec::new();
        for (t, control) in [
            (&s.video, sdp::VIDEO_CONTROL),
            (&s.audio, sdp::AUDIO_CONTROL),
        ] {
            if let Some(t) = t {
                info.push(format!(
                    "url=rtsp://{local}/{}/{control};seq={}",
                    s.name, t.sender.sequence
                ));
            }
        }
        let id = s.id.clone();
        Ok(Reply::ok()
            .header("Session", &id)
            .header("Range", "npt=now-")
            .header("RTP-Info", &info.join(",")))
    }

    fn pause(&mut self, req: &Req) -> Result<Reply, Reply> {
        let s = self.session_for(req)?;
        s.readers = None;
        s._counted = None;
        let id = s.id.clone();
        Ok(Reply::ok().header("Session", &id))
    }

    fn teardown(&mut self, req: &Req) -> Result<Reply, Reply> {
        self.session_for(req)?;
        self.session = None;
        Ok(Reply::ok())
    }

    fn keepalive(&mut self, req: &Req) -> Result<Reply, Reply> {
        if req.session.is_some() {
            self.session_for(req)?;
        }
        Ok(Reply::ok())
    }

    /// Packetizes one frame and sends it on its track's transport.
    async fn send(
        &mut self,
        stream: &mut TcpStream,
        video: bool,
        o: ReadObject,
    ) -> Result<(), String> {
        let metrics = self.station.metrics.clone();
        let Some(s) = self.session.as_mut() else {
            return Ok(());
        };
        if let Some(v) = s.readers.as_mut().and_then(|r| r.video.as_mut()) {
            if video {
                metrics.viewer_groups_dropped.inc_by(v.take_dropped());
            }
        }
        let Some(t) = (if video {
            s.video.as_mut()
        } else {
            s.audio.as_mut()
        }) else {
            return Ok(());
        };
        let (payloads, ticks) = if video {
            (
                rtp::packetize_h264(&o.object.payload, MAX_PAYLOAD),
                o.object.capture_us * 9 / 100,
            )
        } else {
            (
                vec![o.object.payload.to_vec()],
                o.object.capture_us * 48 / 1000,
            )
        };
        let ts = t.base.wrapping_add(ticks as u32);
        let packets = t.sender.packets(payloads, ts);
        let mut sent = 0u64;
        match &t.out {
            Out::Interleaved(ch) => {
                let mut framed = Vec::with_capacity(packets.iter().map(|p| p.len() + 4).sum());
                for p in &packets {
                    framed.push(b'$');
                    framed.push(*ch);
                    framed.extend_from_slice(&(p.len() as u16).to_be_bytes());
                    framed.extend_from_slice(p);
                }
                write_all(stream, &framed, self.limits.write_stall).await?;
                sent = framed.len() as u64;
            }
            Out::Udp { rtp, to, .. } => {
                for p in &packets {
                    // A full socket buffer or an unreachable port loses this packet only.
                    if rtp.send_to(p, *to).await.is_ok() {
                        sent += p.len() as u64;
                    }
                }
            }
        }
        metrics.bytes_sent.inc_by(sent);
        Ok(())
    }
}

/// A response under construction.
#[derive(Debug)]
struct Reply {
    code: u16,
    reason: &'static str,
    headers: Vec<(String, String)>,
    body: Option<(String, String)>,
}

impl Reply {
    fn ok() -> Self {
        Self::status(200, "OK")
    }

    fn status(code: u16, reason: &'static str) -> Self {
        Self {
            code,
            reason,
            headers: Vec::new(),
            body: None,
        }
    }

    fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    fn body(mut self, content_type: &str, body: impl Into<String>) -> Self {
        self.body = Some((content_type.into(), body.into()));
        self
    }

    fn render(&self, cseq: &str) -> String {
        let mut s = format!(
            "RTSP/1.0 {} {}\r\nCSeq: {cseq}\r\nServer: cambox/{}\r\n",
            self.code,
            self.reason,
            env!("CARGO_PKG_VERSION")
        );
        for (k, v) in &self.headers {
            s.push_str(&format!("{k}: {v}\r\n"));
        }
        match &self.body {
            Some((ct, b)) => s.push_str(&format!(
                "Content-Type: {ct}\r\nContent-Length: {}\r\n\r\n{b}",
                b.len()
            )),
            None => s.push_str("Content-Length: 0\r\n\r\n"),
        }
        s
    }
}

fn not_a_stream() -> Reply {
    Reply::status(404, "Not Found").body(
        "text/plain",
        "use rtsp://<box>:8554/<stream> or <stream>@<origin>",
    )
}

fn session_not_found() -> Reply {
    Reply::status(454, "Session Not Found").body("text/plain", "no such session on this connection")
}

async fn write_all(stream: &mut TcpStream, data: &[u8], stall: Duration) -> Result<(), String> {
    match tokio::time::timeout(stall, stream.write_all(data)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("write: {e}")),
        Err(_) => Err(format!("took no data for {stall:?}")),
    }
}

/// An even RTP port and the odd RTCP port above it, as RTSP clients expect.
async fn bind_pair(ip: std::net::IpAddr) -> std::io::Result<(UdpSocket, UdpSocket)> {
    let mut last = None;
    for _ in 0..32 {
        let rtp = UdpSocket::bind(SocketAddr::new(ip, 0)).await?;
        let port = rtp.local_addr()?.port();
        if port % 2 != 0 || port == u16::MAX {
            continue;
        }
        match UdpSocket::bind(SocketAddr::new(ip, port + 1)).await {
            Ok(rtcp) => return Ok((rtp, rtcp)),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no free even/odd UDP port pair")))
}

fn random_u32() -> u32 {
    let mut b = [0u8; 4];
    let _ = getrandom::fill(&mut b);
    u32::from_le_bytes(b)
}
