//! Single sign-on with the company's OpenID Connect provider: the authorization code flow
//! with PKCE (RFC 7636), as a confidential or a public client.
//!
//! The box sends the browser to the provider with a random `state`, `nonce` and PKCE
//! challenge, takes the code back at `/auth/callback`, exchanges it with the verifier, and
//! checks the ID token itself: its signature with the provider's published keys (RS256 or
//! ES256, by ring), issuer, audience, expiry and nonce. The person's name and groups come
//! from the token's claims.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use base64ct::{Base64UrlUnpadded, Encoding};
use serde::Deserialize;

use super::accounts::Role;
use super::sessions::{base64url, Person};
use crate::client::ApiClient;

/// How the box reaches the provider.
#[derive(Debug, Clone)]
pub struct OidcSettings {
    /// The issuer URL (its `/.well-known/openid-configuration` is read).
    pub issuer: String,
    pub client_id: String,
    /// For a confidential client (`client_secret_post`); none for a public one.
    pub client_secret: Option<String>,
    /// The claim that lists a person's groups.
    pub groups_claim: String,
    /// Members of this group are operators; everyone else who logs in is a viewer.
    pub operators_group: Option<String>,
}

/// A login on its way through the provider.
#[derive(Debug)]
struct Pending {
    verifier: String,
    nonce: String,
    redirect_uri: String,
    started: Instant,
}

/// Logins that may be under way at once, and how long one may take: a person at the
/// provider's login form is quick; a page that starts logins and never ends them is not,
/// and must not fill the box.
const MAX_PENDING: usize = 256;
const PENDING_FOR: Duration = Duration::from_secs(600);
/// Clock difference allowed between the provider and the box.
const LEEWAY: u64 = 120;

#[derive(Debug, Clone, Deserialize)]
struct Metadata {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
}

#[derive(Debug, Clone, Deserialize)]
struct Jwk {
    kty: String,
    kid: Option<String>,
    n: Option<String>,
    e: Option<String>,
    crv: Option<String>,
    x: Option<String>,
    y: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
struct Jwks {
    keys: Vec<Jwk>,
}

#[derive(Debug)]
pub struct Oidc {
    settings: OidcSettings,
    client: ApiClient,
    metadata: tokio::sync::Mutex<Option<Metadata>>,
    keys: tokio::sync::Mutex<Option<Jwks>>,
    pending: Mutex<HashMap<String, Pending>>,
}

impl Oidc {
    pub fn new(settings: OidcSettings, client: ApiClient) -> Oidc {
        Oidc {
            settings,
            client,
            metadata: tokio::sync::Mutex::new(None),
            keys: tokio::sync::Mutex::new(None),
            pending: Mutex::new(HashMap::new()),
        }
    }

    pub fn issuer(&self) -> &str {
        &self.settings.issuer
    }

    /// Where to send the browser to log in; `redirect_uri` is this box's callback as the
    /// browser reaches it.
    pub async fn begin(&self, redirect_uri: &str) -> Result<String, String> {
        let meta = self.metadata().await?;
        let (state, nonce, verifier) = (random()?, random()?, random()?);
        let challenge =
            base64url(ring::digest::digest(&ring::digest::SHA256, verifier.as_bytes()).as_ref());
        {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            pending.retain(|_, p| now.duration_since(p.started) < PENDING_FOR);
            if pending.len() >= MAX_PENDING {
                return Err("too many logins under way; try again in a few minutes".into());
            }
            pending.insert(
                state.clone(),
                Pending {
                    verifier,
                    nonce: nonce.clone(),
                    redirect_uri: redirect_uri.to_owned(),
                    started: now,
                },
            );
        }
        let query = serde_urlencoded::to_string([
            ("response_type", "code"),
            ("client_id", self.settings.client_id.as_str()),
            ("redirect_uri", redirect_uri),
            ("scope", "openid profile groups"),
            ("state", state.as_str()),
            ("nonce", nonce.as_str()),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
        ])
        .map_err(|e| e.to_string())?;
        let sep = if meta.authorization_endpoint.contains('?') {
            '&'
        } else {
            '?'
        };
        Ok(format!("{}{sep}{query}", meta.authorization_endpoint))
    }

