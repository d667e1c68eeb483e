//! A node's identity: an Ed25519 key pair whose public key is the [`NodeId`].
//!
//! The id is the key itself, not a hash of it, so anyone holding an id can check a
//! signature without a lookup, and the transport can compare a peer's certificate key
//! with the id it expected byte for byte.
//!
//! Key generation needs randomness and storage needs a file system, neither of which the
//! sans-IO core may touch: [`Identity::from_seed`] takes the 32 random bytes from the
//! caller, and [`load_or_create`] is the one function here that does I/O, for the driver.
//!
//! # Key file, version 1
//!
//! Text, so an operator can see what it is; three lines:
//!
//! ```text
//! cambox-node-key v1
//! seed <64 lowercase hex digits: the RFC 8032 secret key>
//! id <64 lowercase hex digits: the public key derived from it>
//! ```
//!
//! The `id` line is redundant on purpose: a seed damaged on disk would silently give the
//! node a new identity, whereas a mismatch between the two lines is caught on load.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

use crate::hex::{from_hex, to_hex};
use crate::msg::NodeId;

/// First line of a key file; a new format gets a new version.
const MAGIC: &str = "cambox-node-key v1";
/// A valid file is about 170 bytes; anything much larger is not one, and is not read whole.
const MAX_KEY_FILE: u64 = 1024;

/// This node's key pair. Its `Debug` shows the id only, so that logging it never leaks
/// the secret.
#[derive(Clone)]
pub struct Identity {
    key: SigningKey,
}

impl Identity {
    /// The seed must come from a cryptographically secure source (the OS): it is the
    /// whole secret.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self {
            key: SigningKey::from_bytes(&seed),
        }
    }

    pub fn node_id(&self) -> NodeId {
        NodeId(self.key.verifying_key().to_bytes())
    }

    /// The private key as PKCS#8 v1 DER (RFC 8410), the form TLS libraries load, so the
    /// transport's certificate is signed by the node key itself.
    pub fn pkcs8_der(&self) -> Vec<u8> {
        const PREFIX: [u8; 16] = [
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
            0x04, 0x20,
        ];
        let mut der = PREFIX.to_vec();
        der.extend_from_slice(&self.seed());
        der
    }

    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        self.key.sign(msg).to_bytes()
    }

    fn seed(&self) -> [u8; 32] {
        self.key.to_bytes()
    }
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("node_id", &self.node_id())
            .finish_non_exhaustive()
    }
}

/// Whether `sig` is `node`'s signature of `msg`. Strict verification: it refuses weak
/// (small-order) keys and non-canonical signatures, so one message cannot carry two valid
/// signatures and no key signs for everyone.
pub fn verify(node: &NodeId, msg: &[u8], sig: &[u8; 64]) -> bool {
    let Ok(key) = VerifyingKey::from_bytes(&node.0) else {
        return false;
    };
    key.verify_strict(msg, &Signature::from_bytes(sig)).is_ok()
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("key file {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Never answered by making a new key: the node would silently become someone else.
    #[error("key file {} is corrupt ({reason}); fix or remove it by hand", path.display())]
    Corrupt { path: PathBuf, reason: String },
}

// ---------------------------------------------------------------------------------------
// The one I/O helper, for the driver. Nothing else in this crate touches the file system.

/// Loads the node's key from `path`, or, if there is no file, makes one from
/// `fresh_seed()` and stores it: the node keeps its id across reboots.
///
/// The file is written to a temporary name, synced, renamed into place and the directory
/// synced, so that a power cut leaves either no key or a whole one; it is readable by its
/// owner only (0600). An existing file that does not parse is an error, never replaced.
pub fn load_or_create(
    path: &Path,
    fresh_seed: impl FnOnce() -> [u8; 32],
) -> Result<Identity, IdentityError> {
    match File::open(path) {
        Ok(file) => load(path, file),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let identity = Identity::from_seed(fresh_seed());
            store(path, &identity).map_err(|source| io_error(path, source))?;
            Ok(identity)
        }
        Err(source) => Err(io_error(path, source)),
    }
}

fn io_error(path: &Path, source: io::Error) -> IdentityError {
    IdentityError::Io {
        path: path.to_owned(),
        source,
    }
}

fn load(path: &Path, file: File) -> Result<Identity, IdentityError> {
    let mut text = String::new();
    let read = file.take(MAX_KEY_FILE + 1).read_to_string(&mut text);
    let corrupt = |reason: String| IdentityError::Corrupt {
        path: path.to_owned(),
        reason,
    };
    match read {
        Ok(n) if n as u64 > MAX_KEY_FILE => Err(corrupt(format!("over {MAX_KEY_FILE} bytes"))),
        Ok(_) => parse(&text).map_err(corrupt),
        Err(e) if e.kind() == io::ErrorKind::InvalidData => Err(corrupt("not UTF-8 text".into())),
        Err(source) => Err(io_error(path, source)),
    }
}

fn parse(text: &str) -> Result<Identity, String> {
    let mut lines = text.lines();
    match lines.next() {
        Some(MAGIC) => {}
        Some(other) if other.starts_with("cambox-node-key ") => {
            return Err(format!("unsupported format `{other}`, expected `{MAGIC}`"))
        }
        _ => return Err(format!("first line is not `{MAGIC}`")),
    }
    let seed = hex_field(lines.next(), "seed")?;
    let id = hex_field(lines.next(), "id")?;
    if lines.next().is_some() {
        return Err("unexpected lines after `id`".into());
    }
    let identity = Identity::from_seed(seed);
    if identity.node_id().0 != id {
        return Err("the seed does not give the id stored with it".into());
    }
    Ok(identity)
}

