//! `cambox update`: an operator publishes a bundle or its rollout to the mesh through a
//! box; and the box's side of updates that arrive over the mesh (installed when the box
//! is not live and its rollout lets it).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use cambox_node::mesh::updates::{Arrival, UpdateSettings};
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
    /// Publish a signed bundle, or a signed rollout of one, to the mesh through a box
    /// (operators). Every box of the bundle's board that runs an older version fetches
    /// it, peer to peer, each site's uplink carrying it once, and installs it when it is
    /// not live; a rollout (`cambox release rollout`) narrows that to sites or a share of
    /// boxes, or pauses and resumes it.
    Publish {
        /// The bundle (`cambox release pack`, or beside the image from
        /// `scripts/build-image --release-key`), or a rollout of one already published.
        file: PathBuf,
        /// A rollout to publish right after the bundle, so that no box starts installing
        /// before it hears which boxes the bundle is for.
        #[arg(long, value_name = "FILE")]
        rollout: Option<PathBuf>,
        /// Publish at this registry (its URL) instead of a box: it checks and keeps the
        /// bundle and hands it to the mesh through a couple of boxes (`cambox registry
        /// --release-keys --updates`).
        #[arg(long, value_name = "URL")]
        registry: Option<String>,
        #[command(flatten)]
        target: BoxAddr,
    },
}

pub async fn run(args: UpdateArgs) -> anyhow::Result<()> {
    match args.command {
        UpdateCommand::Publish {
            file,
            rollout,
            registry,
            target,
        } => {
            let at = match registry {
                Some(url) => Target::Registry(url),
                None => Target::Box(target),
            };
            let body =
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            if body.starts_with(cambox_update::rollout::MAGIC) {
                anyhow::ensure!(
                    rollout.is_none(),
                    "{} is a rollout; --rollout goes with a bundle",
                    file.display()
                );
                return at.publish_rollout(body).await;
            }
            let rollout = rollout
                .map(|r| std::fs::read(&r).with_context(|| format!("cannot read {}", r.display())))
                .transpose()?;
            at.publish_bundle(body).await?;
            match rollout {
                Some(r) => at.publish_rollout(r).await,
                None => Ok(()),
            }
        }
    }
}

/// Where an operator publishes: a box of the mesh, or the registry.
enum Target {
    Box(BoxAddr),
    Registry(String),
}

impl Target {
    fn name(&self) -> &str {
        match self {
            Target::Box(b) => &b.http,
            Target::Registry(url) => url,
        }
    }

    async fn publish_bundle(&self, body: Vec<u8>) -> anyhow::Result<()> {
        let json = match self {
            Target::Box(b) => send(b.url("/api/v1/update/publish"), body, Some(b), 202).await?,
            Target::Registry(url) => {
                send(registry_url(url, "/api/v1/updates"), body, None, 201).await?
            }
        };
        println!(
            "bundle {} published through {}: boxes of its board fetch it now",
            json["bundle"].as_str().unwrap_or("?"),
            self.name()
        );
        Ok(())
    }

    async fn publish_rollout(&self, doc: Vec<u8>) -> anyhow::Result<()> {
        let json = match self {
            Target::Box(b) => send(b.url("/api/v1/update/rollout"), doc, Some(b), 202).await?,
            Target::Registry(url) => {
                let plan = cambox_update::Rollout::from_bytes(&doc)
                    .map_err(|e| anyhow::anyhow!("not a rollout: {e}"))?
                    .plan;
                let path = format!("/api/v1/updates/{}/rollout", plan.bundle);
                send(registry_url(url, &path), doc, None, 200).await?
            }
        };
        println!(
            "rollout of bundle {} ({}) {} through {}",
            json["bundle"].as_str().unwrap_or("?"),
            json["rollout"].as_str().unwrap_or("?"),
            if json["newer"].as_bool() == Some(false) {
                "not published: it has it or a newer one already"
            } else {
                "published"
            },
            self.name()
        );
        Ok(())
    }
}

fn registry_url(base: &str, path: &str) -> String {
    format!("{}{path}", base.trim_end_matches('/'))
}

/// Sends `body` to a box (POST, with the operator's session) or the registry (PUT); its
/// JSON answer, or its reason for refusing.
async fn send(
    url: String,
    body: Vec<u8>,
    session: Option<&BoxAddr>,
    ok: u16,
) -> anyhow::Result<serde_json::Value> {
    let client = cambox_node::client::ApiClient::from_env()?;
    let sent = match session {
        Some(b) => {
            client
                .post_bytes(&url, body, b.session.token.as_deref())
                .await
        }
        None => client.put_bytes(&url, body).await,
    };
    let (status, answer) = sent.with_context(|| format!("cannot reach {url}"))?;
    let json: serde_json::Value = serde_json::from_slice(&answer).unwrap_or_default();
    if status != ok {
        anyhow::bail!(
            "{url} answered {status}: {}",
            json["error"].as_str().unwrap_or("(no reason given)")
        );
    }
    Ok(json)
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
    // Off an image, with no keys named, updates are simply off.
    if cfg.release_keys.is_none() && std::fs::metadata(&path).is_err() {
        return None;
    }
    let keys = match ReleasePublic::load(&path) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("cambox: updates over the mesh are off: {e}");
            return None;
        }
    };
    let (ready, arrived) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(install_arrivals(
        station.clone(),
        key_dir.to_path_buf(),
        arrived,
    ));
    let (offers, mut seen) = tokio::sync::watch::channel(Vec::new());
    let st = station.clone();
    tokio::spawn(async move {
        while seen.changed().await.is_ok() {
            let now = seen.borrow_and_update().clone();
            st.set_offers(now);
        }
    });
    Some(UpdateSettings {
        keys,
        board: station.release().map(|r| r.board.clone()),
        running: station.release().map(|r| r.version.clone()),
        dir: key_dir.join("bundles"),
        site: station.settings.site.clone(),
        ready,
        offers,
    })
}

/// Installs each bundle the mesh completed for this box and its rollout lets it install,
/// once the box is not live, and reboots to try it; a paused rollout holds a bundle that
/// waits for the box to stop being live.
async fn install_arrivals(
    station: Arc<Station>,
    data: PathBuf,
    mut arrived: tokio::sync::mpsc::UnboundedReceiver<Arrival>,
) {
    let mut pending: Option<PathBuf> = None;
    loop {
        let told = match &pending {
            None => arrived.recv().await,
            Some(path) => tokio::select! {
                told = arrived.recv() => told,
                go = station.until_update_may_start() => {
                    if !go {
                        return;
                    }
                    install(&station, &data, path.clone()).await;
                    pending = None;
                    continue;
                }
            },
        };
        match told {
            Some(Arrival::Install(path)) => {
                if station.is_live() {
                    tracing::info!(
                        "an update is here; it is installed when the box is no longer live \
                         (or at once: POST /api/v1/update/now)"
                    );
                }
                pending = Some(path);
            }
            Some(Arrival::Hold) => {
                if pending.take().is_some() {
                    tracing::info!("the update's rollout was paused or narrowed: it waits");
                }
            }
            None => return,
        }
    }
}

async fn install(station: &Arc<Station>, data: &Path, path: PathBuf) {
    let facts = match Facts::of_this_box() {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(bundle = %path.display(), "an update arrived, and this box cannot install it: {e:#}");
            return;
        }
    };
    let (st, data) = (station.clone(), data.to_path_buf());
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