    /// The person the provider logged in, from the code it sent back with `state`.
    pub async fn finish(&self, state: &str, code: &str) -> Result<Person, String> {
        let pending = self
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(state)
            .filter(|p| p.started.elapsed() < PENDING_FOR)
            .ok_or("this login is unknown or too old; start again")?;
        let meta = self.metadata().await?;
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", pending.redirect_uri.as_str()),
            ("client_id", self.settings.client_id.as_str()),
            ("code_verifier", pending.verifier.as_str()),
        ];
        if let Some(secret) = &self.settings.client_secret {
            form.push(("client_secret", secret.as_str()));
        }
        let body = serde_urlencoded::to_string(&form).map_err(|e| e.to_string())?;
        let (status, answer) = self
            .client
            .post_form(&meta.token_endpoint, body)
            .await
            .map_err(|e| format!("the provider's token endpoint: {e}"))?;
        if status != 200 {
            return Err(format!(
                "the provider refused the code ({status}): {}",
                String::from_utf8_lossy(&answer)
            ));
        }
        #[derive(Deserialize)]
        struct Tokens {
            id_token: String,
        }
        let tokens: Tokens = serde_json::from_slice(&answer)
            .map_err(|e| format!("the provider's answer has no ID token: {e}"))?;
        let claims = self.verify(&tokens.id_token, &meta).await?;
        self.person(&claims, &pending.nonce, &meta)
    }

    fn person(
        &self,
        claims: &serde_json::Value,
        nonce: &str,
        meta: &Metadata,
    ) -> Result<Person, String> {
        let now = wall_secs();
        if claims["iss"] != meta.issuer.as_str() {
            return Err(format!(
                "the ID token is from issuer {}, not {}",
                claims["iss"], meta.issuer
            ));
        }
        let aud_ok = match &claims["aud"] {
            serde_json::Value::String(a) => a == &self.settings.client_id,
            serde_json::Value::Array(a) => a.iter().any(|x| x == self.settings.client_id.as_str()),
            _ => false,
        };
        if !aud_ok {
            return Err("the ID token is not for this box's client id".into());
        }
        let exp = claims["exp"].as_u64().ok_or("the ID token has no expiry")?;
        if exp + LEEWAY < now {
            return Err("the ID token has expired (is the box's clock right?)".into());
        }
        if claims["nonce"] != nonce {
            return Err("the ID token's nonce is not this login's".into());
        }
        let name = ["name", "preferred_username", "email", "sub"]
            .iter()
            .find_map(|k| claims[*k].as_str().filter(|s| !s.is_empty()))
            .ok_or("the ID token names nobody")?
            .to_owned();
        let groups: Vec<String> = claims[self.settings.groups_claim.as_str()]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|g| g.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let role = match &self.settings.operators_group {
            Some(g) if groups.contains(g) => Role::Operator,
            _ => Role::Viewer,
        };
        Ok(Person {
            name,
            role,
            groups,
            via: "sso",
        })
    }

