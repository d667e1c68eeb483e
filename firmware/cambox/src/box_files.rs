//! The files a box keeps across power cuts: its node key, and files replaced whole (the
//! imported configuration, Wi-Fi settings, a reset configuration).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use cambox_mesh::identity::{self, Identity};

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

/// Replaces `path` with `bytes` so that a power cut leaves the old or the new file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = PathBuf::from(format!("{}.new", path.display()));
    let mut f =
        std::fs::File::create(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot replace {}", path.display()))?;
    sync_dir(path)
}

pub fn remove_durably(path: &Path) -> anyhow::Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => sync_dir(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot remove {}", path.display())),
    }
}

fn sync_dir(path: &Path) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("cannot sync {}", dir.display()))
}
