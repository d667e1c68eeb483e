//! Talking to boxes and registries over HTTP and HTTPS: live streams for `cambox record`
//! and `cambox strip`, JSON for the other subcommands and for enrolment.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("'{0}' is not a valid http:// or https:// URL")]
    BadUrl(String),
    #[error("{url}: cannot connect: {reason}")]
    Connect { url: String, reason: String },
    #[error("{url}: the box answered {status}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },
    #[error("cannot use the CA file {path}: {reason}")]
    Ca { path: String, reason: String },
    #[error("{url}: reading the stream failed: {reason}")]
    Read { url: String, reason: String },
}

/// An open HTTP response body read chunk by chunk.
#[derive(Debug)]
pub struct BodyStream {
    url: String,
    body: Incoming,
}

impl BodyStream {
    /// Next chunk of the body; `None` at its end.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, ClientError> {
        loop {
            match self.body.frame().await {
                None => return Ok(None),
                Some(Err(e)) => {
                    return Err(ClientError::Read {
                        url: self.url.clone(),
                        reason: e.to_string(),
                    })
                }
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        return Ok(Some(data));
                    }
                }
            }
        }
    }
}

/// A client for registries over `http://` and `https://`. HTTPS trusts Mozilla's roots
/// (built in, so a box needs no CA bundle) and, if given, a company's own CA.
#[derive(Clone)]
pub struct ApiClient {
    client: Transport,
}

/// Straight out, or through an HTTP proxy.
#[derive(Clone)]
enum Transport {
    Direct(
        Client<
            hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
            Full<Bytes>,
        >,
    ),
    Proxied(Client<hyper_rustls::HttpsConnector<ProxyConnector>, Full<Bytes>>),
}

/// Opens every connection as a tunnel through an HTTP proxy (`CONNECT host:port`), so
/// TLS to an https:// registry runs end to end through it.
#[derive(Clone, Debug)]
struct ProxyConnector {
    proxy: String,
}

impl tower_service::Service<hyper::Uri> for ProxyConnector {
    type Response = hyper_util::rt::TokioIo<tokio::net::TcpStream>;
    type Error = std::io::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: hyper::Uri) -> Self::Future {
        let proxy = self.proxy.clone();
        Box::pin(async move {
            let host = uri
                .host()
                .ok_or_else(|| std::io::Error::other(format!("{uri}: no host")))?;
            let port = uri.port_u16().unwrap_or(match uri.scheme_str() {
                Some("https") => 443,
                _ => 80,
            });
            let target = format!("{host}:{port}");
            crate::mesh::tcp::through_proxy(&proxy, &target)
                .await
                .map(hyper_util::rt::TokioIo::new)
        })
    }
}

impl std::fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiClient")
    }
}

impl ApiClient {
    /// A client for the command line: it also trusts the PEM certificates in
    /// `CAMBOX_CA_FILE` (the company CA's `ca.crt`, for boxes that serve HTTPS).
    pub fn from_env() -> Result<Self, ClientError> {
        let ca = std::env::var_os("CAMBOX_CA_FILE").map(std::path::PathBuf::from);
        Self::new(ca.as_deref())
    }

    /// `ca_file`: PEM certificates to trust besides the built-in roots.
    pub fn new(ca_file: Option<&std::path::Path>) -> Result<Self, ClientError> {
        Self::through(ca_file, None)
    }

    /// As [`Self::new`], every connection through the HTTP proxy at `proxy` (HOST:PORT)
    /// if given.
    pub fn through(
        ca_file: Option<&std::path::Path>,
        proxy: Option<&str>,
    ) -> Result<Self, ClientError> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::CertificateDer;
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if let Some(path) = ca_file {
            let bad = |e: String| ClientError::Ca {
                path: path.display().to_string(),
                reason: e,
            };
            let mut n = 0;
            for cert in CertificateDer::pem_file_iter(path).map_err(|e| bad(e.to_string()))? {
                roots
                    .add(cert.map_err(|e| bad(e.to_string()))?)
                    .map_err(|e| bad(e.to_string()))?;
                n += 1;
            }
            if n == 0 {
                return Err(bad("no PEM certificate in it".into()));
            }
        }
        let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Ca {
            path: String::new(),
            reason: e.to_string(),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let builder = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1();
        let client = match proxy {
            None => Transport::Direct(Client::builder(TokioExecutor::new()).build(builder.build())),
            Some(proxy) => Transport::Proxied(Client::builder(TokioExecutor::new()).build(
                builder.wrap_connector(ProxyConnector {
                    proxy: proxy.to_owned(),
                }),
            )),
        };
        Ok(Self { client })
    }

    /// POSTs a JSON body (with a bearer token, if any) and returns the status and body
    /// of the answer, whatever its status: the caller reads the JSON error itself.
    pub async fn post_json(
        &self,
        url: &str,
        body: Vec<u8>,
        bearer: Option<&str>,
    ) -> Result<(u16, Bytes), ClientError> {
        self.post(url, body, "application/json", bearer).await
    }

    async fn post(
        &self,
        url: &str,
        body: Vec<u8>,
        content_type: &'static str,
        bearer: Option<&str>,
    ) -> Result<(u16, Bytes), ClientError> {
        self.send(hyper::Method::POST, url, Some((body, content_type)), bearer)
            .await
    }

