//! What a box installs: a bundle signed by a release key it trusts, for its own board, of a
//! newer version than the one it runs (older or equal only when an operator forces it).
//! The signature is checked first: nothing an unsigned manifest says is believed.

use crate::bundle::Bundle;
use crate::release_key::ReleasePublic;
use crate::version::Version;

#[derive(Debug, Clone)]
pub struct Policy {
    pub board: String,
    pub running: Version,
    pub keys: Vec<ReleasePublic>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("signed by no release key this box trusts (it trusts {trusted})")]
    Signature { trusted: String },
    #[error("built for board {bundle}, this box is {this}")]
    Board { bundle: String, this: String },
    #[error(
        "version {bundle} is not newer than {running}, which runs here (an operator may \
         force a downgrade)"
    )]
    NotNewer { bundle: String, running: String },
}

impl Refusal {
    /// For metrics and the registry: one word per reason.
    pub fn label(&self) -> &'static str {
        match self {
            Refusal::Signature { .. } => "signature",
            Refusal::Board { .. } => "board",
            Refusal::NotNewer { .. } => "not_newer",
        }
    }
}

impl Policy {
    /// Whether this box may install `bundle`; `force` lets an operator install an older or
    /// the same version (never another board's, never an unsigned one).
    pub fn check(&self, bundle: &Bundle, force: bool) -> Result<(), Refusal> {
        if bundle.signer(&self.keys).is_none() {
            let ids: Vec<String> = self.keys.iter().map(ReleasePublic::id).collect();
            return Err(Refusal::Signature {
                trusted: if ids.is_empty() {
                    "none".into()
                } else {
                    ids.join(", ")
                },
            });
        }
        let m = &bundle.manifest;
        if m.board != self.board {
            return Err(Refusal::Board {
                bundle: m.board.clone(),
                this: self.board.clone(),
            });
        }
        // The shape (and so the version) was checked when the head was read.
        let newer = m.version().is_ok_and(|v| v > self.running);
        if !newer && !force {
            return Err(Refusal::NotNewer {
                bundle: m.version.clone(),
                running: self.running.to_string(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::pack;
    use crate::release_key::ReleaseKey;

    fn bundle(key: &ReleaseKey, board: &str, version: &str) -> Bundle {
        let dir = tempfile::tempdir().unwrap();
        let rootfs = dir.path().join("rootfs.ext4");
        std::fs::write(&rootfs, b"a root file system").unwrap();
        let out = dir.path().join("b.cbx");
        pack(
            board,
            version,
            0,
            &[("rootfs".into(), rootfs)],
            4096,
            key,
            &out,
        )
        .unwrap()
    }

    #[test]
    fn a_box_takes_only_its_boards_newer_bundles_signed_by_a_key_it_trusts() {
        let release = ReleaseKey::generate().unwrap();
        let stranger = ReleaseKey::generate().unwrap();
        let policy = Policy {
            board: "rpi4_64".into(),
            running: Version::parse("2026.11.2").unwrap(),
            keys: vec![ReleaseKey::generate().unwrap().public(), release.public()],
        };
        policy
            .check(&bundle(&release, "rpi4_64", "2026.12.0"), false)
            .unwrap();
        let cases = [
            (bundle(&stranger, "rpi4_64", "2026.12.0"), "signature"),
            (bundle(&release, "rpi5", "2026.12.0"), "board"),
            (bundle(&release, "rpi4_64", "2026.11.2"), "not_newer"),
            (bundle(&release, "rpi4_64", "2026.9"), "not_newer"),
        ];
        for (b, want) in &cases {
            let e = policy.check(b, false).unwrap_err();
            assert_eq!(e.label(), *want, "{e}");
            println!("refused: {e}");
        }
        // An operator may go back, but never to another board or an unsigned bundle.
        policy.check(&cases[3].0, true).unwrap();
        assert_eq!(
            policy.check(&cases[1].0, true).unwrap_err().label(),
            "board"
        );
        assert_eq!(
            policy.check(&cases[0].0, true).unwrap_err().label(),
            "signature"
        );
        // A signature over another manifest does not carry over.
        let mut swapped = cases[0].0.clone();
        swapped.signature = bundle(&release, "rpi4_64", "2026.12.1").signature;
        assert_eq!(
            policy.check(&swapped, false).unwrap_err().label(),
            "signature"
        );
    }
}
