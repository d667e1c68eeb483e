//! Two root slots and the Raspberry Pi firmware's `tryboot`, the A/B scheme every board of
//! cambox has without a boot loader of its own.
//!
//! The boot partition (FAT) holds the firmware, `config.txt`, and one directory per slot
//! (`a/`, `b/`: kernel, device trees, overlays, `cmdline.txt`). `config.txt` names the
//! default slot with `os_prefix=a/`; a slot's `cmdline.txt` names its root partition and
//! `cambox.slot=a`. To try slot B, the box writes B's root partition and directory, then
//! `tryboot.txt` (a copy of `config.txt` naming `b/`), and reboots with the firmware's
//! one-shot `tryboot` flag. The firmware clears the flag before it starts the kernel, so
//! when B hangs, panics or is reset, the next boot reads `config.txt` again: slot A.
//! Only when B is healthy does the box commit, by changing the one letter of `os_prefix`
//! in `config.txt` in place: one sector written, never a file missing.
//!
//! Until the commit nothing the default slot boots from is touched, so a power cut at any
//! step of an install leaves a box that boots the old slot.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Slot {
    A,
    B,
}

impl Slot {
    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }

    pub fn letter(self) -> char {
        match self {
            Slot::A => 'a',
            Slot::B => 'b',
        }
    }

    fn from_letter(c: char) -> Option<Slot> {
        match c {
            'a' => Some(Slot::A),
            'b' => Some(Slot::B),
            _ => None,
        }
    }
}

impl std::fmt::Display for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.letter().to_ascii_uppercase())
    }
}

/// The slot the running system booted, from the kernel command line (`cambox.slot=a`).
pub fn booted(cmdline: &str) -> Option<Slot> {
    cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix("cambox.slot="))
        .and_then(|s| s.chars().next())
        .and_then(Slot::from_letter)
}

/// Where `os_prefix=` names the default slot in `config.txt`: the byte offset of its
/// letter, and the slot.
fn default_at(config: &str) -> Option<(usize, Slot)> {
    let mut offset = 0;
    for line in config.split_inclusive('\n') {
        let trimmed = line.trim_end();
        if let Some(rest) = trimmed.strip_prefix("os_prefix=") {
            let letter = rest.chars().next()?;
            if rest.len() == 2 && rest.ends_with('/') {
                return Slot::from_letter(letter).map(|s| (offset + "os_prefix=".len(), s));
            }
            return None;
        }
        offset += line.len();
    }
    None
}

/// What a box needs to know of its card.
#[derive(Debug, Clone)]
pub struct Card {
    /// The boot partition, mounted (read-write while installing or committing).
    pub boot: PathBuf,
    /// The root partition of each slot (`/dev/mmcblk0p2`, `/dev/mmcblk0p3`).
    pub root_a: PathBuf,
    pub root_b: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum SlotError {
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    #[error(
        "{0} names no slot with a line os_prefix=a/ or os_prefix=b/: this card was not \
         made with two slots (flash an image of this release or later)"
    )]
    NoSlots(String),
    #[error("image {name} is {size} bytes, more than slot {slot}'s partition holds ({room})")]
    TooBig {
        name: String,
        size: u64,
        slot: Slot,
        room: u64,
    },
    #[error("slot {0} is the default one: the box never writes the slot it falls back to")]
    WritingDefault(Slot),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SlotError + '_ {
    move |e| SlotError::Io(path.display().to_string(), e)
}

/// Syncs a directory, so that what was created or renamed in it survives a power cut.
fn sync_dir(dir: &Path) -> Result<(), SlotError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

impl Card {
    fn config(&self) -> PathBuf {
        self.boot.join("config.txt")
    }

    pub fn root(&self, slot: Slot) -> &Path {
        match slot {
            Slot::A => &self.root_a,
            Slot::B => &self.root_b,
        }
    }

    /// `config.txt`: its text, where the letter of its default slot stands, and the slot.
    fn read_config(&self) -> Result<(String, usize, Slot), SlotError> {
        let path = self.config();
        let text = fs::read_to_string(&path).map_err(io(&path))?;
        let (at, slot) =
            default_at(&text).ok_or_else(|| SlotError::NoSlots(path.display().to_string()))?;
        Ok((text, at, slot))
    }

    /// The slot `config.txt` boots when nobody asks for a try.
    pub fn default_slot(&self) -> Result<Slot, SlotError> {
        self.read_config().map(|(_, _, slot)| slot)
    }

