//! Rollout control: which boxes install a bundle, and whether they may start now. A
//! rollout is a small document the release key signs, naming one bundle, the sites it
//! goes to (none named: every site), the share of boxes (a percentage), and whether it is
//! paused. It spreads through the mesh like the bundle's offer; the newest (by `issued`)
//! wins, so resuming a paused rollout or widening it is signing a new one.
//!
//! Signed by the release key rather than by any enrolled box: the key that says what may
//! be installed also says where and when, and a stolen node key cannot hold back every
//! box's update.
//!
//! A box's place in the share comes from its node id alone, so the same boxes go first
//! in every release (canaries an operator can name) and widening from 10 % to 50 % keeps
//! the first tenth.

use serde::{Deserialize, Serialize};

use crate::release_key::{ReleaseKey, ReleasePublic};

pub const MAGIC: &[u8] = b"cambox-rollout-v1\n";
/// Sites a rollout may name: far above a staged rollout's, far below a message's limit.
pub const MAX_SITES: usize = 1000;
const MAX_PLAN: usize = 64 << 10;

/// What the release manager decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// The bundle's id (`Bundle::id`).
    pub bundle: String,
    /// Milliseconds since 1970 when it was signed: the newer plan for a bundle wins.
    pub issued: u64,
    /// Boxes wait, and do not start installing, while this is set.
    pub paused: bool,
    /// The percentage of boxes (by node id) that install it, 0 to 100.
    pub share: u8,
    /// The sites it goes to; empty: every site.
    #[serde(default)]
    pub sites: Vec<String>,
}

impl Plan {
    pub fn check_shape(&self) -> Result<(), String> {
        if self.bundle.len() != 16 || !self.bundle.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!(
                "bundle '{}' is not a bundle id (16 hex digits)",
                self.bundle
            ));
        }
        if self.share > 100 {
            return Err(format!("a share of {} % is over 100", self.share));
        }
        if self.sites.len() > MAX_SITES {
            return Err(format!(
                "{} sites named, at most {MAX_SITES}",
                self.sites.len()
            ));
        }
        Ok(())
    }

    /// Whether a box of `site` whose node id is `node` is among the boxes this plan names
    /// (paused or not).
    pub fn includes(&self, node: &[u8], site: &str) -> bool {
        (self.sites.is_empty() || self.sites.iter().any(|s| s == site))
            && share_place(node) < u32::from(self.share) * 100
    }

    /// A line for people: "paused, 10 % of sites a, b".
    pub fn describe(&self) -> String {
        let whom = if self.sites.is_empty() {
            "every site".to_string()
        } else {
            format!("sites {}", self.sites.join(", "))
        };
        format!(
            "{}{} % of {whom}",
            if self.paused { "paused, " } else { "" },
            self.share
        )
    }
}

/// Where a node stands in every share: 0 to 9999, from its id's SHA-256.
pub fn share_place(node: &[u8]) -> u32 {
    let d = ring::digest::digest(&ring::digest::SHA256, node);
    u32::from_be_bytes([d.as_ref()[0], d.as_ref()[1], d.as_ref()[2], d.as_ref()[3]]) % 10_000
}

/// A signed plan, as it travels: magic, u32 length, the plan's JSON, 64 signature bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rollout {
    pub plan: Plan,
    json: Vec<u8>,
    signature: [u8; 64],
}

