//! The box's side of updates: what it is (board, version, how its firmware tries a slot),
//! what it last installed, and the health check after a try. A try that does not reach the
//! mesh (a neighbour, or a registry's answer) within the bound is not committed: the box
//! reboots, and the firmware, which cleared its one-shot flag before starting the kernel,
//! boots the old slot. The old slot then finds the record of the try and reports it.

pub mod api;
pub mod apply;
pub mod from_registry;
pub mod health;
pub mod store;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use cambox_update::slots::{self, Card, Slot};
use cambox_update::Version;
use serde::{Deserialize, Serialize};

/// Where an image says what it is (written by the image build).
pub const RELEASE_FILE: &str = "/etc/cambox/release";
/// The release keys an image trusts.
pub const RELEASE_KEYS: &str = "/etc/cambox/release.pub";
/// How long a tried slot has to reach the mesh before it is given up.
pub const DEFAULT_HEALTH_BOUND: Duration = Duration::from_secs(180);

/// How a board's firmware is asked to boot the other slot once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TryBoot {
    /// The Raspberry Pi firmware's flag, set by the reboot call's argument `0 tryboot`.
    Firmware,
    /// A file `TRYBOOT` on the boot partition that the boot stage deletes before it reads
    /// `tryboot.txt` (the emulated board's `/init` plays the firmware).
    FlagFile,
}

/// What the running image is, from [`RELEASE_FILE`] (`board=`, `version=`, `tryboot=`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    pub board: String,
    pub version: Version,
    pub tryboot: TryBoot,
}

impl Release {
    pub fn parse(text: &str) -> Result<Release, String> {
        let get = |key: &str| {
            text.lines()
                .filter_map(|l| l.split_once('='))
                .find(|(k, _)| k.trim() == key)
                .map(|(_, v)| v.trim().trim_matches('"').to_string())
        };
        let board = get("board").ok_or("no board=")?;
        let version = Version::parse(&get("version").ok_or("no version=")?)?;
        let tryboot = match get("tryboot").as_deref() {
            None | Some("firmware") => TryBoot::Firmware,
            Some("flag") => TryBoot::FlagFile,
            Some(other) => return Err(format!("tryboot={other} is not firmware or flag")),
        };
        Ok(Release {
            board,
            version,
            tryboot,
        })
    }

    pub fn load(path: &Path) -> anyhow::Result<Release> {
        let text = std::fs::read_to_string(path).with_context(|| {
            format!(
                "cannot read {} (updates need a cambox image: it says the board and version)",
                path.display()
            )
        })?;
        Release::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }
}

/// The card as the running system booted it: the slot from `cambox.slot=` and its root
/// from `root=` on the kernel command line; the other slot's root is the partition after
/// or before it (slot A is partition 2, slot B partition 3 of the same disk).
pub fn detect_card(cmdline: &str, boot: PathBuf) -> anyhow::Result<(Card, Slot)> {
    let booted = slots::booted(cmdline).context(
        "the kernel command line names no cambox.slot: this system was not booted from a \
         card with two slots",
    )?;
    let root = cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix("root="))
        .context("the kernel command line names no root=")?;
    let (stem, number) = root.split_at(root.trim_end_matches(|c: char| c.is_ascii_digit()).len());
    let other = match (booted, number) {
        (Slot::A, "2") => format!("{stem}3"),
        (Slot::B, "3") => format!("{stem}2"),
        _ => anyhow::bail!(
            "root={root} for slot {booted}: slot A must be partition 2 and slot B partition 3"
        ),
    };
    let (a, b) = match booted {
        Slot::A => (root.to_string(), other),
        Slot::B => (other, root.to_string()),
    };
    Ok((
        Card {
            boot,
            root_a: a.into(),
            root_b: b.into(),
        },
        booted,
    ))
}

/// Where an update stands, kept on the data partition (`update.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// `installed` into `slot`; `trying` it (the reboot was asked for); `committed`;
    /// `failed`.
    pub state: String,
    pub bundle: String,
    pub version: String,
    /// The version the box ran before.
    pub from: String,
    pub slot: Slot,
    /// Why it failed, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When the state was last set, seconds since the Unix epoch.
    pub at: u64,
}

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Record {
    pub fn load(path: &Path) -> Option<Record> {
        let text = std::fs::read(path).ok()?;
        serde_json::from_slice(&text).ok()
    }

    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        let json = serde_json::to_vec_pretty(self)?;
        crate::files::write_atomic(path, &json)
    }

    fn with(&self, state: &str, reason: Option<String>) -> Record {
        Record {
            state: state.into(),
            reason,
            at: now_secs(),
            ..self.clone()
        }
    }
}

