//! Local accounts, for a site without single sign-on: a name, an argon2id hash of the
//! password (a PHC string, as `argon2` and most password tools write it), a role and
//! groups. `cambox user add` writes them to `users.toml` on the data partition; the box
//! reads them at start. No password is ever stored or logged in the clear.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use serde::{Deserialize, Serialize};

/// What a person may do. Viewers watch what they are allowed to; operators also go live,
/// press the button, command nodes and chat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    #[default]
    Viewer,
    Operator,
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "operator" => Ok(Role::Operator),
            other => Err(format!("'{other}' is not a role (viewer or operator)")),
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Account {
    pub name: String,
    /// argon2id PHC string (`$argon2id$v=19$m=...`).
    pub hash: String,
    #[serde(default)]
    pub role: Role,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// MD5(name:cambox:password), hex: what RTSP's Digest authentication needs (absent:
    /// this account cannot watch over RTSP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtsp: Option<String>,
}

/// The accounts of `users.toml` (`[[user]]` tables).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Accounts {
    #[serde(default, rename = "user")]
    pub users: Vec<Account>,
}

/// Shortest password `cambox user add` takes.
pub const MIN_PASSWORD: usize = 8;

impl Accounts {
    /// Checks every hash is an argon2 PHC string, so a hand-edited file with a password
    /// in the clear is refused at start, not silently never matching.
    pub fn check(&self) -> Result<(), String> {
        let mut seen = std::collections::HashSet::new();
        for a in &self.users {
            if a.name.trim().is_empty() {
                return Err("an account without a name".into());
            }
            if !seen.insert(a.name.as_str()) {
                return Err(format!("account {:?} is there twice", a.name));
            }
            let parsed = PasswordHash::new(&a.hash).map_err(|e| {
                format!(
                    "account {:?}: hash is not a PHC string ({e}); set it with cambox user add",
                    a.name
                )
            })?;
            if !parsed.algorithm.as_str().starts_with("argon2") {
                return Err(format!("account {:?}: hash is not argon2", a.name));
            }
        }
        Ok(())
    }

    /// Adds or replaces `name`'s account. `salt` must be random (16 bytes from the OS).
    pub fn set(
        &mut self,
        name: &str,
        password: &str,
        role: Role,
        groups: Vec<String>,
        salt: [u8; 16],
    ) -> Result<(), String> {
        if name.trim().is_empty() || name.chars().count() > 64 {
            return Err("a name of 1 to 64 characters".into());
        }
        if password.chars().count() < MIN_PASSWORD {
            return Err(format!("a password of at least {MIN_PASSWORD} characters"));
        }
        let account = Account {
            name: name.to_owned(),
            hash: hash(password, salt)?,
            role,
            groups,
            rtsp: Some(super::digest::ha1(name, password)),
        };
        match self.users.iter_mut().find(|a| a.name == name) {
            Some(a) => *a = account,
            None => self.users.push(account),
        }
        Ok(())
    }

    pub fn remove(&mut self, name: &str) -> bool {
        let before = self.users.len();
        self.users.retain(|a| a.name != name);
        self.users.len() != before
    }

    /// The account called `name`.
    pub fn get(&self, name: &str) -> Option<&Account> {
        self.users.iter().find(|a| a.name == name)
    }

    /// The account if `password` is its password. Costs one argon2 run whether or not the
    /// name exists, so the time taken does not tell which names do.
    pub fn verify(&self, name: &str, password: &str) -> Option<&Account> {
        let account = self.users.iter().find(|a| a.name == name);
        let phc = account.map_or(DUMMY_HASH, |a| a.hash.as_str());
        let ok = PasswordHash::new(phc)
            .map(|h| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &h)
                    .is_ok()
            })
            .unwrap_or(false);
        account.filter(|_| ok)
    }
}

/// An argon2id hash (the crate's defaults: 19 MiB, 2 passes) of a password nobody has,
/// checked against when the name is unknown.
const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$Y2FtYm94LWR1bW15LXNhbHQ$NUzXqH8ybSzc7pUAlryYHsbFY2yQ2WF6B6czt5ZyB5k";

/// The argon2id hash of `password` with `salt`, as a PHC string.
pub fn hash(password: &str, salt: [u8; 16]) -> Result<String, String> {
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_matches_its_hash_and_nothing_else() {
        let mut a = Accounts::default();
        a.set(
            "alice",
            "correct horse",
            Role::Operator,
            vec!["ops".into()],
            [1; 16],
        )
        .unwrap();
        assert!(a.check().is_ok());
        assert!(a.users[0].hash.starts_with("$argon2id$"));
        assert!(!a.users[0].hash.contains("correct horse"));
        assert_eq!(
            a.verify("alice", "correct horse").map(|x| x.role),
            Some(Role::Operator)
        );
        assert!(a.verify("alice", "wrong horse").is_none());
        assert!(a.verify("bob", "correct horse").is_none());
        assert!(a
            .set("bob", "short", Role::Viewer, vec![], [2; 16])
            .is_err());
    }

    #[test]
    fn a_clear_text_password_in_the_file_is_refused() {
        let a = Accounts {
            users: vec![Account {
                name: "eve".into(),
                hash: "hunter22".into(),
                role: Role::Viewer,
                groups: vec![],
                rtsp: None,
            }],
        };
        assert!(a.check().unwrap_err().contains("not a PHC string"));
    }

    #[test]
    fn the_dummy_hash_is_a_valid_argon2_hash() {
        assert!(PasswordHash::new(DUMMY_HASH).is_ok());
    }
}