impl Rollout {
    pub fn sign(plan: Plan, key: &ReleaseKey) -> Result<Rollout, String> {
        plan.check_shape()?;
        let json = serde_json::to_vec(&plan).map_err(|e| e.to_string())?;
        let signature = key.sign(&[MAGIC, &json].concat())?;
        Ok(Rollout {
            plan,
            json,
            signature,
        })
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&(self.json.len() as u32).to_be_bytes());
        out.extend_from_slice(&self.json);
        out.extend_from_slice(&self.signature);
        out
    }

    /// Reads a signed plan; its signature is checked by [`Self::signed_by`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Rollout, String> {
        let rest = bytes
            .strip_prefix(MAGIC)
            .ok_or("not a cambox rollout (cambox release rollout makes them)")?;
        let (len, rest) = rest.split_first_chunk::<4>().ok_or("a rollout cut short")?;
        let len = u32::from_be_bytes(*len) as usize;
        if len > MAX_PLAN || rest.len() != len + 64 {
            return Err(format!(
                "a rollout of {} bytes does not hold a plan of {len} bytes and a signature",
                bytes.len()
            ));
        }
        let (json, signature) = rest.split_at(len);
        let plan: Plan =
            serde_json::from_slice(json).map_err(|e| format!("unreadable rollout plan: {e}"))?;
        plan.check_shape()?;
        Ok(Rollout {
            plan,
            json: json.to_vec(),
            signature: signature
                .try_into()
                .map_err(|_| "a signature is 64 bytes")?,
        })
    }

    pub fn signed_by(&self, keys: &[ReleasePublic]) -> bool {
        let signed = [MAGIC, &self.json].concat();
        keys.iter().any(|k| k.verify(&signed, &self.signature))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(share: u8, sites: &[&str]) -> Plan {
        Plan {
            bundle: "0123456789abcdef".into(),
            issued: 1,
            paused: false,
            share,
            sites: sites.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn a_signed_rollout_reads_back_and_only_its_key_verifies_it() {
        let key = ReleaseKey::generate().unwrap();
        let other = ReleaseKey::generate().unwrap();
        let r = Rollout::sign(plan(10, &["hq"]), &key).unwrap();
        let read = Rollout::from_bytes(&r.to_bytes()).unwrap();
        assert_eq!(read, r);
        assert!(read.signed_by(&[other.public(), key.public()]));
        assert!(!read.signed_by(&[other.public()]));

        // A changed plan no longer matches its signature.
        let mut bytes = r.to_bytes();
        let at = bytes.windows(2).position(|w| w == b"10").unwrap();
        bytes[at] = b'9';
        assert!(!Rollout::from_bytes(&bytes)
            .unwrap()
            .signed_by(&[key.public()]));
    }

    #[test]
    fn bad_plans_and_bytes_are_refused_with_a_reason() {
        let key = ReleaseKey::generate().unwrap();
        assert!(Rollout::sign(plan(101, &[]), &key)
            .unwrap_err()
            .contains("over 100"));
        let mut p = plan(5, &[]);
        p.bundle = "nothex".into();
        assert!(Rollout::sign(p, &key).unwrap_err().contains("bundle id"));
        let good = Rollout::sign(plan(5, &[]), &key).unwrap().to_bytes();
        assert!(Rollout::from_bytes(&good[..good.len() - 1])
            .unwrap_err()
            .contains("does not hold"));
        assert!(Rollout::from_bytes(b"cambox-bundle-v1\n")
            .unwrap_err()
            .contains("not a cambox rollout"));
    }

    #[test]
    fn shares_are_about_right_and_widening_keeps_the_first_boxes() {
        let nodes: Vec<[u8; 32]> = (0..4000u32)
            .map(|i| {
                let mut n = [0u8; 32];
                n[..4].copy_from_slice(&i.to_be_bytes());
                n
            })
            .collect();
        let count = |p: &Plan| nodes.iter().filter(|n| p.includes(*n, "hq")).count();
        assert_eq!(count(&plan(0, &[])), 0);
        assert_eq!(count(&plan(100, &[])), 4000);
        let tenth = count(&plan(10, &[]));
        assert!((300..500).contains(&tenth), "10 % took {tenth} of 4000");
        for n in &nodes {
            if plan(10, &[]).includes(n, "hq") {
                assert!(plan(50, &[]).includes(n, "hq"));
            }
        }
    }

    #[test]
    fn sites_named_limit_it_and_none_named_is_every_site() {
        let node = [7u8; 32];
        assert!(plan(100, &[]).includes(&node, "anywhere"));
        assert!(plan(100, &["hq", "lab"]).includes(&node, "lab"));
        assert!(!plan(100, &["hq", "lab"]).includes(&node, "depot"));
        assert_eq!(plan(25, &["hq", "lab"]).describe(), "25 % of sites hq, lab");
    }
}
