//! Updates published at the registry: an operator hands it a bundle (and rollouts of it),
//! and the registry hands it to the mesh through a couple of boxes, its *seeds*. A seed
//! fetches the bundle from here once and publishes it to its neighbours, so the registry's
//! uplink carries it about twice however many sites there are, and the mesh does the rest
//! as it does for a bundle published on a box.
//!
//! The registry checks what it keeps against the release keys it is given, as every box
//! does: an upload that is not signed is refused before its payload is read. It keeps the
//! newest bundle per board (a few boards at most) and the newest rollout of each.
//!
//! Seeds: the first boxes that register after a bundle arrives, [`SEEDS`] at a time; a
//! seed is replaced when its registration expires or after [`SEED_TURN`]. A box that
//! holds the bundle already ignores being a seed, so seeds that come after the bundle has
//! spread cost nothing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cambox_mesh::NodeId;
use cambox_update::{Bundle, ReleasePublic, Rollout};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Boxes asked at a time to fetch a bundle from the registry and publish it.
pub const SEEDS: usize = 2;
/// A seed is replaced after this long, in case it cannot fetch or publish.
pub const SEED_TURN: Duration = Duration::from_secs(600);
/// Bundles kept at once: the newest of this many boards.
pub const MAX_BOARDS: usize = 4;

/// A bundle the registry holds, as the registration reply tells boxes of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UpdateRef {
    /// The bundle's id (16 hex digits).
    pub bundle: String,
    pub board: String,
    pub version: String,
    /// When its newest rollout here was signed, ms since 1970 (0: none; it goes to every
    /// box of its board). A box whose offer has an older one fetches it.
    pub rollout: u64,
    /// This box is asked to fetch the bundle (`GET /api/v1/updates/{id}`) and publish it
    /// to its mesh, unless it holds it already.
    pub seed: bool,
}

/// A bundle the registry holds, for people and tools.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UpdateView {
    pub bundle: String,
    pub board: String,
    pub version: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its rollout, for people ("paused, 10 % of sites hq"); null: every box of its board.
    pub rollout: Option<String>,
    /// The boxes asked to seed it now (node ids).
    pub seeds: Vec<String>,
}

#[derive(Debug)]
struct Kept {
    bundle: Bundle,
    path: PathBuf,
    size: u64,
    rollout: Option<Rollout>,
    seeds: Vec<(NodeId, Instant)>,
}

/// The registry's bundles, in a directory of their own.
#[derive(Debug)]
pub struct UpdateDepot {
    dir: PathBuf,
    keys: Vec<ReleasePublic>,
    kept: Mutex<BTreeMap<String, Kept>>,
}

