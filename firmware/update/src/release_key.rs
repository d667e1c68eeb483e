//! The company's release key: ECDSA P-256, kept apart from the mesh CA. A box that trusts
//! the mesh CA does not thereby install whatever the CA's holder signs; whoever builds
//! releases holds this key, and the image carries its public half.

use cambox_mesh::hex::to_hex;
use cambox_trust::ca_key::CaKey;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};

/// The first word of a public key file, so a file of another kind is told apart.
const PUBLIC_TAG: &str = "cambox-release-key-v1";

/// The private release key.
pub struct ReleaseKey {
    pair: EcdsaKeyPair,
    pkcs8: Vec<u8>,
}

impl std::fmt::Debug for ReleaseKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ReleaseKey({})", self.public().id())
    }
}

impl ReleaseKey {
    /// A new key from the OS's random source.
    pub fn generate() -> Result<ReleaseKey, String> {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| "the OS gave no random numbers for a key".to_string())?;
        Self::from_pkcs8(pkcs8.as_ref().to_vec())
    }

    fn from_pkcs8(pkcs8: Vec<u8>) -> Result<ReleaseKey, String> {
        let pair = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            &pkcs8,
            &SystemRandom::new(),
        )
        .map_err(|e| format!("not a P-256 private key: {e}"))?;
        Ok(ReleaseKey { pair, pkcs8 })
    }

    /// A key from [`Self::to_pem`]'s text (PKCS#8, what `openssl pkey` reads too).
    pub fn from_pem(text: &str) -> Result<ReleaseKey, String> {
        Self::from_pkcs8(cambox_trust::pem::private_key(text)?)
    }

    pub fn to_pem(&self) -> String {
        cambox_trust::pem::encode_private_key(&self.pkcs8)
    }

    pub fn public(&self) -> ReleasePublic {
        let point: [u8; 65] = self
            .pair
            .public_key()
            .as_ref()
            .try_into()
            .expect("a P-256 public key is a 65-byte point");
        ReleasePublic(CaKey(point))
    }

    pub fn sign(&self, msg: &[u8]) -> Result<[u8; 64], String> {
        let sig = self
            .pair
            .sign(&SystemRandom::new(), msg)
            .map_err(|_| "signing failed (no random numbers)".to_string())?;
        sig.as_ref()
            .try_into()
            .map_err(|_| "a P-256 signature is 64 bytes".to_string())
    }
}

/// A release key's public half, as boxes keep it (`release.pub`: one line, the tag and
/// 130 hex digits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReleasePublic(pub CaKey);

impl ReleasePublic {
    pub fn verify(&self, msg: &[u8], signature: &[u8; 64]) -> bool {
        self.0.verify(msg, signature)
    }

    /// A short name for people: the first 8 bytes of the point's SHA-256, in hex.
    pub fn id(&self) -> String {
        let digest = ring::digest::digest(&ring::digest::SHA256, &self.0 .0);
        to_hex(&digest.as_ref()[..8])
    }

    pub fn to_text(&self) -> String {
        format!("{PUBLIC_TAG} {}\n", self.0.to_hex())
    }

    /// Every key in the file at `path` (as [`Self::parse_all`] reads it); errors name it.
    pub fn load(path: &std::path::Path) -> Result<Vec<ReleasePublic>, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the release keys {}: {e}", path.display()))?;
        Self::parse_all(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Every key in a file of [`Self::to_text`] lines (`#` starts a comment); a box may
    /// trust the old key and the new one while a company changes keys.
    pub fn parse_all(text: &str) -> Result<Vec<ReleasePublic>, String> {
        let keys: Vec<ReleasePublic> = text
            .lines()
            .map(|l| l.split('#').next().unwrap_or("").trim())
            .filter(|l| !l.is_empty())
            .map(|l| match l.split_once(' ') {
                Some((PUBLIC_TAG, hex)) => CaKey::from_hex(hex.trim())
                    .map(ReleasePublic)
                    .ok_or_else(|| format!("'{l}': not 130 hex digits of a P-256 point")),
                _ => Err(format!(
                    "'{l}' is not a release key line ({PUBLIC_TAG} <130 hex digits>; \
                     `cambox release init` writes release.pub)"
                )),
            })
            .collect::<Result<_, _>>()?;
        if keys.is_empty() {
            return Err("no release key in it".into());
        }
        Ok(keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_survives_its_files_and_signs_what_its_public_half_verifies() {
        let key = ReleaseKey::generate().unwrap();
        let again = ReleaseKey::from_pem(&key.to_pem()).unwrap();
        assert_eq!(again.public(), key.public());
        let sig = again.sign(b"bundle").unwrap();
        let public = ReleasePublic::parse_all(&key.public().to_text()).unwrap();
        assert_eq!(public, vec![key.public()]);
        assert!(public[0].verify(b"bundle", &sig));
        assert!(!public[0].verify(b"bundle!", &sig));
        let other = ReleaseKey::generate().unwrap();
        assert!(!other.public().verify(b"bundle", &sig));
        assert_eq!(key.public().id().len(), 16);
    }

    #[test]
    fn a_public_key_file_with_a_mistake_says_which_line() {
        let key = ReleaseKey::generate().unwrap().public();
        let two = format!("# old and new\n{}{}", key.to_text(), key.to_text());
        assert_eq!(ReleasePublic::parse_all(&two).unwrap().len(), 2);
        let e = ReleasePublic::parse_all("cambox-release-key-v1 04abc\n").unwrap_err();
        assert!(e.contains("not 130 hex digits"), "{e}");
        let e = ReleasePublic::parse_all("-----BEGIN PUBLIC KEY-----\n").unwrap_err();
        assert!(e.contains("is not a release key line"), "{e}");
        assert!(ReleasePublic::parse_all("# nothing\n").is_err());
    }
}
