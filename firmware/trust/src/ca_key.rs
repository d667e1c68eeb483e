//! The company CA's public key and signatures: ECDSA P-256.
//!
//! Not Ed25519 like the node keys, because the same CA signs each box's HTTPS
//! certificate and browsers verify ECDSA P-256 chains but not Ed25519 ones. Signatures of
//! tokens and revocation lists are the fixed 64-byte form (r ‖ s).

use cambox_mesh::hex::{from_hex, to_hex};
use ring::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_FIXED};

/// An uncompressed P-256 point: 0x04, x, y.
pub const LEN: usize = 65;

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CaKey(pub [u8; LEN]);

impl CaKey {
    /// Whether `signature` is this key's over `msg`.
    pub fn verify(&self, msg: &[u8], signature: &[u8; 64]) -> bool {
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &self.0[..])
            .verify(msg, signature)
            .is_ok()
    }

    pub fn to_hex(&self) -> String {
        to_hex(&self.0)
    }

    /// A key from [`Self::to_hex`]'s 130 hex digits.
    pub fn from_hex(hex: &str) -> Option<CaKey> {
        from_hex::<LEN>(hex).filter(|k| k[0] == 0x04).map(CaKey)
    }
}

impl std::fmt::Debug for CaKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CaKey({}…)", &self.to_hex()[2..18])
    }
}
