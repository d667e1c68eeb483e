//! Installing a bundle into the slot the box does not run from, in one pass over the
//! payload: each chunk is checked against the signed manifest before a byte of it is
//! written. What is written is the other slot and its boot directory, then `tryboot.txt`;
//! the default slot and `config.txt` are untouched, so a power cut or a bad chunk at any
//! point leaves a box that boots what it ran before.

use std::io::Read;

use crate::bundle::Bundle;
use crate::policy::{Policy, Refusal};
use crate::slots::{Card, Slot, SlotError};

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// Not `#[from]`: the reason is the whole message, not a cause to repeat after it.
    #[error("refused: {0}")]
    Refused(Refusal),
    #[error("the bundle is damaged: {0}")]
    Damaged(String),
    #[error(transparent)]
    Slot(#[from] SlotError),
}

impl From<Refusal> for InstallError {
    fn from(r: Refusal) -> Self {
        InstallError::Refused(r)
    }
}

impl InstallError {
    /// For metrics and the registry.
    pub fn label(&self) -> &'static str {
        match self {
            InstallError::Refused(r) => r.label(),
            InstallError::Damaged(_) => "damaged",
            InstallError::Slot(_) => "slot",
        }
    }
}

/// Reads a payload chunk by chunk and hands on only chunks that match the manifest.
struct Checked<'a, R> {
    bundle: &'a Bundle,
    inner: R,
    chunk: usize,
    buf: Vec<u8>,
    at: usize,
}

impl<R: Read> Read for Checked<'_, R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.at == self.buf.len() {
            if self.chunk >= self.bundle.manifest.chunks.len() {
                return Ok(0);
            }
            let (_, len) = self.bundle.manifest.chunk_span(self.chunk);
            self.buf.resize(len as usize, 0);
            self.inner.read_exact(&mut self.buf)?;
            if !self.bundle.chunk_ok(self.chunk, &self.buf) {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("chunk {} does not match its hash", self.chunk),
                ));
            }
            self.chunk += 1;
            self.at = 0;
        }
        let n = out.len().min(self.buf.len() - self.at);
        out[..n].copy_from_slice(&self.buf[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// What an install did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    pub slot: Slot,
    pub bundle: String,
    pub version: String,
}

/// Installs the bundle whose head is `bundle` and whose payload `payload` reads, into the
/// slot that is not `config.txt`'s default, and prepares a try of it. `progress` hears the
/// payload bytes written so far.
pub fn install(
    bundle: &Bundle,
    payload: impl Read,
    card: &Card,
    policy: &Policy,
    force: bool,
    mut progress: impl FnMut(u64),
) -> Result<Installed, InstallError> {
    policy.check(bundle, force)?;
    let slot = card.default_slot()?.other();
    let mut r = Checked {
        bundle,
        inner: payload,
        chunk: 0,
        buf: Vec::new(),
        at: 0,
    };
    let mut boot_files = Vec::new();
    let mut done = 0u64;
    for image in &bundle.manifest.images {
        if image.name == "rootfs" {
            let base = done;
            card.write_root(slot, image.size, &mut r, |n| progress(base + n))
                .map_err(|e| match e {
                    SlotError::Io(_, io) if io.kind() == std::io::ErrorKind::InvalidData => {
                        InstallError::Damaged(io.to_string())
                    }
                    other => InstallError::Slot(other),
                })?;
        } else {
            let mut bytes = vec![0u8; image.size as usize];
            r.read_exact(&mut bytes)
                .map_err(|e| InstallError::Damaged(e.to_string()))?;
            let name = image.name.trim_start_matches("boot/").to_string();
            boot_files.push((name, bytes));
        }
        done += image.size;
        progress(done);
    }
    let root = card.root(slot).display().to_string();
    card.write_boot(slot, &boot_files, &root)?;
    card.prepare_try(slot)?;
    Ok(Installed {
        slot,
        bundle: bundle.id(),
        version: bundle.manifest.version.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::pack;
    use crate::release_key::ReleaseKey;
    use crate::version::Version;
    use std::fs;
    use std::path::Path;

    fn card(dir: &Path) -> Card {
        crate::slots::test_card(dir, "kernel=Image\nos_prefix=a/\n", b"root A")
    }

    #[test]
    fn an_install_writes_the_other_slot_and_a_bad_chunk_stops_it_before_the_try() {
        let dir = tempfile::tempdir().unwrap();
        let card = card(dir.path());
        let key = ReleaseKey::generate().unwrap();
        let rootfs = dir.path().join("rootfs.ext4");
        let root: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
        fs::write(&rootfs, &root).unwrap();
        let cmdline = dir.path().join("cmdline.txt");
        fs::write(&cmdline, "ro quiet\n").unwrap();
        let out = dir.path().join("b.cbx");
        let images = [
            ("boot/cmdline.txt".to_string(), cmdline),
            ("rootfs".to_string(), rootfs),
        ];
        pack("qemu_aarch64", "2", 0, &images, 4096, &key, &out).unwrap();
        let policy = Policy {
            board: "qemu_aarch64".into(),
            running: Version::parse("1").unwrap(),
            keys: vec![key.public()],
        };
        let file = fs::read(&out).unwrap();

        // One bit flipped in the rootfs: the install stops; no try is prepared.
        let mut bad = file.clone();
        let at = bad.len() - 10_000;
        bad[at] ^= 1;
        let mut r = &bad[..];
        let head = Bundle::read_head(&mut r).unwrap();
        let e = install(&head, r, &card, &policy, false, |_| {}).unwrap_err();
        assert_eq!(e.label(), "damaged", "{e}");
        assert!(!dir.path().join("tryboot.txt").exists());

        let mut r = &file[..];
        let head = Bundle::read_head(&mut r).unwrap();
        let mut last = 0;
        let done = install(&head, r, &card, &policy, false, |n| last = n).unwrap();
        assert_eq!(done.slot, Slot::B);
        assert_eq!(last, 50_000 + 9);
        assert_eq!(fs::read(&card.root_b).unwrap(), root);
        assert_eq!(fs::read(&card.root_a).unwrap(), b"root A");
        let root_b = card.root_b.display().to_string();
        assert_eq!(
            fs::read_to_string(dir.path().join("b/cmdline.txt")).unwrap(),
            format!("root={root_b} ro quiet cambox.slot=b\n")
        );
        assert!(fs::read_to_string(dir.path().join("tryboot.txt"))
            .unwrap()
            .contains("os_prefix=b/"));
        assert_eq!(card.default_slot().unwrap(), Slot::A);

        // The same version again is refused, and nothing is written.
        fs::remove_file(dir.path().join("tryboot.txt")).unwrap();
        fs::write(&card.root_b, b"").unwrap();
        let newer = Policy {
            running: Version::parse("2").unwrap(),
            ..policy
        };
        let mut r = &file[..];
        let head = Bundle::read_head(&mut r).unwrap();
        let e = install(&head, r, &card, &newer, false, |_| {}).unwrap_err();
        assert_eq!(e.label(), "not_newer", "{e}");
        assert!(!dir.path().join("tryboot.txt").exists());
        assert_eq!(fs::read(&card.root_b).unwrap(), b"");
    }
}