    /// POSTs bytes (`application/octet-stream`); the answer as [`Self::post_json`] gives it.
    pub async fn post_bytes(
        &self,
        url: &str,
        body: Vec<u8>,
        bearer: Option<&str>,
    ) -> Result<(u16, Bytes), ClientError> {
        self.post(url, body, "application/octet-stream", bearer)
            .await
    }

    /// POSTs a form (`application/x-www-form-urlencoded`); the answer as
    /// [`Self::post_json`] gives it.
    pub async fn post_form(&self, url: &str, body: String) -> Result<(u16, Bytes), ClientError> {
        self.send(
            hyper::Method::POST,
            url,
            Some((body.into_bytes(), "application/x-www-form-urlencoded")),
            None,
        )
        .await
    }

    /// PUTs a text body; the answer as [`Self::post_json`] gives it.
    pub async fn put_text(&self, url: &str, body: Vec<u8>) -> Result<(u16, Bytes), ClientError> {
        self.send(hyper::Method::PUT, url, Some((body, "text/plain")), None)
            .await
    }

    pub async fn put_bytes(&self, url: &str, body: Vec<u8>) -> Result<(u16, Bytes), ClientError> {
        self.send(
            hyper::Method::PUT,
            url,
            Some((body, "application/octet-stream")),
            None,
        )
        .await
    }

    /// GETs `url` whole; the answer as [`Self::post_json`] gives it.
    pub async fn get_whole(&self, url: &str) -> Result<(u16, Bytes), ClientError> {
        self.send(hyper::Method::GET, url, None, None).await
    }

    async fn send(
        &self,
        method: hyper::Method,
        url: &str,
        body: Option<(Vec<u8>, &str)>,
        bearer: Option<&str>,
    ) -> Result<(u16, Bytes), ClientError> {
        let (url, resp) = self.request(method, url, body, bearer).await?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| ClientError::Read {
                url,
                reason: e.to_string(),
            })?
            .to_bytes();
        Ok((status, body))
    }

    /// GETs `url` and returns its body as a stream; a non-2xx answer is an error with the
    /// box's JSON message.
    pub async fn stream(&self, url: &str, bearer: Option<&str>) -> Result<BodyStream, ClientError> {
        let (url, resp) = self.request(hyper::Method::GET, url, None, bearer).await?;
        let status = resp.status();
        let mut stream = BodyStream {
            url: url.clone(),
            body: resp.into_body(),
        };
        if !status.is_success() {
            let mut body = Vec::new();
            while let Ok(Some(c)) = stream.chunk().await {
                body.extend_from_slice(&c);
                if body.len() > 4096 {
                    break;
                }
            }
            return Err(ClientError::Status {
                url,
                status: status.as_u16(),
                body: String::from_utf8_lossy(&body).into_owned(),
            });
        }
        Ok(stream)
    }

    /// Sends the request; a box that serves HTTPS redirects plain HTTP there, and that one
    /// redirect (http:// to https://) is followed. The URL answered, and the answer.
    async fn request(
        &self,
        method: hyper::Method,
        url: &str,
        body: Option<(Vec<u8>, &str)>,
        bearer: Option<&str>,
    ) -> Result<(String, hyper::Response<Incoming>), ClientError> {
        let mut url = url.to_owned();
        // Sent again after a redirect: shared, not copied.
        let body = body.map(|(b, content_type)| (Bytes::from(b), content_type));
        loop {
            let uri: hyper::Uri = url.parse().map_err(|_| ClientError::BadUrl(url.clone()))?;
            if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
                return Err(ClientError::BadUrl(url));
            }
            let mut req = hyper::Request::builder().method(method.clone()).uri(uri);
            if let Some((_, content_type)) = &body {
                req = req.header("content-type", *content_type);
            }
            if let Some(t) = bearer {
                req = req.header("authorization", format!("Bearer {t}"));
            }
            let bytes = body.as_ref().map(|(b, _)| b.clone()).unwrap_or_default();
            let req = req
                .body(Full::new(bytes))
                .map_err(|_| ClientError::BadUrl(url.clone()))?;
            let resp = match &self.client {
                Transport::Direct(c) => c.request(req).await,
                Transport::Proxied(c) => c.request(req).await,
            }
            .map_err(|e| ClientError::Connect {
                url: url.clone(),
                reason: format!("{e:?}"),
            })?;
            let upgrade = resp
                .headers()
                .get(hyper::header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .filter(|to| {
                    resp.status().is_redirection()
                        && url.starts_with("http://")
                        && to.starts_with("https://")
                });
            match upgrade {
                Some(to) => url = to.to_owned(),
                None => return Ok((url, resp)),
            }
        }
    }
}

/// GETs `url` and returns its body as a stream; a non-2xx answer is an error with the
/// box's JSON message.
pub async fn get(url: &str) -> Result<BodyStream, ClientError> {
    get_as(url, None).await
}

/// [`get`] with a session token (`Authorization: Bearer`), for a box where people log in.
/// An https:// box is trusted by the public roots and the PEM certificates in
/// `CAMBOX_CA_FILE` (the company CA's `ca.crt`).
pub async fn get_as(url: &str, bearer: Option<&str>) -> Result<BodyStream, ClientError> {
    ApiClient::from_env()?.stream(url, bearer).await
}
