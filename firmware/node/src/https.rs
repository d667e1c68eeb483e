//! The box's web face over TLS, with the certificate the company CA gave it at enrolment.
//!
//! With a certificate the box serves its page, API and WHEP over HTTPS, and its plain HTTP
//! port redirects there (308, so a POST stays a POST), except what needs no secrecy and
//! is read by programs that may not speak TLS: `/metrics`, the CA-signed revocation list
//! and a served registry. Session cookies set over TLS are `Secure`, so a browser never
//! sends them in the clear.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::http::ApiError;

/// A client has this long to finish its TLS handshake; the connection counts against its
/// address's bound meanwhile, so slow handshakes cost one address, not the box.
const HANDSHAKE: Duration = Duration::from_secs(10);

/// Marks a request that came over TLS (a request extension).
#[derive(Debug, Clone, Copy)]
pub struct OverTls;

/// The TLS server configuration for a certificate chain and its P-256 key, both PEM.
pub fn server_config(chain_pem: &str, key_pem: &str) -> Result<Arc<rustls::ServerConfig>, String> {
    let chain = cambox_trust::pem::certificates(chain_pem)?;
    let key = cambox_trust::pem::private_key(key_pem)?;
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(key.into());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("the HTTPS certificate and key do not go together: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A listener that hands on connections once their TLS handshake is done. Handshakes run
/// in their own tasks, so one slow client never holds up the next.
pub struct TlsListener<Io> {
    ready: mpsc::Receiver<(TlsStream<Io>, SocketAddr)>,
    local: SocketAddr,
}

impl<Io> std::fmt::Debug for TlsListener<Io> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsListener")
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

impl<Io> TlsListener<Io>
where
    Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    pub fn new<L>(mut inner: L, config: Arc<rustls::ServerConfig>) -> std::io::Result<Self>
    where
        L: axum::serve::Listener<Io = Io, Addr = SocketAddr>,
    {
        let local = inner.local_addr()?;
        let (tx, ready) = mpsc::channel(64);
        let acceptor = TlsAcceptor::from(config);
        tokio::spawn(async move {
            while !tx.is_closed() {
                let (io, addr) = inner.accept().await;
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE, acceptor.accept(io)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, addr)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%addr, "TLS handshake failed: {e}"),
                        Err(_) => tracing::debug!(%addr, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(Self { ready, local })
    }
}

impl<Io> axum::serve::Listener for TlsListener<Io>
where
    Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    type Io = TlsStream<Io>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, SocketAddr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}

/// Marks requests as over TLS and makes every cookie the response sets `Secure`.
pub async fn over_tls(mut req: Request, next: Next) -> Response {
    req.extensions_mut().insert(OverTls);
    let mut resp = next.run(req).await;
    let cookies: Vec<HeaderValue> = resp
        .headers_mut()
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| HeaderValue::from_str(&format!("{v}; Secure")).ok())
        .collect();
    if !cookies.is_empty() {
        resp.headers_mut().remove(header::SET_COOKIE);
        for c in cookies {
            resp.headers_mut().append(header::SET_COOKIE, c);
        }
    }
    resp
}

/// The same place on the box's HTTPS port: `https://<host as asked>:<port><path>`.
pub fn redirect_to(https_port: u16, host: Option<&str>, uri: &Uri) -> Result<Response, ApiError> {
    let host = host
        .filter(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_graphic()))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "this box serves HTTPS; ask with a Host header to be sent there",
            )
        })?;
    let name = match host.strip_prefix('[') {
        Some(v6) => format!("[{}]", v6.split(']').next().unwrap_or_default()),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h).to_owned(),
    };
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let to = format!("https://{name}:{https_port}{path}");
    let location = HeaderValue::from_str(&to)
        .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "an unusable Host header"))?;
    Ok((
        StatusCode::PERMANENT_REDIRECT,
        [(header::LOCATION, location)],
        format!("this box serves HTTPS: {to}\n"),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn location(host: &str, uri: &str) -> String {
        let r = redirect_to(8443, Some(host), &uri.parse().unwrap()).unwrap();
        assert_eq!(r.status(), StatusCode::PERMANENT_REDIRECT);
        r.headers()[header::LOCATION].to_str().unwrap().to_owned()
    }

    #[test]
    fn a_redirect_keeps_the_host_path_and_query_and_changes_the_port() {
        assert_eq!(
            location("box.local:8080", "/api/v1/streams?x=1"),
            "https://box.local:8443/api/v1/streams?x=1"
        );
        assert_eq!(location("10.0.0.5", "/"), "https://10.0.0.5:8443/");
        assert_eq!(
            location("[fd00::5]:8080", "/whep/cam"),
            "https://[fd00::5]:8443/whep/cam"
        );
    }

    #[test]
    fn no_or_a_strange_host_is_a_clear_400() {
        let uri: Uri = "/".parse().unwrap();
        assert_eq!(
            redirect_to(8443, None, &uri).unwrap_err().0,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            redirect_to(8443, Some("a b"), &uri).unwrap_err().0,
            StatusCode::BAD_REQUEST
        );
    }
}
