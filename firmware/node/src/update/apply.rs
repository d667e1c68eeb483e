//! Installing a bundle file on this box and rebooting to try it. Root only, on a cambox
//! image; the logic is `cambox_update::install`'s, tested without a board.

use std::io::BufReader;
use std::path::{Path, PathBuf};

use anyhow::Context;
use cambox_update::install::install;
use cambox_update::slots::{Card, Slot};
use cambox_update::{Bundle, Policy, ReleasePublic};
use nix::mount::{mount, MsFlags};

use super::{detect_card, now_secs, Record, Release, TryBoot, RELEASE_FILE, RELEASE_KEYS};

/// What this box is, for updates.
#[derive(Debug, Clone)]
pub struct Facts {
    pub release: Release,
    pub keys: Vec<ReleasePublic>,
    pub card: Card,
    pub booted: Slot,
}

/// Where the record of the last update lives.
pub fn record_path(data: &Path) -> PathBuf {
    data.join("update.json")
}

impl Facts {
    /// From the image's files and the kernel command line; an error on a machine that is
    /// not a cambox image with two slots, saying which.
    pub fn of_this_box() -> anyhow::Result<Facts> {
        let release = Release::load(Path::new(RELEASE_FILE))?;
        let keys = ReleasePublic::load(Path::new(RELEASE_KEYS)).map_err(anyhow::Error::msg)?;
        let cmdline = std::fs::read_to_string("/proc/cmdline").context("/proc/cmdline")?;
        let (card, booted) = detect_card(&cmdline, PathBuf::from("/boot"))?;
        Ok(Facts {
            release,
            keys,
            card,
            booted,
        })
    }

    pub fn policy(&self) -> Policy {
        Policy {
            board: self.release.board.clone(),
            running: self.release.version.clone(),
            keys: self.keys.clone(),
        }
    }
}

/// The boot partition mounted read-write while this lives (it is read-only otherwise).
struct Writable<'a>(&'a Path);

impl<'a> Writable<'a> {
    fn new(boot: &'a Path) -> anyhow::Result<Self> {
        remount(boot, false).with_context(|| {
            format!("cannot mount {} read-write to write a slot", boot.display())
        })?;
        Ok(Writable(boot))
    }
}

impl Drop for Writable<'_> {
    fn drop(&mut self) {
        if let Err(e) = remount(self.0, true) {
            tracing::warn!("cannot mount {} read-only again: {e}", self.0.display());
        }
    }
}

fn remount(path: &Path, read_only: bool) -> nix::Result<()> {
    let mut flags =
        MsFlags::MS_REMOUNT | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV | MsFlags::MS_NOSUID;
    if read_only {
        flags |= MsFlags::MS_RDONLY;
    }
    mount(None::<&str>, path, None::<&str>, flags, None::<&str>)
}

/// Checks and installs the bundle at `path` into the other slot and records the try;
/// `progress` hears the bytes written. The box still runs the old slot afterwards:
/// [`reboot_to_try`] makes the try.
pub fn install_file(
    facts: &Facts,
    path: &Path,
    data: &Path,
    force: bool,
    progress: impl FnMut(u64),
) -> anyhow::Result<Record> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut r = BufReader::new(file);
    let bundle =
        Bundle::read_head(&mut r).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let installed = {
        let _rw = Writable::new(&facts.card.boot)?;
        install(&bundle, r, &facts.card, &facts.policy(), force, progress)?
    };
    let record = Record {
        state: "installed".into(),
        bundle: installed.bundle,
        version: installed.version,
        from: facts.release.version.to_string(),
        slot: installed.slot,
        reason: None,
        at: now_secs(),
    };
    record.save(&record_path(data))?;
    Ok(record)
}

/// Reboots into the slot `tryboot.txt` names, once: the firmware clears its flag before
/// it starts the kernel, so any failure after brings back the default slot. The record
/// says `trying` from here on.
pub fn reboot_to_try(facts: &Facts, record: &Record, data: &Path) -> anyhow::Result<()> {
    Record {
        state: "trying".into(),
        at: now_secs(),
        ..record.clone()
    }
    .save(&record_path(data))?;
    if facts.release.tryboot == TryBoot::FlagFile {
        let _rw = Writable::new(&facts.card.boot)?;
        let flag = facts.card.boot.join("TRYBOOT");
        crate::files::write_atomic(&flag, b"")?;
    }
    nix::unistd::sync();
    match facts.release.tryboot {
        TryBoot::Firmware => firmware_tryboot(),
        TryBoot::FlagFile => reboot(),
    }
}

/// An ordinary reboot (the default slot comes back).
pub fn reboot() -> anyhow::Result<()> {
    nix::unistd::sync();
    nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_AUTOBOOT)
        .map(|_| ())
        .context("reboot")
}

/// The reboot call with the argument the Raspberry Pi firmware driver passes on as its
/// one-shot `tryboot` flag (`reboot "0 tryboot"` in Raspberry Pi OS). nix has no call with
/// an argument, so this is the one raw system call in the box.
#[allow(unsafe_code)]
fn firmware_tryboot() -> anyhow::Result<()> {
    let arg = c"0 tryboot";
    // SAFETY: reboot(2) with LINUX_REBOOT_CMD_RESTART2 reads a NUL-terminated string from
    // the pointer; `arg` is one and lives for the call. It returns only on failure.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_reboot,
            libc::LINUX_REBOOT_MAGIC1,
            libc::LINUX_REBOOT_MAGIC2,
            libc::LINUX_REBOOT_CMD_RESTART2,
            arg.as_ptr(),
        )
    };
    Err(std::io::Error::last_os_error()).with_context(|| format!("reboot to try (returned {rc})"))
}

/// Makes the slot that runs the default, with the boot partition writable meanwhile.
pub fn commit(facts: &Facts, slot: Slot) -> anyhow::Result<()> {
    let _rw = Writable::new(&facts.card.boot)?;
    facts.card.commit(slot)?;
    // The try's config is of no use now; a stale one is never read without the flag.
    let _ = std::fs::remove_file(facts.card.boot.join("tryboot.txt"));
    Ok(())
}
