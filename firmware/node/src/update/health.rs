//! After a start: settle the record of a try, or check the try's health and commit it or
//! give it up.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::apply::{self, Facts};
use super::{at_start, committed, gave_up, AtStart, Record};
use crate::mesh::Mesh;
use crate::station::Station;

/// Starts the check when this start is a try; does nothing on a machine that is not a
/// cambox image with two slots.
pub fn spawn(station: Arc<Station>, mesh: Mesh, data: PathBuf, bound: Duration) {
    if let Some(r) = station.release() {
        station
            .metrics
            .set_release(&r.board, &r.version.to_string());
    }
    let facts = match Facts::of_this_box() {
        Ok(f) => f,
        Err(e) => {
            tracing::debug!("no updates here: {e:#}");
            return;
        }
    };
    let path = apply::record_path(&data);
    let default = match facts.card.default_slot() {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("updates are off: {e}");
            return;
        }
    };
    let record = Record::load(&path);
    station.set_update(record.clone());
    match at_start(record, facts.booted, default) {
        AtStart::Nothing => {}
        AtStart::Settled(r) => {
            match &r.reason {
                Some(reason) => tracing::warn!(bundle = %r.bundle, "update failed: {reason}"),
                None => tracing::info!(version = %r.version, "update committed"),
            }
            settle(&station, &path, r);
        }
        AtStart::Check(r) => {
            tracing::info!(version = %r.version, slot = %r.slot, bound = ?bound, "trying an update: committing once the mesh or a registry answers");
            tokio::spawn(check(station, mesh, facts, path, r, bound));
        }
    }
}

fn settle(station: &Station, path: &std::path::Path, r: Record) {
    if let Err(e) = r.save(path) {
        tracing::warn!("cannot record the update: {e:#}");
    }
    station.set_update(Some(r));
}

/// Healthy: `cambox run` is up (this runs in it) and has reached a neighbour or a registry.
async fn check(
    station: Arc<Station>,
    mesh: Mesh,
    facts: Facts,
    path: PathBuf,
    r: Record,
    bound: Duration,
) {
    let deadline = Instant::now() + bound;
    loop {
        let neighbours = mesh.peers().await.map(|p| p.len()).unwrap_or(0);
        if neighbours > 0 || station.reach().is_some() {
            match apply::commit(&facts, r.slot) {
                Ok(()) => {
                    tracing::info!(version = %r.version, slot = %r.slot, "update committed: slot {} is the default now", r.slot);
                    settle(&station, &path, committed(&r));
                }
                Err(e) => {
                    tracing::warn!("cannot commit the update: {e:#}; the next boot is the old slot")
                }
            }
            return;
        }
        if Instant::now() >= deadline {
            let failed = gave_up(&r, bound);
            tracing::warn!(
                "{}; rebooting into the old slot",
                failed.reason.as_deref().unwrap_or("")
            );
            settle(&station, &path, failed);
            if let Err(e) = apply::reboot() {
                tracing::warn!("{e:#}");
            }
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