/// What a box does at start about an update, from its record, the slot it booted and the
/// slot `config.txt` boots by default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AtStart {
    /// Nothing under way.
    Nothing,
    /// This is the try: commit once healthy, or give up at the bound.
    Check(Record),
    /// The try was settled before this start: it did not come up (the firmware booted the
    /// old slot again), or it was committed by a start that lost power before it wrote
    /// its record. Write this record.
    Settled(Record),
}

pub fn at_start(record: Option<Record>, booted: Slot, default: Slot) -> AtStart {
    let pending = |r: &Record| r.state == "installed" || r.state == "trying";
    match record {
        Some(r) if pending(&r) && booted == r.slot && default != r.slot => AtStart::Check(r),
        // Installed, and the box restarted before it asked for the try.
        Some(r) if r.state == "installed" && booted != r.slot => {
            let reason = format!(
                "the box restarted before it tried version {}; send the bundle again",
                r.version
            );
            AtStart::Settled(r.with("failed", Some(reason)))
        }
        Some(r) if r.state == "trying" && booted != r.slot => {
            let reason = format!(
                "version {} in slot {} did not come up; the box went back to slot {} (version {})",
                r.version, r.slot, booted, r.from
            );
            AtStart::Settled(r.with("failed", Some(reason)))
        }
        Some(r) if pending(&r) && booted == r.slot => AtStart::Settled(r.with("committed", None)),
        _ => AtStart::Nothing,
    }
}

/// The outcome of a try's health check.
pub fn committed(r: &Record) -> Record {
    r.with("committed", None)
}

pub fn gave_up(r: &Record, bound: Duration) -> Record {
    r.with(
        "failed",
        Some(format!(
            "version {} reached neither a neighbour nor a registry within {} s; back to \
             version {}",
            r.version,
            bound.as_secs(),
            r.from
        )),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(state: &str, slot: Slot) -> Record {
        Record {
            state: state.into(),
            bundle: "ab".into(),
            version: "2".into(),
            from: "1".into(),
            slot,
            reason: None,
            at: 0,
        }
    }

    #[test]
    fn a_start_checks_a_try_records_a_fall_back_and_ignores_the_rest() {
        let trying = record("trying", Slot::B);
        assert_eq!(
            at_start(Some(trying.clone()), Slot::B, Slot::A),
            AtStart::Check(trying.clone())
        );
        match at_start(Some(trying.clone()), Slot::A, Slot::A) {
            AtStart::Settled(r) => {
                assert_eq!(r.state, "failed");
                let reason = r.reason.unwrap();
                assert!(
                    reason.contains("did not come up; the box went back to slot A"),
                    "{reason}"
                );
            }
            other => panic!("{other:?}"),
        }
        match at_start(Some(trying), Slot::B, Slot::B) {
            AtStart::Settled(r) => assert_eq!(r.state, "committed"),
            other => panic!("{other:?}"),
        }
        match at_start(Some(record("installed", Slot::B)), Slot::A, Slot::A) {
            AtStart::Settled(r) => {
                let reason = r.reason.unwrap();
                assert!(
                    reason.contains("restarted before it tried version 2"),
                    "{reason}"
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            at_start(Some(record("installed", Slot::B)), Slot::B, Slot::A),
            AtStart::Check(record("installed", Slot::B))
        );
        assert_eq!(
            at_start(Some(record("committed", Slot::B)), Slot::B, Slot::B),
            AtStart::Nothing
        );
        assert_eq!(at_start(None, Slot::A, Slot::A), AtStart::Nothing);
    }

    #[test]
    fn the_release_file_and_the_card_are_read_from_what_the_image_and_kernel_say() {
        let r = Release::parse("board=qemu_aarch64\nversion=2026.12.1\ntryboot=flag\n").unwrap();
        assert_eq!(r.board, "qemu_aarch64");
        assert_eq!(r.tryboot, TryBoot::FlagFile);
        assert!(Release::parse("board=x\nversion=1.0-beta\n").is_err());
        let (card, slot) = detect_card(
            "console=ttyAMA0 root=/dev/mmcblk0p3 ro cambox.slot=b",
            "/boot".into(),
        )
        .unwrap();
        assert_eq!(slot, Slot::B);
        assert_eq!(card.root_a, PathBuf::from("/dev/mmcblk0p2"));
        assert_eq!(card.root_b, PathBuf::from("/dev/mmcblk0p3"));
        let (card, _) = detect_card("root=/dev/vda2 cambox.slot=a", "/boot".into()).unwrap();
        assert_eq!(card.root_b, PathBuf::from("/dev/vda3"));
        let e = detect_card("root=/dev/vda5 cambox.slot=a", "/boot".into()).unwrap_err();
        assert!(e.to_string().contains("slot A must be partition 2"), "{e}");
        assert!(detect_card("root=/dev/vda2", "/boot".into()).is_err());
    }
}
