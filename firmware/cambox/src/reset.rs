//! What a very long press (15 s) does: the configuration goes back to the defaults and
//! the box starts again, keeping its node key (its identity) and nothing lost: the old
//! file is kept beside the new one.

use std::path::{Path, PathBuf};

/// The reset for a box started with `config` (`--config FILE`, if any).
pub fn action(config: &Option<PathBuf>) -> cambox_node::board::runner::ResetAction {
    let config = config.clone();
    Box::new(move || {
        let Some(path) = &config else {
            tracing::warn!("button: reset asked for, but this box runs without a config file");
            return;
        };
        match reset_file(path, unix_now()) {
            Ok(kept) => {
                tracing::warn!(
                    "button: configuration reset; the old one is {}; starting again",
                    kept.display()
                );
                restart();
            }
            Err(e) => tracing::error!("button: cannot reset {}: {e:#}", path.display()),
        }
    })
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Moves `path` aside to `path.reset-<time>` and writes a config holding only its `key`
/// line (so the node keeps its id), replaced atomically: a power cut leaves either the
/// old or the new file, never half of one.
pub fn reset_file(path: &Path, now: u64) -> anyhow::Result<PathBuf> {
    use anyhow::Context;
    let old =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let key_line = old
        .lines()
        .find(|l| l.trim_start().starts_with("key") && l.contains('='));
    let mut fresh = format!(
        "# Reset to the defaults by a 15 s press of the button; the previous file is\n\
         # {}.reset-{now}\n",
        path.file_name().map_or("".into(), |n| n.to_string_lossy())
    );
    if let Some(k) = key_line {
        fresh.push_str(k.trim());
        fresh.push('\n');
    }
    let kept = PathBuf::from(format!("{}.reset-{now}", path.display()));
    std::fs::hard_link(path, &kept)
        .or_else(|_| std::fs::copy(path, &kept).map(|_| ()))
        .with_context(|| format!("cannot keep the old file as {}", kept.display()))?;
    crate::box_files::write_atomic(path, fresh.as_bytes())?;
    Ok(kept)
}

/// Starts this program again in place (same PID, same arguments), so it reads the reset
/// file; under an init that restarts it, exiting would do too.
fn restart() {
    use std::os::unix::process::CommandExt;
    let Ok(exe) = std::env::current_exe() else {
        std::process::exit(75);
    };
    let err = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .exec();
    tracing::error!("cannot start again: {err}; exiting");
    std::process::exit(75);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_keeps_the_key_and_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cambox.toml");
        let old = "site = \"hq\"\nkey = \"/data/node.key\"\nregistry = [\"http://r:8090\"]\n";
        std::fs::write(&path, old).unwrap();
        let kept = reset_file(&path, 1234).unwrap();
        assert_eq!(kept, dir.path().join("cambox.toml.reset-1234"));
        assert_eq!(std::fs::read_to_string(&kept).unwrap(), old);
        let fresh = std::fs::read_to_string(&path).unwrap();
        assert!(fresh.contains("key = \"/data/node.key\"\n"), "{fresh}");
        assert!(!fresh.contains("site"), "{fresh}");
        // The new file is a valid config: only the key is set.
        let cfg = crate::config::load_file(&path).unwrap();
        assert_eq!(cfg.key, Some(PathBuf::from("/data/node.key")));
        assert_eq!(cfg.site, None);
        assert!(!dir.path().join("cambox.toml.new").exists());
    }

    #[test]
    fn a_missing_file_is_an_error_and_nothing_changes() {
        let dir = tempfile::tempdir().unwrap();
        let e = reset_file(&dir.path().join("nope.toml"), 1).unwrap_err();
        assert!(format!("{e:#}").contains("cannot read"), "{e:#}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
