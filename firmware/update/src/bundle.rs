//! The bundle file:
//!
//! ```text
//! "cambox-bundle-v1\n"
//! u32 BE  manifest length, then the manifest (JSON)
//! u8      signature length (64), then the release key's ECDSA P-256 signature (r ‖ s)
//!         over "cambox-bundle-v1\n" ‖ manifest
//! payload the images, in the manifest's order, back to back
//! ```
//!
//! The manifest names the SHA-256 of each image and of every `chunk_size` bytes of the
//! payload. A box checks the signature once, then each chunk as it arrives, from whichever
//! neighbour sent it.

use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};

use cambox_mesh::hex::{from_hex, to_hex};
use ring::digest::{Context, SHA256};
use serde::{Deserialize, Serialize};

use crate::release_key::{ReleaseKey, ReleasePublic};
use crate::version::Version;

pub const MAGIC: &[u8] = b"cambox-bundle-v1\n";
/// 256 KiB: a few QUIC flights, and 4 096 chunks for a 1 GiB bundle.
pub const DEFAULT_CHUNK: u32 = 256 * 1024;
const MIN_CHUNK: u32 = 4 * 1024;
/// What one mesh frame carries (`cambox_mesh::msg::MAX_CHUNK`).
const MAX_CHUNK: u32 = 1024 * 1024;
/// A 4 GiB bundle in 256 KiB chunks lists 16 384 hashes (about 1.1 MB of JSON).
pub const MAX_MANIFEST: usize = 4 * 1024 * 1024;
const MAX_IMAGES: usize = 256;

/// One file of the bundle: `rootfs` (the root file system, written whole to the slot's
/// partition) or `boot/<path>` (a file of the slot's boot directory: kernel, device trees,
/// overlays, cmdline.txt).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Image {
    pub name: String,
    pub size: u64,
    /// 64 hex digits.
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The board it is built for (`rpi4_64`, `rpi5`, `zero2w_64`, `qemu_aarch64`).
    pub board: String,
    pub version: String,
    /// When it was packed, seconds since the Unix epoch.
    pub created: u64,
    pub chunk_size: u32,
    pub images: Vec<Image>,
    /// The SHA-256 of each chunk of the payload, 64 hex digits each.
    pub chunks: Vec<String>,
}

impl Manifest {
    pub fn payload_len(&self) -> u64 {
        self.images.iter().map(|i| i.size).sum()
    }

    /// Where chunk `i` starts in the payload, and how long it is.
    pub fn chunk_span(&self, i: usize) -> (u64, u64) {
        let start = i as u64 * u64::from(self.chunk_size);
        let len =
            (self.payload_len() - start.min(self.payload_len())).min(u64::from(self.chunk_size));
        (start, len)
    }

    /// Where each image starts in the payload.
    pub fn image_offsets(&self) -> Vec<(u64, &Image)> {
        let mut at = 0;
        self.images
            .iter()
            .map(|i| {
                let here = at;
                at += i.size;
                (here, i)
            })
            .collect()
    }

    pub fn version(&self) -> Result<Version, String> {
        Version::parse(&self.version)
    }

