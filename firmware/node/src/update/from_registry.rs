//! Updates published at the registry reach the mesh through this box when the registry
//! names it a seed: it fetches the bundle once, checks it, and publishes it to its
//! neighbours as if an operator had published it here. A box that holds the bundle
//! already does nothing; a box whose offer has an older rollout than the registry's
//! takes the newer one into the mesh.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cambox_registry::updates::UpdateRef;
use tokio::io::AsyncWriteExt;

use crate::client::ApiClient;
use crate::mesh::Mesh;
use crate::station::Station;

/// Bundles this box is fetching from the registry now (None), or failed to seed (when).
pub type Seeding = Arc<Mutex<BTreeMap<String, Option<Instant>>>>;

/// A seed that failed (no release keys, a full disk, a broken fetch) waits this long
/// before it fetches again: the registry names another seed meanwhile.
const RETRY_AFTER: Duration = Duration::from_secs(600);

/// Acts on the registry's list of bundles from one registration reply.
pub async fn follow(
    client: &ApiClient,
    base: &str,
    mesh: &Mesh,
    station: &Arc<Station>,
    refs: &[UpdateRef],
    seeding: &Seeding,
) {
    let offers = station.offers();
    for r in refs {
        match offers.iter().find(|o| o.bundle == r.bundle) {
            Some(held) if r.rollout > held.rollout_issued => {
                take_rollout(client, base, mesh, &r.bundle).await;
            }
            Some(_) => {}
            // A box without release keys could not publish it: another is asked.
            None if r.seed && mesh.takes_updates => {
                let Some(dir) = station.update_dir.get() else {
                    continue;
                };
                {
                    let mut seeding = lock(seeding);
                    let busy = match seeding.get(&r.bundle) {
                        Some(None) => true,
                        Some(Some(failed)) => failed.elapsed() < RETRY_AFTER,
                        None => false,
                    };
                    if busy {
                        continue;
                    }
                    seeding.insert(r.bundle.clone(), None);
                }
                let (client, base, mesh, seeding) = (
                    client.clone(),
                    base.to_string(),
                    mesh.clone(),
                    seeding.clone(),
                );
                let (r, file) = (r.clone(), dir.join(format!("seed-{}.part", r.bundle)));
                tokio::spawn(async move {
                    let failed = match seed(&client, &base, &mesh, &r, file).await {
                        Ok(()) => {
                            tracing::info!(bundle = %r.bundle, version = %r.version, "update from the registry published to the mesh");
                            None
                        }
                        Err(e) => {
                            tracing::warn!(bundle = %r.bundle, registry = %base, "cannot seed the registry's update: {e}; trying again in {RETRY_AFTER:?} if still asked");
                            Some(Instant::now())
                        }
                    };
                    let mut seeding = lock(&seeding);
                    match failed {
                        Some(at) => seeding.insert(r.bundle.clone(), Some(at)),
                        None => seeding.remove(&r.bundle),
                    };
                });
            }
            None => {}
        }
    }
}

fn lock(s: &Seeding) -> std::sync::MutexGuard<'_, BTreeMap<String, Option<Instant>>> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

fn url(base: &str, path: &str) -> String {
    format!("{}{path}", base.trim_end_matches('/'))
}

async fn seed(
    client: &ApiClient,
    base: &str,
    mesh: &Mesh,
    r: &UpdateRef,
    file: PathBuf,
) -> Result<(), String> {
    tracing::info!(bundle = %r.bundle, version = %r.version, board = %r.board, "fetching an update from the registry to publish it to the mesh");
    let fetched = fetch(
        client,
        &url(base, &format!("/api/v1/updates/{}", r.bundle)),
        &file,
    )
    .await;
    let checked = match fetched {
        Ok(()) => {
            let at = file.clone();
            tokio::task::spawn_blocking(move || cambox_update::Bundle::check_file(&at))
                .await
                .map_err(|e| e.to_string())
                .and_then(|b| b)
        }
        Err(e) => Err(e),
    };
    let published = match checked {
        Ok(b) if b.id() == r.bundle => mesh
            .publish_update(file.clone())
            .await
            .map_err(|e| e.to_string())
            .and_then(|p| p),
        Ok(b) => Err(format!("the registry sent bundle {}", b.id())),
        Err(e) => Err(e),
    };
    if published.is_err() {
        let _ = tokio::fs::remove_file(&file).await;
    }
    published?;
    if r.rollout > 0 {
        take_rollout(client, base, mesh, &r.bundle).await;
    }
    Ok(())
}

async fn fetch(client: &ApiClient, url: &str, file: &PathBuf) -> Result<(), String> {
    let mut body = client.stream(url, None).await.map_err(|e| e.to_string())?;
    let mut out = tokio::fs::File::create(file)
        .await
        .map_err(|e| format!("{}: {e}", file.display()))?;
    while let Some(chunk) = body.chunk().await.map_err(|e| e.to_string())? {
        out.write_all(&chunk)
            .await
            .map_err(|e| format!("{}: {e}", file.display()))?;
    }
    out.flush().await.map_err(|e| e.to_string())
}

async fn take_rollout(client: &ApiClient, base: &str, mesh: &Mesh, bundle: &str) {
    let outcome = match client
        .get_whole(&url(base, &format!("/api/v1/updates/{bundle}/rollout")))
        .await
    {
        Ok((200, doc)) => match cambox_update::Rollout::from_bytes(&doc) {
            Ok(r) => match mesh.publish_rollout(r).await {
                Ok(Ok(_)) => return,
                Ok(Err(e)) => e,
                Err(e) => e.to_string(),
            },
            Err(e) => e,
        },
        Ok((status, body)) => format!("answered {status}: {}", String::from_utf8_lossy(&body)),
        Err(e) => e.to_string(),
    };
    tracing::warn!(registry = %base, bundle, "cannot take the registry's rollout: {outcome}");
}
