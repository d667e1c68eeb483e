//! Bundles on their way through this box, on the data partition: `bundles/<id>.cbx` is
//! laid out as the bundle file itself (head, then the payload at its place, chunks
//! written as they come), and `bundles/<id>.have` says which chunks are in it. A transfer
//! that breaks (a lost link, a power cut) resumes at the chunks the bitmap lacks; a
//! complete file is installed as any bundle file is.
//!
//! Nothing here waits for the card (no fsync): this runs in the mesh's driver, between
//! live objects. After a power cut the bitmap may name a chunk whose bytes never reached
//! the card, so reopening checks every chunk it names against the signed manifest.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use cambox_update::Bundle;

/// Bundles kept at once (the newest of a few boards).
pub const MAX_KEPT: usize = 4;
/// The bitmap is written after this many new chunks (and when complete).
const SAVE_EVERY: usize = 16;

#[derive(Debug)]
pub struct Stored {
    pub bundle: Bundle,
    path: PathBuf,
    have_path: PathBuf,
    head_len: u64,
    pub have: Vec<bool>,
    unsaved: usize,
}

fn have_bytes(have: &[bool]) -> Vec<u8> {
    have.iter().map(|h| if *h { b'1' } else { b'0' }).collect()
}

impl Stored {
    /// The bundle's file in `dir`, opened where it stands or made (empty) for `bundle`.
    pub fn open(dir: &Path, bundle: Bundle) -> anyhow::Result<Stored> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let id = bundle.id();
        let path = dir.join(format!("{id}.cbx"));
        let have_path = dir.join(format!("{id}.have"));
        let head = bundle.head_bytes();
        let chunks = bundle.manifest.chunks.len();
        let mut have = vec![false; chunks];
        if let Ok(text) = std::fs::read(&have_path) {
            for (h, c) in have.iter_mut().zip(text) {
                *h = c == b'1';
            }
        }
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        f.write_all(&head)?;
        f.set_len(head.len() as u64 + bundle.manifest.payload_len())?;
        let mut stored = Stored {
            head_len: head.len() as u64,
            bundle,
            path,
            have_path,
            have,
            unsaved: 0,
        };
        for i in 0..chunks {
            if stored.have[i] {
                let whole = stored
                    .read_chunk(i)
                    .is_ok_and(|data| stored.bundle.chunk_ok(i, &data));
                stored.have[i] = whole;
            }
        }
        Ok(stored)
    }

    /// A bundle file this box was given whole (it publishes it), whose every chunk the
    /// caller checked ([`Bundle::check_payload`]).
    pub fn adopt(dir: &Path, file: &Path) -> anyhow::Result<Stored> {
        let mut r = std::io::BufReader::new(
            File::open(file).with_context(|| format!("cannot open {}", file.display()))?,
        );
        let bundle =
            Bundle::read_head(&mut r).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
        std::fs::create_dir_all(dir)?;
        let id = bundle.id();
        let path = dir.join(format!("{id}.cbx"));
        if path != file {
            std::fs::rename(file, &path)
                .or_else(|_| std::fs::copy(file, &path).map(|_| ()))
                .with_context(|| format!("cannot keep the bundle as {}", path.display()))?;
        }
        let chunks = bundle.manifest.chunks.len();
        let stored = Stored {
            head_len: bundle.head_bytes().len() as u64,
            have_path: dir.join(format!("{id}.have")),
            bundle,
            path,
            have: vec![true; chunks],
            unsaved: 0,
        };
        stored.save_have()?;
        Ok(stored)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn complete(&self) -> bool {
        self.have.iter().all(|h| *h)
    }

    /// The bitmap, replaced whole (written beside, then renamed).
    fn save_have(&self) -> anyhow::Result<()> {
        let tmp = self.have_path.with_extension("have.new");
        std::fs::write(&tmp, have_bytes(&self.have))?;
        std::fs::rename(&tmp, &self.have_path)?;
        Ok(())
    }

    /// Writes chunk `i` (checked by the caller) and notes it.
    pub fn write_chunk(&mut self, i: usize, data: &[u8]) -> anyhow::Result<()> {
        let (start, _) = self.bundle.manifest.chunk_span(i);
        let mut f = OpenOptions::new().write(true).open(&self.path)?;
        f.seek(SeekFrom::Start(self.head_len + start))?;
        f.write_all(data)?;
        self.have[i] = true;
        self.unsaved += 1;
        if self.unsaved >= SAVE_EVERY || self.complete() {
            self.unsaved = 0;
            self.save_have()?;
        }
        Ok(())
    }

    pub fn read_chunk(&self, i: usize) -> anyhow::Result<Vec<u8>> {
        let (start, len) = self.bundle.manifest.chunk_span(i);
        let mut f = File::open(&self.path)?;
        f.seek(SeekFrom::Start(self.head_len + start))?;
        let mut buf = vec![0u8; len as usize];
        f.read_exact(&mut buf)?;
        Ok(buf)
    }

    fn rollout_path(&self) -> PathBuf {
        self.path.with_extension("rollout")
    }

    /// The rollout kept with the bundle (as signed; the caller checks it), so a box that
    /// restarts holds to a paused rollout before any neighbour has told it again.
    pub fn rollout(&self) -> Option<Vec<u8>> {
        std::fs::read(self.rollout_path()).ok()
    }

    pub fn keep_rollout(&self, doc: &[u8]) -> anyhow::Result<()> {
        crate::files::write_atomic(&self.rollout_path(), doc)
    }

    /// Removes the files (a newer bundle for the board replaced this one).
    pub fn remove(self) {
        let _ = std::fs::remove_file(self.rollout_path());
        let _ = std::fs::remove_file(&self.path);
        let _ = std::fs::remove_file(&self.have_path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cambox_update::bundle::pack;
    use cambox_update::ReleaseKey;

    #[test]
    fn chunks_written_in_any_order_make_the_bundle_and_a_reopen_resumes() {
        let dir = tempfile::tempdir().unwrap();
        let key = ReleaseKey::generate().unwrap();
        let rootfs = dir.path().join("rootfs");
        std::fs::write(&rootfs, (0..20_000u32).map(|i| i as u8).collect::<Vec<_>>()).unwrap();
        let made = dir.path().join("made.cbx");
        let bundle = pack(
            "qemu_aarch64",
            "2",
            0,
            &[("rootfs".into(), rootfs)],
            4096,
            &key,
            &made,
        )
        .unwrap();
        let original = std::fs::read(&made).unwrap();
        let publisher = Stored::adopt(&dir.path().join("pub"), &made).unwrap();
        assert!(publisher.complete());
        let store = dir.path().join("store");
        let mut s = Stored::open(&store, bundle.clone()).unwrap();
        for i in [4, 0, 2] {
            let data = publisher.read_chunk(i).unwrap();
            assert!(s.bundle.chunk_ok(i, &data));
            s.write_chunk(i, &data).unwrap();
        }
        // A power cut here, after the bitmap was saved and before chunk 2's bytes
        // reached the card: the reopened store finds chunk 2 wrong and fetches it again.
        s.save_have().unwrap();
        let (start, _) = s.bundle.manifest.chunk_span(2);
        let at = s.head_len + start + 7;
        drop(s);
        let mut f = OpenOptions::new()
            .write(true)
            .open(store.join(format!("{}.cbx", bundle.id())))
            .unwrap();
        f.seek(SeekFrom::Start(at)).unwrap();
        f.write_all(&[0xee]).unwrap();
        drop(f);
        let mut s = Stored::open(&store, bundle).unwrap();
        assert_eq!(s.have, vec![true, false, false, false, true]);
        for i in [1, 2, 3] {
            let data = publisher.read_chunk(i).unwrap();
            s.write_chunk(i, &data).unwrap();
        }
        assert!(s.complete());
        assert_eq!(std::fs::read(s.path()).unwrap(), original);
    }
}