fn lock(m: &Mutex<BTreeMap<String, Kept>>) -> std::sync::MutexGuard<'_, BTreeMap<String, Kept>> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl UpdateDepot {
    /// The depot in `dir` (made if missing), with what it kept before a restart.
    pub fn open(dir: &Path, keys: Vec<ReleasePublic>) -> Result<UpdateDepot, String> {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let depot = UpdateDepot {
            dir: dir.to_path_buf(),
            keys,
            kept: Mutex::new(BTreeMap::new()),
        };
        let entries =
            std::fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
        for path in entries.flatten().map(|e| e.path()) {
            if path.extension().is_some_and(|x| x == "part") {
                // An upload a restart cut off.
                let _ = std::fs::remove_file(&path);
            }
            if path.extension().is_some_and(|x| x == "cbx") {
                let head = std::fs::File::open(&path)
                    .map_err(|e| e.to_string())
                    .and_then(|f| Bundle::read_head(&mut std::io::BufReader::new(f)));
                match head.and_then(|b| depot.check(&b).map(|()| b)) {
                    Ok(b) => {
                        let rollout = std::fs::read(path.with_extension("rollout"))
                            .ok()
                            .and_then(|d| Rollout::from_bytes(&d).ok())
                            .filter(|r| r.signed_by(&depot.keys));
                        depot.insert(b, path, rollout);
                    }
                    Err(e) => tracing::warn!("{}: not kept: {e}", path.display()),
                }
            }
        }
        Ok(depot)
    }

    fn check(&self, bundle: &Bundle) -> Result<(), String> {
        match bundle.signer(&self.keys) {
            Some(_) => Ok(()),
            None => Err("not signed by a release key this registry trusts (--release-keys)".into()),
        }
    }

    /// Keeps `bundle` (at `path`) if it is the newest of its board here, and says how it
    /// is listed; otherwise removes its files.
    fn insert(
        &self,
        bundle: Bundle,
        path: PathBuf,
        rollout: Option<Rollout>,
    ) -> Option<UpdateView> {
        let size = std::fs::metadata(&path).map_or(0, |m| m.len());
        let mut kept = lock(&self.kept);
        let newer = kept
            .get(&bundle.manifest.board)
            .is_none_or(|k| k.bundle.manifest.version().ok() < bundle.manifest.version().ok());
        if !newer {
            remove_files(&path);
            return None;
        }
        let k = Kept {
            bundle,
            path,
            size,
            rollout,
            seeds: Vec::new(),
        };
        let listed = view(&k);
        if let Some(old) = kept.insert(k.bundle.manifest.board.clone(), k) {
            remove_files(&old.path);
        }
        Some(listed)
    }

    /// Whether a bundle with this head would be kept: signed, and newer than the one of
    /// its board held here. Asked before its payload is read.
    pub fn admit(&self, bundle: &Bundle) -> Result<(), String> {
        self.check(bundle)?;
        let version = bundle.manifest.version()?;
        let kept = lock(&self.kept);
        match kept.get(&bundle.manifest.board) {
            Some(k) if k.bundle.manifest.version().is_ok_and(|v| v >= version) => Err(format!(
                "the registry holds version {} for board {} already; publish a newer one",
                k.bundle.manifest.version, bundle.manifest.board
            )),
            None if kept.len() >= MAX_BOARDS => Err(format!(
                "the registry holds bundles of {MAX_BOARDS} boards already"
            )),
            _ => Ok(()),
        }
    }

    /// Where an upload is written before it is checked whole (one place per upload).
    pub fn upload_path(&self) -> PathBuf {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.dir.join(format!("upload-{n}.part"))
    }

    /// Keeps the checked upload at `upload` (from [`Self::upload_path`]) as `bundle`.
    pub fn keep(&self, bundle: Bundle, upload: &Path) -> Result<UpdateView, String> {
        self.admit(&bundle)?;
        let board = bundle.manifest.board.clone();
        let path = self.dir.join(format!("{}.cbx", bundle.id()));
        std::fs::rename(upload, &path)
            .map_err(|e| format!("cannot keep {}: {e}", path.display()))?;
        self.insert(bundle, path, None)
            .ok_or_else(|| format!("a newer bundle of board {board} arrived meanwhile"))
    }

    /// A signed rollout of a bundle held here. Ok(true): newer than the one held.
    pub fn set_rollout(&self, r: Rollout) -> Result<bool, String> {
        if !r.signed_by(&self.keys) {
            return Err("the rollout is not signed by a release key this registry trusts".into());
        }
        let mut kept = lock(&self.kept);
        let k = kept
            .values_mut()
            .find(|k| k.bundle.id() == r.plan.bundle)
            .ok_or_else(|| {
                format!(
                    "the registry holds no bundle {}: publish the bundle first",
                    r.plan.bundle
                )
            })?;
        if k.rollout
            .as_ref()
            .is_some_and(|old| old.plan.issued >= r.plan.issued)
        {
            return Ok(false);
        }
        let path = k.path.with_extension("rollout");
        let tmp = path.with_extension("rollout.new");
        std::fs::write(&tmp, r.to_bytes())
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|e| format!("cannot keep the rollout at {}: {e}", path.display()))?;
        k.rollout = Some(r);
        Ok(true)
    }

    /// The bundle file of `id`, if held.
    pub fn file(&self, id: &str) -> Option<(PathBuf, u64)> {
        lock(&self.kept)
            .values()
            .find(|k| k.bundle.id() == id)
            .map(|k| (k.path.clone(), k.size))
    }

    /// The newest rollout of `id` as signed, if any.
    pub fn rollout(&self, id: &str) -> Option<Vec<u8>> {
        lock(&self.kept)
            .values()
            .find(|k| k.bundle.id() == id)
            .and_then(|k| k.rollout.as_ref())
            .map(Rollout::to_bytes)
    }

    pub fn list(&self) -> Vec<UpdateView> {
        lock(&self.kept).values().map(view).collect()
    }

    /// What a registering box is told: every bundle held, and whether it is to seed one.
    /// `registered` says whether a node's registration is still current.
    pub fn refs_for(
        &self,
        node: NodeId,
        now: Instant,
        registered: impl Fn(&NodeId) -> bool,
    ) -> Vec<UpdateRef> {
        let mut kept = lock(&self.kept);
        kept.values_mut()
            .map(|k| {
                k.seeds.retain(|(n, since)| {
                    now.duration_since(*since) < SEED_TURN && (*n == node || registered(n))
                });
                let mut seed = k.seeds.iter().any(|(n, _)| *n == node);
                if !seed && k.seeds.len() < SEEDS {
                    k.seeds.push((node, now));
                    seed = true;
                }
                UpdateRef {
                    bundle: k.bundle.id(),
                    board: k.bundle.manifest.board.clone(),
                    version: k.bundle.manifest.version.clone(),
                    rollout: k.rollout.as_ref().map_or(0, |r| r.plan.issued),
                    seed,
                }
            })
            .collect()
    }
}

