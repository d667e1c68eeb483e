//! `cambox update`: an operator publishes a bundle to the mesh through a box; and the box's
//! side of updates that arrive over the mesh (installed when the box is not live).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use cambox_node::mesh::updates::UpdateSettings;
use cambox_node::station::Station;
use cambox_node::update::apply::{self, Facts};
use cambox_update::ReleasePublic;

use crate::config::RunConfig;
use crate::mesh_cli::BoxAddr;

#[derive(Debug, clap::Args)]
pub struct UpdateArgs {
    #[command(subcommand)]
    command: UpdateCommand,
}

#[derive(Debug, clap::Subcommand)]
enum UpdateCommand {
    /// Publish a signed bundle to the mesh through a box (operators): every box of its
    /// board that runs an older version fetches it, peer to peer, each site's uplink
    /// carrying it once, and installs it when it is not live.
    Publish {
        /// The bundle (`cambox release pack`, or beside the image from
        /// `scripts/build-image --release-key`).
        bundle: PathBuf,
        #[command(flatten)]
        target: BoxAddr,
    },
}

pub async fn run(args: UpdateArgs) -> anyhow::Result<()> {
    match args.command {
        UpdateCommand::Publish { bundle, target } => {
            let body = std::fs::read(&bundle)
                .with_context(|| format!("cannot read {}", bundle.display()))?;
            let client = cambox_node::client::ApiClient::from_env()?;
            let url = target.url("/api/v1/update/publish");
            let (status, answer) = client
                .post_bytes(&url, body, target.session.token.as_deref())
                .await
                .with_context(|| format!("cannot reach {url}"))?;
            let json: serde_json::Value = serde_json::from_slice(&answer).unwrap_or_default();
            if status != 202 {
                anyhow::bail!(
                    "{url} answered {status}: {}",
                    json["error"].as_str().unwrap_or("(no reason given)")
                );
            }
            println!(
                "bundle {} published through {}: boxes of its board fetch it now",
                json["bundle"].as_str().unwrap_or("?"),
                target.http
            );
            Ok(())
        }
    }
}

/// Updates over the mesh for `cambox run`: on when the release keys can be read (the
/// image's, or `release_keys`); bundles are kept in `bundles/` beside the node key.
pub fn mesh_settings(
    cfg: &RunConfig,
    station: &Arc<Station>,
    key_dir: &Path,
) -> Option<UpdateSettings> {
    let path = cfg
        .release_keys
        .clone()
        .unwrap_or_else(|| PathBuf::from(cambox_node::update::RELEASE_KEYS));
    let keys = match std::fs::read_to_string(&path) {
        Ok(text) => match ReleasePublic::parse_all(&text) {
            Ok(k) => k,
            Err(e) => {
                eprintln!(
                    "cambox: updates over the mesh are off: {}: {e}",
                    path.display()
                );
                return None;
            }
        },
        Err(e) => {
            if cfg.release_keys.is_some() {
                eprintln!(
                    "cambox: updates over the mesh are off: {}: {e}",
                    path.display()
                );
            }
            return None;
        }
    };
    let (ready, arrived) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(install_arrivals(
        station.clone(),
        key_dir.to_path_buf(),
        arrived,
    ));
    Some(UpdateSettings {
        keys,
        board: station.release().map(|r| r.board.clone()),
        running: station.release().map(|r| r.version.clone()),
        dir: key_dir.join("bundles"),
        ready,
    })
}

/// Installs each bundle the mesh completed for this box, once the box is not live, and
/// reboots to try it.
async fn install_arrivals(
    station: Arc<Station>,
    data: PathBuf,
    mut arrived: tokio::sync::mpsc::UnboundedReceiver<PathBuf>,
) {
    while let Some(path) = arrived.recv().await {
        if station.is_live() {
            tracing::info!("an update is here; it is installed when the box is no longer live");
        }
        if !station.until_not_live().await {
            return;
        }
        let facts = match Facts::of_this_box() {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(bundle = %path.display(), "an update arrived, and this box cannot install it: {e:#}");
                continue;
            }
        };
        let (st, data) = (station.clone(), data.clone());
        let done = tokio::task::spawn_blocking(move || {
            let record = apply::install_file(&facts, &path, &data, false, |_| {})?;
            st.set_update(Some(record.clone()));
            apply::reboot_to_try(&facts, &record, &data)
        })
        .await;
        match done {
            Ok(Err(e)) => tracing::warn!("cannot install the update from the mesh: {e:#}"),
            Err(e) => tracing::warn!("cannot install the update from the mesh: {e}"),
            Ok(Ok(())) => {}
        }
    }
}
