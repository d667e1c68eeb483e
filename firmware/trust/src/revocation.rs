//! The CA's list of revoked nodes.
//!
//! A list names node ids, not certificates: revoking a box is revoking its key, whichever
//! certificates (renewals, the root's or an enrolment key's) it holds. Each list carries a
//! number one higher than the last; a box keeps the highest-numbered list it has seen
//! that the CA signed, and passes a newer one to every neighbour and to the registries, so
//! a revocation made anywhere reaches every box. Text, so an administrator can read it:
//!
//! ```text
//! cambox-revocations v1
//! ca <130 hex: the CA's public key>
//! number 3
//! issued 1796445000
//! node <64 hex>
//! node <64 hex>
//! signature <128 hex: the CA's P-256 signature (r ‖ s) of every line above>
//! ```

use std::collections::BTreeSet;
use std::time::SystemTime;

use cambox_mesh::hex::{from_hex, to_hex};
use cambox_mesh::NodeId;

use crate::authority::Authority;
use crate::CaKey;

const MAGIC: &str = "cambox-revocations v1";
/// The largest list a box accepts: about 900 revoked nodes. A list from a neighbour is
/// read whole, so it is bounded like every other message.
pub const MAX_BYTES: usize = cambox_mesh::msg::MAX_REVOCATIONS;

/// A signed list of revoked nodes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RevocationList {
    /// 0 for the empty list every box starts with, which nobody signed.
    pub number: u64,
    pub issued: u64,
    pub nodes: BTreeSet<NodeId>,
    /// The list as signed, byte for byte, to pass on unchanged.
    text: String,
}

impl RevocationList {
    /// The next list after `self`, with `node` added, signed by the root.
    pub fn revoke(
        &self,
        node: NodeId,
        ca: &Authority,
        now: SystemTime,
    ) -> Result<RevocationList, String> {
        if !ca.is_root() {
            return Err("only the company's root CA revokes nodes".into());
        }
        let mut nodes = self.nodes.clone();
        nodes.insert(node);
        let mut body = format!(
            "{MAGIC}\nca {}\nnumber {}\nissued {}\n",
            ca.public_key().to_hex(),
            self.number + 1,
            crate::unix_secs(now)
        );
        for n in &nodes {
            body.push_str(&format!("node {}\n", n.to_hex()));
        }
        let text = format!(
            "{body}signature {}\n",
            to_hex(&ca.sign(body.as_bytes()).map_err(|e| e.to_string())?)
        );
        if text.len() > MAX_BYTES {
            return Err(format!(
                "the list would hold {} nodes, more than a box accepts ({MAX_BYTES} bytes)",
                nodes.len()
            ));
        }
        Ok(RevocationList {
            number: self.number + 1,
            issued: crate::unix_secs(now),
            nodes,
            text,
        })
    }

    /// A list as written by [`Self::text`], checked against the CA's key.
    pub fn parse(text: &str, ca_key: &CaKey) -> Result<RevocationList, String> {
        if text.len() > MAX_BYTES {
            return Err(format!("{} bytes, more than {MAX_BYTES}", text.len()));
        }
        let at = text
            .rfind("signature ")
            .ok_or("no signature line: not a cambox revocation list")?;
        let (body, sig_line) = text.split_at(at);
        let sig = sig_line
            .strip_prefix("signature ")
            .map(str::trim_end)
            .and_then(from_hex::<64>)
            .ok_or("the signature line is not 128 hex digits")?;
        let mut lines = body.lines();
        if lines.next() != Some(MAGIC) {
            return Err(format!("it does not start with {MAGIC:?}"));
        }
        let mut field = |name: &str| {
            lines
                .next()
                .and_then(|l| l.strip_prefix(name))
                .and_then(|v| v.strip_prefix(' '))
                .ok_or(format!("the {name} line is missing"))
        };
        let ca = CaKey::from_hex(field("ca")?).ok_or("the ca line is not 130 hex digits")?;
        if &ca != ca_key {
            return Err("it is another CA's list".into());
        }
        let number = field("number")?
            .parse()
            .map_err(|_| "the number is not a number")?;
        let issued = field("issued")?
            .parse()
            .map_err(|_| "the issued line is not a number")?;
        let mut nodes = BTreeSet::new();
        for line in lines {
            let hex = line
                .strip_prefix("node ")
                .ok_or_else(|| format!("not a node line: {line:?}"))?;
            nodes.insert(NodeId::from_hex(hex).ok_or_else(|| format!("not a node id: {hex:?}"))?);
        }
        if !ca_key.verify(body.as_bytes(), &sig) {
            return Err("the CA's signature does not match: the list was altered or forged".into());
        }
        Ok(RevocationList {
            number,
            issued,
            nodes,
            text: text.to_owned(),
        })
    }

    pub fn is_revoked(&self, node: &NodeId) -> bool {
        self.nodes.contains(node)
    }

    /// The signed text ("" for the unsigned empty list).
    pub fn text(&self) -> &str {
        &self.text
    }
}