fn view(k: &Kept) -> UpdateView {
    UpdateView {
        bundle: k.bundle.id(),
        board: k.bundle.manifest.board.clone(),
        version: k.bundle.manifest.version.clone(),
        size: k.size,
        rollout: k.rollout.as_ref().map(|r| r.plan.describe()),
        seeds: k.seeds.iter().map(|(n, _)| n.to_hex()).collect(),
    }
}

fn remove_files(path: &Path) {
    let _ = std::fs::remove_file(path);
    let _ = std::fs::remove_file(path.with_extension("rollout"));
}

#[cfg(test)]
mod tests {
    use super::*;
    use cambox_update::{Plan, ReleaseKey};

    fn node(i: u8) -> NodeId {
        NodeId([i; 32])
    }

    /// Packs a bundle of `version` into an upload place and returns its head and place.
    fn upload(depot: &UpdateDepot, key: &ReleaseKey, version: &str) -> (Bundle, PathBuf) {
        let path = depot.upload_path();
        let src = depot.dir.join("rootfs.src");
        std::fs::write(&src, vec![3u8; 10_000]).unwrap();
        cambox_update::bundle::pack(
            "qemu_aarch64",
            version,
            0,
            &[("rootfs".into(), src)],
            4096,
            key,
            &path,
        )
        .map(|b| (b, path))
        .unwrap()
    }

    #[test]
    fn two_seeds_at_a_time_replaced_when_they_leave_or_their_turn_ends() {
        let dir = tempfile::tempdir().unwrap();
        let key = ReleaseKey::generate().unwrap();
        let depot = UpdateDepot::open(dir.path(), vec![key.public()]).unwrap();
        let (b, at) = upload(&depot, &key, "2");
        depot.keep(b, &at).unwrap();
        let t0 = Instant::now();
        let all = |_: &NodeId| true;
        assert!(depot.refs_for(node(1), t0, all)[0].seed);
        assert!(depot.refs_for(node(2), t0, all)[0].seed);
        assert!(!depot.refs_for(node(3), t0, all)[0].seed);
        // A seed stays one while registered.
        assert!(depot.refs_for(node(1), t0, all)[0].seed);
        // Node 2's registration expired: node 3 takes its place.
        assert!(depot.refs_for(node(3), t0, |n| *n != node(2))[0].seed);
        // After a turn, the next boxes are asked.
        let later = t0 + SEED_TURN;
        assert!(depot.refs_for(node(4), later, all)[0].seed);
        assert_eq!(depot.list()[0].seeds, vec![node(4).to_hex()]);
    }

    #[test]
    fn it_keeps_the_newest_per_board_and_refuses_strangers_and_older_ones() {
        let dir = tempfile::tempdir().unwrap();
        let key = ReleaseKey::generate().unwrap();
        let stranger = ReleaseKey::generate().unwrap();
        let depot = UpdateDepot::open(dir.path(), vec![key.public()]).unwrap();
        let (forged, _) = upload(&depot, &stranger, "9");
        assert!(depot.admit(&forged).unwrap_err().contains("not signed"));
        let (v3, at) = upload(&depot, &key, "3");
        depot.keep(v3.clone(), &at).unwrap();
        let (v2, _) = upload(&depot, &key, "2");
        assert!(depot.admit(&v2).unwrap_err().contains("holds version 3"));

        // A rollout of it, kept across a restart; an older one is not taken.
        let plan = |issued| Plan {
            bundle: v3.id(),
            issued,
            paused: true,
            share: 10,
            sites: vec![],
        };
        let rollout = Rollout::sign(plan(5), &key).unwrap();
        let doc = rollout.to_bytes();
        assert!(depot.set_rollout(rollout).unwrap());
        let older = Rollout::sign(plan(4), &key).unwrap();
        assert!(!depot.set_rollout(older).unwrap());
        drop(depot);
        let depot = UpdateDepot::open(dir.path(), vec![key.public()]).unwrap();
        assert_eq!(depot.rollout(&v3.id()), Some(doc));
        let listed = depot.list();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].version, "3");
        assert_eq!(
            listed[0].rollout.as_deref(),
            Some("paused, 10 % of every site")
        );
        assert_eq!(
            depot.refs_for(node(1), Instant::now(), |_| true)[0].rollout,
            5
        );
    }
}