    /// The claims of an ID token whose signature one of the provider's keys made.
    async fn verify(&self, jwt: &str, meta: &Metadata) -> Result<serde_json::Value, String> {
        let mut parts = jwt.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err("the ID token is not a signed JWT".into());
        };
        let decode = |part: &str, what: &str| {
            Base64UrlUnpadded::decode_vec(part)
                .map_err(|_| format!("the ID token's {what} is not base64url"))
        };
        let header: serde_json::Value = serde_json::from_slice(&decode(h, "header")?)
            .map_err(|_| "the ID token's header is not JSON")?;
        let claims: serde_json::Value = serde_json::from_slice(&decode(p, "claims")?)
            .map_err(|_| "the ID token's claims are not JSON")?;
        let signature = decode(s, "signature")?;
        let signed = &jwt.as_bytes()[..h.len() + 1 + p.len()];
        let alg = header["alg"].as_str().unwrap_or("");
        let kid = header["kid"].as_str();
        for refresh in [false, true] {
            let keys = self.keys(meta, refresh).await?;
            let candidates = keys
                .keys
                .iter()
                .filter(|k| kid.is_none() || k.kid.as_deref() == kid);
            for key in candidates {
                if check_signature(alg, key, signed, &signature)? {
                    return Ok(claims);
                }
            }
        }
        Err(format!(
            "no key of the provider verifies the ID token (alg {alg})"
        ))
    }

    async fn metadata(&self) -> Result<Metadata, String> {
        let mut slot = self.metadata.lock().await;
        if let Some(m) = slot.as_ref() {
            return Ok(m.clone());
        }
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.settings.issuer.trim_end_matches('/')
        );
        let meta: Metadata = self.fetch_json(&url).await?;
        if meta.issuer.trim_end_matches('/') != self.settings.issuer.trim_end_matches('/') {
            return Err(format!(
                "{url} names issuer {}, not {}",
                meta.issuer, self.settings.issuer
            ));
        }
        *slot = Some(meta.clone());
        Ok(meta)
    }

    async fn keys(&self, meta: &Metadata, refresh: bool) -> Result<Jwks, String> {
        let mut slot = self.keys.lock().await;
        if let (false, Some(k)) = (refresh, slot.as_ref()) {
            return Ok(k.clone());
        }
        let keys: Jwks = self.fetch_json(&meta.jwks_uri).await?;
        *slot = Some(keys.clone());
        Ok(keys)
    }

    async fn fetch_json<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, String> {
        match self.client.get_whole(url).await {
            Ok((200, body)) => serde_json::from_slice(&body)
                .map_err(|e| format!("{url}: not what was expected: {e}")),
            Ok((status, _)) => Err(format!("{url} answered {status}")),
            Err(e) => Err(format!("the OpenID provider: {e}")),
        }
    }
}

/// Whether `key` made `signature` over `signed` with `alg`. A key of another type or
/// curve is not an error: the next one may fit.
fn check_signature(alg: &str, key: &Jwk, signed: &[u8], signature: &[u8]) -> Result<bool, String> {
    use ring::signature as sig;
    let b64 = |v: &Option<String>| {
        v.as_deref()
            .and_then(|s| Base64UrlUnpadded::decode_vec(s).ok())
    };
    match (alg, key.kty.as_str()) {
        ("RS256", "RSA") => {
            let (Some(n), Some(e)) = (b64(&key.n), b64(&key.e)) else {
                return Ok(false);
            };
            let public = sig::RsaPublicKeyComponents { n, e };
            Ok(public
                .verify(&sig::RSA_PKCS1_2048_8192_SHA256, signed, signature)
                .is_ok())
        }
        ("ES256", "EC") if key.crv.as_deref() == Some("P-256") => {
            let (Some(x), Some(y)) = (b64(&key.x), b64(&key.y)) else {
                return Ok(false);
            };
            let mut point = vec![4u8];
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            Ok(
                sig::UnparsedPublicKey::new(&sig::ECDSA_P256_SHA256_FIXED, point)
                    .verify(signed, signature)
                    .is_ok(),
            )
        }
        ("RS256" | "ES256", _) => Ok(false),
        _ => Err(format!(
            "the ID token is signed with {alg:?}; cambox takes RS256 or ES256"
        )),
    }
}

fn random() -> Result<String, String> {
    let mut raw = [0u8; 32];
    getrandom::fill(&mut raw).map_err(|e| format!("the OS random source failed: {e}"))?;
    Ok(base64url(&raw))
}

/// Seconds since the Unix epoch, by the wall clock.
pub(crate) fn wall_secs() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
