//! Sessions of logged-in people: a random token in an HttpOnly cookie (or, for programs,
//! as a bearer token), held in memory. A restart logs everybody out, which a box that
//! restarts rarely can afford; nothing about a session is written to the card.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::accounts::Role;

/// A logged-in person, as every protocol checks them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Person {
    pub name: String,
    pub role: Role,
    pub groups: Vec<String>,
    /// "local" (an account of this box) or "sso" (the company's OpenID provider).
    pub via: &'static str,
}

#[derive(Debug)]
struct Session {
    person: Person,
    expires: Instant,
}

/// Sessions by the SHA-256 of their token (the token itself is not kept).
#[derive(Debug)]
pub struct Sessions {
    map: Mutex<HashMap<[u8; 32], Session>>,
    max: usize,
    ttl: Duration,
}

/// How long a login lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Sessions a box holds; past it, the oldest-expiring one goes.
pub const MAX_SESSIONS: usize = 1024;

impl Default for Sessions {
    fn default() -> Self {
        Sessions::new(MAX_SESSIONS, SESSION_TTL)
    }
}

impl Sessions {
    pub fn new(max: usize, ttl: Duration) -> Sessions {
        Sessions {
            map: Mutex::new(HashMap::new()),
            max: max.max(1),
            ttl,
        }
    }

    /// A new session for `person`; its token (43 base64url characters).
    pub fn create(&self, person: Person, now: Instant) -> Result<String, String> {
        let mut raw = [0u8; 32];
        getrandom::fill(&mut raw).map_err(|e| format!("the OS random source failed: {e}"))?;
        // A prefix: a token never starts with '-' (which `--token` would take for an
        // option), and secret scanners can recognise one pasted where it should not be.
        let token = format!("cambox_{}", base64url(&raw));
        let mut map = self.lock();
        map.retain(|_, s| s.expires > now);
        if map.len() >= self.max {
            if let Some(oldest) = map.iter().min_by_key(|(_, s)| s.expires).map(|(k, _)| *k) {
                map.remove(&oldest);
            }
        }
        map.insert(
            digest(&token),
            Session {
                person,
                expires: now + self.ttl,
            },
        );
        Ok(token)
    }

    /// The person of a live session.
    pub fn get(&self, token: &str, now: Instant) -> Option<Person> {
        let key = digest(token);
        let mut map = self.lock();
        match map.get(&key) {
            Some(s) if s.expires > now => Some(s.person.clone()),
            Some(_) => {
                map.remove(&key);
                None
            }
            None => None,
        }
    }

    pub fn end(&self, token: &str) {
        self.lock().remove(&digest(token));
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Session>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn digest(token: &str) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    d.as_ref().try_into().expect("SHA-256 is 32 bytes")
}

pub fn base64url(bytes: &[u8]) -> String {
    use base64ct::Encoding;
    base64ct::Base64UrlUnpadded::encode_string(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> Person {
        Person {
            name: "alice".into(),
            role: Role::Viewer,
            groups: vec![],
            via: "local",
        }
    }

    #[test]
    fn a_session_lives_until_it_expires_or_ends_and_the_oldest_goes_when_full() {
        let t = Instant::now();
        let s = Sessions::new(2, Duration::from_secs(10));
        let a = s.create(alice(), t).unwrap();
        assert!(a.starts_with("cambox_") && a.len() == 50, "{a}");
        assert_eq!(s.get(&a, t + Duration::from_secs(9)), Some(alice()));
        assert_eq!(s.get(&a, t + Duration::from_secs(10)), None);
        let b = s.create(alice(), t).unwrap();
        let c = s.create(alice(), t + Duration::from_secs(1)).unwrap();
        let d = s.create(alice(), t + Duration::from_secs(2)).unwrap();
        assert_eq!(s.len(), 2);
        assert!(s.get(&b, t).is_none(), "the oldest went");
        assert!(s.get(&c, t).is_some() && s.get(&d, t).is_some());
        s.end(&c);
        assert!(s.get(&c, t).is_none());
        assert!(s.get("made-up", t).is_none());
    }
}