fn hex_field(line: Option<&str>, name: &str) -> Result<[u8; 32], String> {
    let value = line
        .and_then(|l| l.strip_prefix(name))
        .and_then(|l| l.strip_prefix(' '))
        .ok_or_else(|| format!("missing `{name}` line"))?;
    from_hex(value).ok_or_else(|| format!("`{name}` is not 64 hex digits"))
}

fn format_key_file(identity: &Identity) -> String {
    format!(
        "{MAGIC}\nseed {}\nid {}\n",
        to_hex(&identity.seed()),
        to_hex(&identity.node_id().0)
    )
}

fn store(path: &Path, identity: &Identity) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    fs::create_dir_all(dir)?;
    let tmp = temp_path(path);
    let written = write_synced(&tmp, format_key_file(identity).as_bytes())
        .and_then(|()| fs::rename(&tmp, path));
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written?;
    File::open(dir)?.sync_all()
}

/// Beside the target (a rename cannot cross file systems), hidden, and per process so
/// that two starts cannot write into the same temporary file.
fn temp_path(path: &Path) -> PathBuf {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    path.with_file_name(format!(".{name}.tmp.{}", std::process::id()))
}

fn write_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 8032, section 7.1, test 1: pins what "seed" means.
    const RFC_SEED: &str = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
    const RFC_PUBLIC: &str = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
    const RFC_SIG_EMPTY: &str = "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065\
                                 224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24\
                                 655141438e7a100b";

    fn seed(b: u8) -> [u8; 32] {
        [b; 32]
    }

    #[test]
    fn seed_is_the_rfc_8032_secret_key() {
        let id = Identity::from_seed(from_hex(RFC_SEED).unwrap());
        assert_eq!(to_hex(&id.node_id().0), RFC_PUBLIC);
        assert_eq!(to_hex(&id.sign(b"")), RFC_SIG_EMPTY);
    }

    #[test]
    fn sign_then_verify() {
        let id = Identity::from_seed(seed(1));
        let sig = id.sign(b"hello mesh");
        assert!(verify(&id.node_id(), b"hello mesh", &sig));
        assert!(!verify(&id.node_id(), b"hello mesh!", &sig));
        let mut bent = sig;
        bent[10] ^= 1;
        assert!(!verify(&id.node_id(), b"hello mesh", &bent));
    }

    #[test]
    fn another_key_does_not_verify() {
        let alice = Identity::from_seed(seed(1));
        let bob = Identity::from_seed(seed(2));
        assert_ne!(alice.node_id(), bob.node_id());
        let sig = alice.sign(b"msg");
        assert!(!verify(&bob.node_id(), b"msg", &sig));
    }

    #[test]
    fn ids_that_are_not_keys_verify_nothing() {
        let sig = Identity::from_seed(seed(1)).sign(b"msg");
        // The identity point (small order): strict verification refuses it.
        let mut weak = [0u8; 32];
        weak[0] = 1;
        assert!(!verify(&NodeId(weak), b"msg", &sig));
        assert!(!verify(&NodeId([0xff; 32]), b"msg", &sig));
    }

    #[test]
    fn debug_hides_the_secret() {
        let id = Identity::from_seed(seed(0xab));
        let shown = format!("{id:?}");
        assert!(!shown.contains("abab"), "{shown}");
        assert!(shown.contains(&id.node_id().short()), "{shown}");
    }

    #[test]
    fn creates_once_then_reloads_the_same_id() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/node.key");
        let first = load_or_create(&path, || seed(3)).unwrap();
        assert_eq!(first.node_id(), Identity::from_seed(seed(3)).node_id());
        let again = load_or_create(&path, || panic!("must not make a second key")).unwrap();
        assert_eq!(again.node_id(), first.node_id());
        let names: Vec<_> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["node.key"], "no temporary file left behind");
    }

    #[test]
    fn key_file_is_documented_format() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key");
        load_or_create(&path, || from_hex(RFC_SEED).unwrap()).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            format!("cambox-node-key v1\nseed {RFC_SEED}\nid {RFC_PUBLIC}\n")
        );
    }

    #[cfg(unix)]
    #[test]
    fn key_file_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key");
        load_or_create(&path, || seed(4)).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    fn corrupt_error(contents: &[u8]) -> String {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key");
        fs::write(&path, contents).unwrap();
        let err = load_or_create(&path, || panic!("must not replace a key")).unwrap_err();
        assert!(matches!(err, IdentityError::Corrupt { .. }), "{err:?}");
        let shown = err.to_string();
        assert!(shown.contains(&path.display().to_string()), "{shown}");
        assert_eq!(fs::read(&path).unwrap(), contents, "file left as it was");
        shown
    }

    #[test]
    fn corrupt_files_are_refused_not_replaced() {
        let good = format_key_file(&Identity::from_seed(seed(5)));
        assert!(corrupt_error(b"").contains("first line"));
        assert!(corrupt_error(b"\xff\xfe").contains("UTF-8"));
        assert!(corrupt_error(b"cambox-node-key v2\n").contains("unsupported format"));
        assert!(corrupt_error(good.replace("seed", "sead").as_bytes()).contains("`seed`"));
        assert!(corrupt_error(good.replace("\nid", "\nid 00\nx").as_bytes()).contains("`id`"));
        let flipped = good.replacen("seed 05", "seed 06", 1);
        assert!(corrupt_error(flipped.as_bytes()).contains("does not give the id"));
        assert!(corrupt_error(format!("{good}extra\n").as_bytes()).contains("unexpected"));
        assert!(corrupt_error(&[b'a'; 5000]).contains("over"));
    }

    #[test]
    fn unreadable_path_is_an_io_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let err = load_or_create(dir.path(), || seed(6)).unwrap_err();
        assert!(err.to_string().contains(&dir.path().display().to_string()));
    }
}