    /// Writes one image of `size` bytes from `data` to `slot`'s root partition, and syncs
    /// it. The caller checked the bytes (each chunk against the signed manifest).
    pub fn write_root(
        &self,
        slot: Slot,
        size: u64,
        data: &mut impl Read,
        mut progress: impl FnMut(u64),
    ) -> Result<(), SlotError> {
        if slot == self.default_slot()? {
            return Err(SlotError::WritingDefault(slot));
        }
        let path = self.root(slot);
        let mut dev = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(io(path))?;
        let room = dev.seek(SeekFrom::End(0)).map_err(io(path))?;
        // A regular file (tests) grows; a partition has its size.
        let is_file = fs::metadata(path).map(|m| m.is_file()).unwrap_or(false);
        if !is_file && size > room {
            return Err(SlotError::TooBig {
                name: "rootfs".into(),
                size,
                slot,
                room,
            });
        }
        dev.seek(SeekFrom::Start(0)).map_err(io(path))?;
        let mut buf = vec![0u8; 1 << 20];
        let mut done = 0u64;
        while done < size {
            let want = buf.len().min((size - done) as usize);
            data.read_exact(&mut buf[..want]).map_err(io(path))?;
            dev.write_all(&buf[..want]).map_err(io(path))?;
            done += want as u64;
            progress(done);
        }
        dev.sync_all().map_err(io(path))
    }

    /// Replaces `slot`'s boot directory with `files` (path within the directory, bytes),
    /// and writes its `cmdline.txt` from the bundle's, naming its root partition and slot.
    pub fn write_boot(
        &self,
        slot: Slot,
        files: &[(String, Vec<u8>)],
        root_device: &str,
    ) -> Result<(), SlotError> {
        if slot == self.default_slot()? {
            return Err(SlotError::WritingDefault(slot));
        }
        let dir = self.boot.join(slot.letter().to_string());
        if dir.exists() {
            fs::remove_dir_all(&dir).map_err(io(&dir))?;
        }
        for (name, bytes) in files {
            let path = dir.join(name);
            let parent = path.parent().unwrap_or(&dir);
            fs::create_dir_all(parent).map_err(io(parent))?;
            let bytes = if name == "cmdline.txt" {
                cmdline_for(&String::from_utf8_lossy(bytes), root_device, slot).into_bytes()
            } else {
                bytes.clone()
            };
            let mut f = File::create(&path).map_err(io(&path))?;
            f.write_all(&bytes).map_err(io(&path))?;
            f.sync_all().map_err(io(&path))?;
        }
        sync_dir(&dir)?;
        sync_dir(&self.boot)
    }

    /// Writes `tryboot.txt`: `config.txt` with `slot` in place of the default. The
    /// firmware reads it only after a reboot that asks for a try.
    pub fn prepare_try(&self, slot: Slot) -> Result<(), SlotError> {
        let (text, at, _) = self.read_config()?;
        let mut tried = text.into_bytes();
        tried[at] = slot.letter() as u8;
        let path = self.boot.join("tryboot.txt");
        let mut f = File::create(&path).map_err(io(&path))?;
        f.write_all(&tried).map_err(io(&path))?;
        f.sync_all().map_err(io(&path))?;
        sync_dir(&self.boot)
    }

    /// Makes `slot` the default: its letter written over the old one in `config.txt`, in
    /// place (one byte of one sector; the file is never rewritten or renamed).
    pub fn commit(&self, slot: Slot) -> Result<(), SlotError> {
        let (_, at, current) = self.read_config()?;
        if current == slot {
            return Ok(());
        }
        let config = self.config();
        let mut f = OpenOptions::new()
            .write(true)
            .open(&config)
            .map_err(io(&config))?;
        f.seek(SeekFrom::Start(at as u64)).map_err(io(&config))?;
        f.write_all(&[slot.letter() as u8]).map_err(io(&config))?;
        f.sync_all().map_err(io(&config))
    }
}

/// `cmdline.txt` with `root=` and `cambox.slot=` set for `slot` (added when missing).
pub fn cmdline_for(template: &str, root_device: &str, slot: Slot) -> String {
    let mut words: Vec<String> = template
        .split_whitespace()
        .filter(|w| !w.starts_with("root=") && !w.starts_with("cambox.slot="))
        .map(str::to_owned)
        .collect();
    words.insert(0, format!("root={root_device}"));
    words.push(format!("cambox.slot={}", slot.letter()));
    words.join(" ") + "\n"
}

