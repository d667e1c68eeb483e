//! The files a box keeps across power cuts: its node key, and files replaced whole (the
//! imported configuration, Wi-Fi settings, a reset configuration).

use std::path::Path;

use anyhow::Context;
use cambox_mesh::identity::{self, Identity};
use nix::fcntl::{Flock, FlockArg};

pub use cambox_node::files::{remove_durably, write_atomic};

/// Held for as long as `cambox run` runs: the node key's file, locked, so a second box on
/// the same machine cannot start with the same key (two boxes with one key have one node
/// id, and the mesh cannot tell them apart).
#[derive(Debug)]
pub struct KeyClaim {
    _lock: Flock<std::fs::File>,
}

/// Loads the node key like [`load_node_key`] and claims it for this process, refusing a
/// key that another running cambox holds, with the fix in the message.
pub fn claim_node_key(path: &Path) -> anyhow::Result<(Identity, KeyClaim)> {
    let identity = load_node_key(path)?;
    let file = std::fs::File::open(path)
        .with_context(|| format!("cannot open the node key {}", path.display()))?;
    let lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => lock,
        Err((file, nix::errno::Errno::EWOULDBLOCK)) => {
            let holder = lock_holder(&file)
                .map(|pid| format!(" (process {pid})"))
                .unwrap_or_default();
            anyhow::bail!(
                "the node key {} is in use by another cambox running on this machine{holder}. \
                 Two boxes with one key have the same node id and refuse each other. Give \
                 this box a key of its own: --key another.key (made on first start)",
                path.display()
            );
        }
        Err((_, e)) => {
            return Err(e).with_context(|| format!("cannot lock the node key {}", path.display()))
        }
    };
    Ok((identity, KeyClaim { _lock: lock }))
}

/// The process holding a `flock` on `file`, from `/proc/locks` (best effort: only to name
/// it in the message).
fn lock_holder(file: &std::fs::File) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    let inode = file.metadata().ok()?.ino();
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    locks.lines().find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (kind, pid, id) = (f.get(1)?, f.get(4)?, f.get(5)?);
        let ino: u64 = id.rsplit(':').next()?.parse().ok()?;
        (*kind == "FLOCK" && ino == inode).then(|| pid.parse().ok())?
    })
}

/// Loads the node key from `path`, making one (and its directory) on first start.
pub fn load_node_key(path: &Path) -> anyhow::Result<Identity> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create {} for the node key", dir.display()))?;
    }
    // Drawn up front (used only if there is no key yet), so a failing random source is
    // an error here rather than a key made from nothing.
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| anyhow::anyhow!("the OS random source failed: {e}"))?;
    identity::load_or_create(path, || seed).with_context(|| format!("node key {}", path.display()))
}

/// A private key, readable by its owner only from the moment it exists.
pub fn write_private(path: &Path, pem: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(pem.as_bytes())
        .and_then(|()| f.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}