    /// The rules a manifest keeps whoever signed it: a box refuses the rest before looking
    /// at the signature, so nothing odd reaches the code that writes slots.
    pub fn check_shape(&self) -> Result<(), String> {
        self.version()?;
        if self.board.is_empty()
            || !self
                .board
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(format!("board '{}' is not a board name", self.board));
        }
        if !(MIN_CHUNK..=MAX_CHUNK).contains(&self.chunk_size) {
            return Err(format!(
                "chunk size {} is out of range ({MIN_CHUNK} to {MAX_CHUNK})",
                self.chunk_size
            ));
        }
        if self.images.is_empty() || self.images.len() > MAX_IMAGES {
            return Err(format!("{} images (1 to {MAX_IMAGES})", self.images.len()));
        }
        let mut names = std::collections::BTreeSet::new();
        for image in &self.images {
            check_name(&image.name)?;
            if !names.insert(image.name.as_str()) {
                return Err(format!("image '{}' is named twice", image.name));
            }
            if from_hex::<32>(&image.sha256).is_none() {
                return Err(format!(
                    "image '{}': sha256 is not 64 hex digits",
                    image.name
                ));
            }
        }
        if !names.contains("rootfs") {
            return Err("no rootfs image".into());
        }
        let want = self.payload_len().div_ceil(u64::from(self.chunk_size));
        if self.chunks.len() as u64 != want {
            return Err(format!(
                "{} chunk hashes for {} bytes in chunks of {} (want {want})",
                self.chunks.len(),
                self.payload_len(),
                self.chunk_size
            ));
        }
        if let Some(bad) = self.chunks.iter().position(|c| from_hex::<32>(c).is_none()) {
            return Err(format!("chunk {bad}: its hash is not 64 hex digits"));
        }
        Ok(())
    }
}

/// `rootfs`, or `boot/` and a relative path of plain names (no `..`, nothing hidden).
fn check_name(name: &str) -> Result<(), String> {
    if name == "rootfs" {
        return Ok(());
    }
    let ok = name.strip_prefix("boot/").is_some_and(|path| {
        !path.is_empty()
            && path.len() <= 200
            && path.split('/').all(|part| {
                !part.is_empty()
                    && !part.starts_with('.')
                    && part
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "._-+".contains(c))
            })
    });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "image '{name}' is neither rootfs nor boot/<path> of plain names"
        ))
    }
}

/// A bundle's head: its manifest (as signed, and parsed), the signature, and where its
/// payload starts in the file.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub manifest: Manifest,
    manifest_json: Vec<u8>,
    pub signature: [u8; 64],
    /// The first 8 bytes of the manifest's SHA-256, hashed once: every chunk message
    /// names its bundle by them.
    digest8: [u8; 8],
}

impl Bundle {
    /// The bytes the release key signs.
    fn signed_bytes(manifest_json: &[u8]) -> Vec<u8> {
        [MAGIC, manifest_json].concat()
    }

