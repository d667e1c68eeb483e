//! Registrations are signed by the node key, so nobody can announce or withdraw a node
//! they do not hold the key of, and a registry can be run on an open company network.

use cambox_mesh::hex::{from_hex, to_hex};
use cambox_mesh::identity::{self, Identity};
use cambox_mesh::NodeId;

use crate::model::{Registration, SignedRegistration};

const CONTEXT: &[u8] = b"cambox-registration-v1\n";

/// The bytes the signature covers: a context string, then the registration's canonical
/// JSON (serde's output for the struct: fields in declaration order, no spaces). Both
/// ends produce it from the parsed struct, so the client's own formatting never matters.
pub fn signed_bytes(r: &Registration) -> Vec<u8> {
    let mut out = CONTEXT.to_vec();
    // Serialising plain strings and numbers cannot fail.
    out.extend_from_slice(&serde_json::to_vec(r).unwrap_or_default());
    out
}

pub fn sign(identity: &Identity, registration: Registration) -> SignedRegistration {
    let signature = to_hex(&identity.sign(&signed_bytes(&registration)));
    SignedRegistration {
        registration,
        signature,
        certificate: None,
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("'node' must be 64 hex digits (the node's Ed25519 public key)")]
    BadNode,
    #[error("'signature' must be 128 hex digits")]
    BadSignature,
    #[error("the signature does not match the registration and the node key")]
    Mismatch,
}

/// Checks the signature and returns the node it proves.
pub fn verify(s: &SignedRegistration) -> Result<NodeId, SignatureError> {
    let node = NodeId::from_hex(&s.registration.node).ok_or(SignatureError::BadNode)?;
    let sig = from_hex::<64>(&s.signature).ok_or(SignatureError::BadSignature)?;
    if identity::verify(&node, &signed_bytes(&s.registration), &sig) {
        Ok(node)
    } else {
        Err(SignatureError::Mismatch)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::BroadcastInfo;

    pub fn registration(id: &Identity, ts: u64) -> Registration {
        Registration {
            node: id.node_id().to_hex(),
            name: "hall".into(),
            site: "berlin".into(),
            addrs: vec!["0.0.0.0:4433".into()],
            http: Some("0.0.0.0:8080".into()),
            broadcasts: vec![BroadcastInfo {
                name: "hall".into(),
                live: true,
            }],
            capabilities: vec!["camera".into()],
            timestamp_ms: ts,
            ttl_s: 30,
            tcp: None,
            reachable: None,
            board: None,
            version: None,
            update: None,
        }
    }

    /// Fields added since version 1 are left out when empty, so a box that does not send
    /// them signs the same bytes as before.
    #[test]
    fn fields_a_box_does_not_send_are_not_signed() {
        let id = Identity::from_seed([3; 32]);
        let bytes = String::from_utf8(signed_bytes(&registration(&id, 1))).unwrap();
        assert!(
            bytes.ends_with(r#""timestamp_ms":1,"ttl_s":30}"#),
            "{bytes}"
        );
        let with_tcp = Registration {
            tcp: Some("0.0.0.0:443".into()),
            ..registration(&id, 1)
        };
        let bytes = String::from_utf8(signed_bytes(&with_tcp)).unwrap();
        assert!(
            bytes.ends_with(r#""ttl_s":30,"tcp":"0.0.0.0:443"}"#),
            "{bytes}"
        );
    }

    #[test]
    fn a_signed_registration_verifies_and_any_change_breaks_it() {
        let id = Identity::from_seed([7; 32]);
        let signed = sign(&id, registration(&id, 1000));
        assert_eq!(verify(&signed), Ok(id.node_id()));
        let mut changed = signed.clone();
        changed.registration.site = "paris".into();
        assert_eq!(verify(&changed), Err(SignatureError::Mismatch));
        let mut later = signed.clone();
        later.registration.timestamp_ms += 1;
        assert_eq!(verify(&later), Err(SignatureError::Mismatch));
    }

    #[test]
    fn another_key_cannot_sign_for_a_node() {
        let id = Identity::from_seed([7; 32]);
        let thief = Identity::from_seed([8; 32]);
        let forged = sign(&thief, registration(&id, 1000));
        assert_eq!(verify(&forged), Err(SignatureError::Mismatch));
    }

    #[test]
    fn malformed_ids_and_signatures_are_named() {
        let id = Identity::from_seed([7; 32]);
        let mut s = sign(&id, registration(&id, 1000));
        s.signature = "zz".into();
        assert_eq!(verify(&s), Err(SignatureError::BadSignature));
        s.registration.node = "abc".into();
        assert_eq!(verify(&s), Err(SignatureError::BadNode));
    }
}
