//! `cambox release`: the company's release key and update bundles, on the machine that
//! builds releases. The key's directory holds `release.key` (readable by its owner only)
//! and `release.pub`, which every image carries (`/etc/cambox/release.pub`).

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use cambox_update::bundle::{self, Bundle, DEFAULT_CHUNK};
use cambox_update::{ReleaseKey, ReleasePublic};

use crate::box_files::{write_atomic, write_private};

#[derive(Debug, clap::Args)]
pub struct ReleaseArgs {
    #[command(subcommand)]
    command: ReleaseCommand,
}

#[derive(Debug, clap::Subcommand)]
enum ReleaseCommand {
    /// Make a release key in a new directory. Keep it where releases are built and signed,
    /// apart from the mesh CA; build images with its release.pub.
    Init {
        /// The key's directory (made; must not hold a key yet).
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
    },
    /// Pack and sign an update bundle from a built image's root file system and boot
    /// files (`scripts/build-image` does this when given the key).
    Pack {
        /// The release key (release.key in the key's directory).
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// The board it is for: rpi4_64, rpi5, zero2w_64 or qemu_aarch64.
        #[arg(long)]
        board: String,
        /// Its version: dot-separated whole numbers, newer than what the boxes run.
        #[arg(long)]
        version: String,
        /// The root file system image (rootfs.ext4).
        #[arg(long, value_name = "FILE")]
        rootfs: PathBuf,
        /// A directory of the slot's boot files (kernel, device trees, overlays,
        /// cmdline.txt), taken whole.
        #[arg(long, value_name = "DIR")]
        boot_dir: Option<PathBuf>,
        /// Where to write the bundle.
        #[arg(long, short, value_name = "FILE")]
        out: PathBuf,
    },
    /// Sign a rollout of a bundle: the sites and the share of boxes that install it, or a
    /// pause. Publish it with `cambox update publish`; a newer rollout of the same bundle
    /// replaces the one before (widen it, resume it).
    Rollout {
        /// The release key (release.key in the key's directory).
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// The bundle (its file, or its 16-hex-digit id).
        #[arg(long)]
        bundle: String,
        /// The percentage of boxes that install it, by node id: the same boxes go first
        /// in every release, and a wider share keeps them.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u8).range(0..=100))]
        share: u8,
        /// A site that gets it (repeat for more); none named: every site.
        #[arg(long = "site", value_name = "SITE")]
        sites: Vec<String>,
        /// Boxes that have not started installing it wait until a rollout resumes it.
        #[arg(long)]
        pause: bool,
        /// Where to write the signed rollout.
        #[arg(long, short, value_name = "FILE")]
        out: PathBuf,
    },
    /// What a bundle holds, whether every chunk checks, and whether a release key signed
    /// it.
    Inspect {
        bundle: PathBuf,
        /// A release.pub to check the signature against.
        #[arg(long, value_name = "FILE")]
        trust: Option<PathBuf>,
    },
}

pub fn run(args: ReleaseArgs) -> anyhow::Result<()> {
    match args.command {
        ReleaseCommand::Init { dir } => init(&dir),
        ReleaseCommand::Pack {
            key,
            board,
            version,
            rootfs,
            boot_dir,
            out,
        } => pack(&key, &board, &version, rootfs, boot_dir.as_deref(), &out),
        ReleaseCommand::Rollout {
            key,
            bundle,
            share,
            sites,
            pause,
            out,
        } => rollout(&key, &bundle, share, sites, pause, &out),
        ReleaseCommand::Inspect { bundle, trust } => inspect(&bundle, trust.as_deref()),
    }
}