    /// The key among `keys` that signed this bundle, if one did.
    pub fn signer<'k>(&self, keys: &'k [ReleasePublic]) -> Option<&'k ReleasePublic> {
        let signed = Self::signed_bytes(&self.manifest_json);
        keys.iter().find(|k| k.verify(&signed, &self.signature))
    }

    pub fn manifest_json(&self) -> &[u8] {
        &self.manifest_json
    }

    /// The bundle's name everywhere (mesh, registry, logs): the first 8 bytes of its
    /// manifest's SHA-256, in hex.
    pub fn id(&self) -> String {
        to_hex(&self.digest8)
    }

    /// The same 8 bytes as a number, as the mesh's chunk messages carry it.
    pub fn number(&self) -> u64 {
        u64::from_be_bytes(self.digest8)
    }

    /// The head as it stands in the file; the payload follows.
    pub fn head_bytes(&self) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&(self.manifest_json.len() as u32).to_be_bytes());
        out.extend_from_slice(&self.manifest_json);
        out.push(64);
        out.extend_from_slice(&self.signature);
        out
    }

    /// Reads the head of a bundle; `r` is left at the payload.
    pub fn read_head(r: &mut impl Read) -> Result<Bundle, String> {
        let mut magic = [0u8; MAGIC.len()];
        r.read_exact(&mut magic)
            .map_err(|e| format!("too short for a bundle: {e}"))?;
        if magic != MAGIC {
            return Err("not a cambox bundle (cambox release pack makes them)".into());
        }
        let mut len = [0u8; 4];
        r.read_exact(&mut len)
            .map_err(|e| format!("truncated: {e}"))?;
        let len = u32::from_be_bytes(len) as usize;
        if len > MAX_MANIFEST {
            return Err(format!("manifest of {len} bytes is over {MAX_MANIFEST}"));
        }
        let mut json = vec![0u8; len];
        r.read_exact(&mut json)
            .map_err(|e| format!("truncated manifest: {e}"))?;
        let mut sig_len = [0u8; 1];
        r.read_exact(&mut sig_len)
            .map_err(|e| format!("truncated: {e}"))?;
        if sig_len[0] != 64 {
            return Err(format!("a signature of {} bytes (want 64)", sig_len[0]));
        }
        let mut signature = [0u8; 64];
        r.read_exact(&mut signature)
            .map_err(|e| format!("truncated signature: {e}"))?;
        Self::from_parts(json, signature)
    }

    /// A bundle head from its manifest as signed and the signature (as the mesh carries
    /// them); the manifest's shape is checked.
    pub fn from_parts(manifest_json: Vec<u8>, signature: [u8; 64]) -> Result<Bundle, String> {
        let manifest: Manifest = serde_json::from_slice(&manifest_json)
            .map_err(|e| format!("unreadable manifest: {e}"))?;
        manifest.check_shape()?;
        let digest = ring::digest::digest(&SHA256, &manifest_json);
        let mut digest8 = [0u8; 8];
        digest8.copy_from_slice(&digest.as_ref()[..8]);
        Ok(Bundle {
            manifest,
            manifest_json,
            signature,
            digest8,
        })
    }

    /// Reads the bundle file at `path` and checks every chunk and image against its
    /// manifest (blocking: off the async threads). Its signature is the caller's to check.
    pub fn check_file(path: &Path) -> Result<Bundle, String> {
        let f = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut r = BufReader::new(f);
        let bundle = Bundle::read_head(&mut r)?;
        bundle.check_payload(&mut r, |_| {})?;
        Ok(bundle)
    }

    /// Whether `data` is chunk `i` as the manifest names it.
    pub fn chunk_ok(&self, i: usize, data: &[u8]) -> bool {
        let (_, len) = self.manifest.chunk_span(i);
        let Some(want) = self.manifest.chunks.get(i) else {
            return false;
        };
        data.len() as u64 == len && to_hex(ring::digest::digest(&SHA256, data).as_ref()) == *want
    }

    /// Reads the whole payload from `r`, checking every chunk and every image; `progress`
    /// hears the bytes checked so far.
    pub fn check_payload(
        &self,
        r: &mut impl Read,
        mut progress: impl FnMut(u64),
    ) -> Result<(), String> {
        let m = &self.manifest;
        let mut buf = vec![0u8; m.chunk_size as usize];
        let mut images = m.image_offsets().into_iter().peekable();
        let mut image_hash = Context::new(&SHA256);
        let mut done = 0u64;
        for i in 0..m.chunks.len() {
            let (start, len) = m.chunk_span(i);
            let chunk = &mut buf[..len as usize];
            r.read_exact(chunk)
                .map_err(|e| format!("payload ends in chunk {i}: {e}"))?;
            if !self.chunk_ok(i, chunk) {
                return Err(format!("chunk {i} does not match its hash"));
            }
            // The images' own hashes, over the chunks as they pass.
            let mut at = start;
            while at < start + len {
                let Some(&(image_start, image)) = images.peek() else {
                    break;
                };
                let end = (image_start + image.size).min(start + len);
                image_hash.update(&chunk[(at - start) as usize..(end - start) as usize]);
                at = end;
                if end == image_start + image.size {
                    let got = to_hex(
                        std::mem::replace(&mut image_hash, Context::new(&SHA256))
                            .finish()
                            .as_ref(),
                    );
                    if got != image.sha256 {
                        return Err(format!("image {} does not match its hash", image.name));
                    }
                    images.next();
                }
            }
            done += len;
            progress(done);
        }
        // Images of no bytes come after the last chunk.
        for (_, image) in images {
            if image.size != 0 || to_hex(Context::new(&SHA256).finish().as_ref()) != image.sha256 {
                return Err(format!("image {} does not match its hash", image.name));
            }
        }
        Ok(())
    }
}