/// A card in a directory: `config.txt` as given, root A holding `root_a`, root B empty
/// (regular files stand in for the partitions).
#[cfg(test)]
pub(crate) fn test_card(dir: &Path, config: &str, root_a: &[u8]) -> Card {
    fs::write(dir.join("config.txt"), config).unwrap();
    fs::write(dir.join("root_a"), root_a).unwrap();
    fs::write(dir.join("root_b"), b"").unwrap();
    Card {
        boot: dir.to_path_buf(),
        root_a: dir.join("root_a"),
        root_b: dir.join("root_b"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = "# firmware\narm_64bit=1\nkernel=Image\nos_prefix=a/\ngpu_mem=128\n";

    fn card(dir: &Path) -> Card {
        fs::create_dir(dir.join("a")).unwrap();
        fs::write(
            dir.join("a/cmdline.txt"),
            "root=/dev/mmcblk0p2 ro cambox.slot=a\n",
        )
        .unwrap();
        test_card(dir, CONFIG, b"old root")
    }

    #[test]
    fn a_try_leaves_the_default_alone_until_the_commit_changes_one_letter() {
        let dir = tempfile::tempdir().unwrap();
        let card = card(dir.path());
        assert_eq!(card.default_slot().unwrap(), Slot::A);
        let root = b"new root file system".to_vec();
        let mut seen = 0;
        card.write_root(Slot::B, root.len() as u64, &mut &root[..], |n| seen = n)
            .unwrap();
        assert_eq!(seen, root.len() as u64);
        assert_eq!(fs::read(&card.root_b).unwrap(), root);
        let files = vec![
            ("Image".to_string(), b"kernel".to_vec()),
            ("overlays/x.dtbo".to_string(), b"dt".to_vec()),
            (
                "cmdline.txt".to_string(),
                b"root=/dev/sda1 ro quiet\n".to_vec(),
            ),
        ];
        card.write_boot(Slot::B, &files, "/dev/mmcblk0p3").unwrap();
        assert_eq!(
            fs::read_to_string(dir.path().join("b/cmdline.txt")).unwrap(),
            "root=/dev/mmcblk0p3 ro quiet cambox.slot=b\n"
        );
        assert_eq!(
            fs::read(dir.path().join("b/overlays/x.dtbo")).unwrap(),
            b"dt"
        );
        card.prepare_try(Slot::B).unwrap();
        let tried = fs::read_to_string(dir.path().join("tryboot.txt")).unwrap();
        assert_eq!(tried, CONFIG.replace("os_prefix=a/", "os_prefix=b/"));
        // Nothing the default slot boots from changed.
        assert_eq!(
            fs::read_to_string(dir.path().join("config.txt")).unwrap(),
            CONFIG
        );
        assert_eq!(fs::read(&card.root_a).unwrap(), b"old root");
        card.commit(Slot::B).unwrap();
        assert_eq!(card.default_slot().unwrap(), Slot::B);
        assert_eq!(
            fs::read_to_string(dir.path().join("config.txt")).unwrap(),
            CONFIG.replace("os_prefix=a/", "os_prefix=b/")
        );
        // Now A is the other slot, and B may not be written.
        let e = card
            .write_root(Slot::B, 1, &mut &b"x"[..], |_| {})
            .unwrap_err();
        assert!(matches!(e, SlotError::WritingDefault(Slot::B)), "{e}");
    }

    #[test]
    fn a_card_without_slots_and_the_booted_slot_are_told() {
        let dir = tempfile::tempdir().unwrap();
        let card = card(dir.path());
        fs::write(dir.path().join("config.txt"), "kernel=Image\n").unwrap();
        let e = card.prepare_try(Slot::B).unwrap_err().to_string();
        assert!(e.contains("was not made with two slots"), "{e}");
        assert_eq!(
            booted("console=ttyAMA0 cambox.slot=b root=/dev/vda3"),
            Some(Slot::B)
        );
        assert_eq!(booted("console=ttyAMA0"), None);
        assert_eq!(default_at("os_prefix=c/\n"), None);
        assert_eq!(default_at("x=1\r\nos_prefix=b/\r\n"), Some((15, Slot::B)));
    }
}