fn rollout(
    key: &Path,
    bundle: &str,
    share: u8,
    sites: Vec<String>,
    paused: bool,
    out: &Path,
) -> anyhow::Result<()> {
    let key = read_key(key)?;
    let is_id = bundle.len() == 16 && bundle.bytes().all(|b| b.is_ascii_hexdigit());
    let bundle = if is_id {
        bundle.to_ascii_lowercase()
    } else {
        let file = std::fs::File::open(bundle).with_context(|| {
            format!("cannot open {bundle} (--bundle is a bundle file or its 16-hex-digit id)")
        })?;
        Bundle::read_head(&mut std::io::BufReader::new(file))
            .map_err(|e| anyhow::anyhow!("{bundle}: {e}"))?
            .id()
    };
    let plan = cambox_update::Plan {
        bundle,
        // Later plans win; a clock behind the last signer's loses to it, so say so below.
        issued: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
        paused,
        share,
        sites,
    };
    let signed = cambox_update::Rollout::sign(plan, &key).map_err(|e| anyhow::anyhow!("{e}"))?;
    write_atomic(out, &signed.to_bytes())?;
    println!(
        "rollout of bundle {}: {}, signed at {} ms; publish it with: cambox update publish {}",
        signed.plan.bundle,
        signed.plan.describe(),
        signed.plan.issued,
        out.display()
    );
    Ok(())
}

fn init(dir: &Path) -> anyhow::Result<()> {
    let key_path = dir.join("release.key");
    if key_path.exists() {
        anyhow::bail!(
            "{} holds a release key already; boxes trust it: keep it, or make the new one \
             elsewhere and ship both public keys for a while",
            dir.display()
        );
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let key = ReleaseKey::generate().map_err(anyhow::Error::msg)?;
    write_private(&key_path, &key.to_pem())?;
    write_atomic(&dir.join("release.pub"), key.public().to_text().as_bytes())
        .with_context(|| format!("cannot write release.pub in {}", dir.display()))?;
    println!(
        "release key {} in {}: build images with its release.pub (scripts/build-image \
         --release-key {}), keep release.key to yourself",
        key.public().id(),
        dir.display(),
        key_path.display()
    );
    Ok(())
}

/// Every file under `dir`, as (path within it with `/`, file), sorted.
fn files_under(dir: &Path) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in
            std::fs::read_dir(&d).with_context(|| format!("cannot read {}", d.display()))?
        {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let rel = path.strip_prefix(dir)?.to_string_lossy().replace('\\', "/");
                out.push((rel, path));
            }
        }
    }
    out.sort();
    Ok(out)
}

fn read_key(path: &Path) -> anyhow::Result<ReleaseKey> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the release key {}", path.display()))?;
    ReleaseKey::from_pem(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

fn pack(
    key: &Path,
    board: &str,
    version: &str,
    rootfs: PathBuf,
    boot_dir: Option<&Path>,
    out: &Path,
) -> anyhow::Result<()> {
    let key = read_key(key)?;
    let mut images = Vec::new();
    if let Some(dir) = boot_dir {
        for (rel, path) in files_under(dir)? {
            images.push((format!("boot/{rel}"), path));
        }
    }
    images.push(("rootfs".to_string(), rootfs));
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let b = bundle::pack(board, version, created, &images, DEFAULT_CHUNK, &key, out)
        .map_err(|e| anyhow::anyhow!("cannot pack {}: {e}", out.display()))?;
    println!(
        "bundle {} for {board}, version {version}: {} bytes in {} chunks, {} images, signed \
         by release key {}: {}",
        b.id(),
        b.manifest.payload_len(),
        b.manifest.chunks.len(),
        b.manifest.images.len(),
        key.public().id(),
        out.display()
    );
    Ok(())
}

fn inspect(path: &Path, trust: Option<&Path>) -> anyhow::Result<()> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut r = std::io::BufReader::new(file);
    let b = Bundle::read_head(&mut r).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let m = &b.manifest;
    println!(
        "bundle {}: board {}, version {}",
        b.id(),
        m.board,
        m.version
    );
    for image in &m.images {
        println!("  {:>12} bytes  {}", image.size, image.name);
    }
    b.check_payload(&mut r, |_| {})
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    println!(
        "  all {} chunks and {} images check",
        m.chunks.len(),
        m.images.len()
    );
    if let Some(trust) = trust {
        let keys = ReleasePublic::load(trust).map_err(anyhow::Error::msg)?;
        match b.signer(&keys) {
            Some(k) => println!("  signed by release key {}", k.id()),
            None => anyhow::bail!(
                "{} is not signed by a key in {}",
                path.display(),
                trust.display()
            ),
        }
    }
    Ok(())
}