/// Packs `images` (bundle name, file) for `board` at `version` into `out`, signed by
/// `key`. Two passes over the files: the hashes first (the manifest comes before the
/// payload), then the copy. `out` appears only when whole.
pub fn pack(
    board: &str,
    version: &str,
    created: u64,
    images: &[(String, PathBuf)],
    chunk_size: u32,
    key: &ReleaseKey,
    out: &Path,
) -> Result<Bundle, String> {
    let mut listed = Vec::new();
    let mut chunks = Vec::new();
    let mut chunk = Context::new(&SHA256);
    let mut in_chunk = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    for (name, path) in images {
        let mut f = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut whole = Context::new(&SHA256);
        let mut size = 0u64;
        loop {
            let n = f
                .read(&mut buf)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            if n == 0 {
                break;
            }
            whole.update(&buf[..n]);
            size += n as u64;
            let mut rest = &buf[..n];
            while !rest.is_empty() {
                let take = rest.len().min((u64::from(chunk_size) - in_chunk) as usize);
                chunk.update(&rest[..take]);
                in_chunk += take as u64;
                rest = &rest[take..];
                if in_chunk == u64::from(chunk_size) {
                    let full = std::mem::replace(&mut chunk, Context::new(&SHA256));
                    chunks.push(to_hex(full.finish().as_ref()));
                    in_chunk = 0;
                }
            }
        }
        listed.push(Image {
            name: name.clone(),
            size,
            sha256: to_hex(whole.finish().as_ref()),
        });
    }
    if in_chunk > 0 {
        chunks.push(to_hex(chunk.finish().as_ref()));
    }
    let manifest = Manifest {
        board: board.into(),
        version: version.into(),
        created,
        chunk_size,
        images: listed,
        chunks,
    };
    manifest.check_shape()?;
    let json = serde_json::to_vec(&manifest).map_err(|e| e.to_string())?;
    let signature = key.sign(&Bundle::signed_bytes(&json))?;
    let bundle = Bundle::from_parts(json, signature)?;
    let tmp = out.with_extension("partial");
    let write = || -> std::io::Result<()> {
        let mut w = std::io::BufWriter::new(File::create(&tmp)?);
        w.write_all(&bundle.head_bytes())?;
        for (_, path) in images {
            std::io::copy(&mut BufReader::new(File::open(path)?), &mut w)?;
        }
        w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        std::fs::rename(&tmp, out)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("{}: {e}", out.display())
    })?;
    Ok(bundle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(dir: &Path, sizes: &[(&str, usize)]) -> Vec<(String, PathBuf)> {
        sizes
            .iter()
            .enumerate()
            .map(|(k, (name, size))| {
                let path = dir.join(format!("f{k}"));
                let data: Vec<u8> = (0..*size).map(|i| (i * 7 + k * 13) as u8).collect();
                std::fs::write(&path, data).unwrap();
                (name.to_string(), path)
            })
            .collect()
    }

    #[test]
    fn a_packed_bundle_reads_back_and_every_chunk_and_image_checks() {
        let dir = tempfile::tempdir().unwrap();
        let key = ReleaseKey::generate().unwrap();
        // Images that end inside chunks, on a chunk's edge, and one that is empty.
        let images = files(
            dir.path(),
            &[
                ("boot/Image", 10_000),
                ("boot/cmdline.txt", 0),
                ("rootfs", 12_288),
                ("boot/overlays/x.dtbo", 5),
            ],
        );
        let out = dir.path().join("b.cbx");
        let packed = pack("qemu_aarch64", "1.2.0", 7, &images, 4096, &key, &out).unwrap();
        assert_eq!(
            packed.manifest.chunks.len(),
            6,
            "22 293 bytes in 4 KiB chunks"
        );
        let mut r = BufReader::new(File::open(&out).unwrap());
        let read = Bundle::read_head(&mut r).unwrap();
        assert_eq!(read.manifest, packed.manifest);
        assert_eq!(read.id(), packed.id());
        assert_eq!(read.signer(&[key.public()]), Some(&key.public()));
        let mut seen = 0;
        read.check_payload(&mut r, |n| seen = n).unwrap();
        assert_eq!(seen, 22_293);
        // Each chunk on its own, as from a neighbour.
        let whole = std::fs::read(&out).unwrap();
        let payload = &whole[read.head_bytes().len()..];
        for i in 0..read.manifest.chunks.len() {
            let (start, len) = read.manifest.chunk_span(i);
            let chunk = &payload[start as usize..(start + len) as usize];
            assert!(read.chunk_ok(i, chunk));
            let mut bad = chunk.to_vec();
            bad[0] ^= 1;
            assert!(!read.chunk_ok(i, &bad));
            assert!(!read.chunk_ok(i, &chunk[1..]));
        }
        assert!(!dir.path().join("b.partial").exists());
    }

    #[test]
    fn a_changed_or_cut_payload_is_caught() {
        let dir = tempfile::tempdir().unwrap();
        let key = ReleaseKey::generate().unwrap();
        let images = files(dir.path(), &[("rootfs", 9000)]);
        let out = dir.path().join("b.cbx");
        pack("rpi4_64", "1", 0, &images, 4096, &key, &out).unwrap();
        let whole = std::fs::read(&out).unwrap();
        let mut flipped = whole.clone();
        *flipped.last_mut().unwrap() ^= 0x80;
        let mut r = &flipped[..];
        let b = Bundle::read_head(&mut r).unwrap();
        assert_eq!(
            b.check_payload(&mut r, |_| {}).unwrap_err(),
            "chunk 2 does not match its hash"
        );
        let mut r = &whole[..whole.len() - 1];
        let b = Bundle::read_head(&mut r).unwrap();
        assert!(b
            .check_payload(&mut r, |_| {})
            .unwrap_err()
            .starts_with("payload ends in chunk 2"));
        let mut r = &b"cambox-bundle-v2\n...."[..];
        assert!(Bundle::read_head(&mut r)
            .unwrap_err()
            .starts_with("not a cambox bundle"));
    }

    #[test]
    fn manifests_of_odd_shape_are_refused_before_anything_else() {
        let good = Manifest {
            board: "rpi5".into(),
            version: "1.0".into(),
            created: 0,
            chunk_size: 4096,
            images: vec![Image {
                name: "rootfs".into(),
                size: 5000,
                sha256: "00".repeat(32),
            }],
            chunks: vec!["11".repeat(32), "22".repeat(32)],
        };
        good.check_shape().unwrap();
        let cases: Vec<(Manifest, &str)> = vec![
            (
                Manifest {
                    chunks: vec!["11".repeat(32)],
                    ..good.clone()
                },
                "1 chunk hashes",
            ),
            (
                Manifest {
                    version: "1.0-beta".into(),
                    ..good.clone()
                },
                "not dot-separated",
            ),
            (
                Manifest {
                    board: "../x".into(),
                    ..good.clone()
                },
                "not a board name",
            ),
            (
                Manifest {
                    chunk_size: 1,
                    ..good.clone()
                },
                "out of range",
            ),
            (
                Manifest {
                    images: vec![
                        good.images[0].clone(),
                        Image {
                            name: "boot/../../etc/passwd".into(),
                            size: 0,
                            sha256: "00".repeat(32),
                        },
                    ],
                    ..good.clone()
                },
                "neither rootfs nor boot/",
            ),
            (
                Manifest {
                    images: vec![Image {
                        name: "boot/Image".into(),
                        ..good.images[0].clone()
                    }],
                    ..good.clone()
                },
                "no rootfs image",
            ),
        ];
        for (m, want) in cases {
            let e = m.check_shape().unwrap_err();
            assert!(e.contains(want), "{e} (want {want})");
        }
    }
}
