//! Updates over the mesh, the transport's side: offers (a bundle's signed head) spread
//! like revocation lists, checked by every box before it keeps or passes them on, the
//! newest per board; chunks move through `cambox_mesh::swarm`, so each crosses each site's
//! uplink once, and are kept on the data partition (`update::store`) so a broken transfer
//! resumes. A box of the bundle's board that would install it fetches it whole; every box
//! serves and relays what it is asked for.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use bytes::Bytes;
use cambox_mesh::swarm::{Action, Swarm};
use cambox_mesh::{Msg, NodeId};
use cambox_update::{Bundle, ReleasePublic, Version};

use crate::update::store::{Stored, MAX_KEPT};

/// What an update needs of the box: the keys it trusts, what it runs (None off an image:
/// it only relays), and where bundles are kept.
#[derive(Debug, Clone)]
pub struct UpdateSettings {
    pub keys: Vec<ReleasePublic>,
    pub board: Option<String>,
    pub running: Option<Version>,
    pub dir: PathBuf,
    /// Told the path of every complete bundle this box wants.
    pub ready: tokio::sync::mpsc::UnboundedSender<PathBuf>,
}

/// What the driver sends.
#[derive(Debug)]
pub enum Out {
    To(NodeId, Msg),
    /// To every neighbour but the one named.
    All(Msg, Option<NodeId>),
}

#[derive(Debug)]
struct Offer {
    head: Bytes,
    stored: Stored,
    swarm: Swarm,
    wanted: bool,
    /// Neighbours that sent the offer: on the way to the publisher.
    offered_by: BTreeSet<NodeId>,
}

#[derive(Debug)]
pub struct Updates {
    me: NodeId,
    settings: UpdateSettings,
    /// The newest offer per board.
    offers: BTreeMap<String, Offer>,
    /// Neighbours and whether each is a site-mate.
    neighbours: BTreeMap<NodeId, bool>,
    out: Vec<Out>,
}

impl Updates {
    pub fn new(me: NodeId, settings: UpdateSettings) -> Updates {
        Updates {
            me,
            settings,
            offers: BTreeMap::new(),
            neighbours: BTreeMap::new(),
            out: Vec::new(),
        }
    }

    fn wants(&self, bundle: &Bundle) -> bool {
        let m = &bundle.manifest;
        self.settings.board.as_deref() == Some(m.board.as_str())
            && m.version()
                .is_ok_and(|v| self.settings.running.as_ref().is_some_and(|r| v > *r))
    }

    /// An offer from a neighbour (`from`) or this box's own publishing (None). Ok(true):
    /// new, kept and passed on.
    pub fn offer(
        &mut self,
        now: Instant,
        head: Bytes,
        from: Option<NodeId>,
    ) -> Result<bool, String> {
        let bundle = Bundle::read_head(&mut &head[..])?;
        self.check_signed(&bundle)?;
        let board = bundle.manifest.board.clone();
        let version = bundle.manifest.version()?;
        if let Some(o) = self.offers.get_mut(&board) {
            if o.stored.bundle.id() == bundle.id() {
                if let Some(f) = from {
                    o.offered_by.insert(f);
                }
                return Ok(false);
            }
            if o.stored
                .bundle
                .manifest
                .version()
                .is_ok_and(|v| v >= version)
            {
                return Ok(false);
            }
        }
        if !self.offers.contains_key(&board) && self.offers.len() >= MAX_KEPT {
            return Err(format!("offers of {MAX_KEPT} boards are kept already"));
        }
        let stored =
            Stored::open(&self.settings.dir, bundle.clone()).map_err(|e| format!("{e:#}"))?;
        let mut swarm = Swarm::new(
            self.me,
            stored.bundle.manifest.chunks.len(),
            stored.have.clone(),
        );
        for (&peer, &mate) in &self.neighbours {
            swarm.neighbour_up(now, peer, mate);
        }
        swarm.set_toward_origin(now, from);
        let wanted = self.wants(&bundle);
        if wanted {
            swarm.want_all(now);
            if stored.complete() {
                // Published here, or complete from before a restart.
                let _ = self.settings.ready.send(stored.path().to_path_buf());
            }
        }
        let offer = Offer {
            head: head.clone(),
            stored,
            swarm,
            wanted,
            offered_by: from.into_iter().collect(),
        };
        tracing::info!(bundle = %bundle.id(), board = %board, version = %bundle.manifest.version, wanted, "update offered");
        if let Some(old) = self.offers.insert(board, offer) {
            old.stored.remove();
        }
        self.out.push(Out::All(Msg::UpdateOffer { head }, from));
        self.settle();
        Ok(true)
    }

    fn check_signed(&self, bundle: &Bundle) -> Result<(), String> {
        let signed = Bundle::signed_bytes(bundle.manifest_json());
        if self
            .settings
            .keys
            .iter()
            .any(|k| k.verify(&signed, &bundle.signature))
        {
            Ok(())
        } else {
            Err("not signed by a release key this box trusts".into())
        }
    }

    /// A bundle file this box was given to publish: kept whole and offered to everyone.
    pub fn publish(&mut self, now: Instant, file: &Path) -> Result<String, String> {
        let mut r = std::io::BufReader::new(
            std::fs::File::open(file).map_err(|e| format!("{}: {e}", file.display()))?,
        );
        self.check_signed(&Bundle::read_head(&mut r)?)?;
        let stored = Stored::adopt(&self.settings.dir, file).map_err(|e| format!("{e:#}"))?;
        let head = Bytes::from(stored.bundle.head_bytes());
        let id = stored.bundle.id();
        drop(stored);
        self.offer(now, head, None)?;
        Ok(id)
    }

    pub fn link_up(&mut self, now: Instant, peer: NodeId, site_mate: bool) -> Vec<Msg> {
        self.neighbours.insert(peer, site_mate);
        let mut msgs = Vec::new();
        for o in self.offers.values_mut() {
            o.swarm.neighbour_up(now, peer, site_mate);
            msgs.push(Msg::UpdateOffer {
                head: o.head.clone(),
            });
            msgs.push(have_msg(&o.stored));
        }
        self.settle();
        msgs
    }

    pub fn link_down(&mut self, now: Instant, peer: NodeId) {
        self.neighbours.remove(&peer);
        for o in self.offers.values_mut() {
            o.offered_by.remove(&peer);
            o.swarm.neighbour_down(now, peer);
            // The way to the publisher: a site-mate that offered it, else any.
            let toward = o
                .offered_by
                .iter()
                .find(|p| self.neighbours.get(*p) == Some(&true))
                .or(o.offered_by.iter().next())
                .copied();
            o.swarm.set_toward_origin(now, toward);
        }
        self.settle();
    }

    fn by_id(&mut self, bundle: u64) -> Option<&mut Offer> {
        self.offers
            .values_mut()
            .find(|o| o.stored.bundle.number() == bundle)
    }

    pub fn chunk_have(&mut self, now: Instant, peer: NodeId, bundle: u64, from: u32, bits: &[u8]) {
        if let Some(o) = self.by_id(bundle) {
            let chunks: Vec<usize> = (0..bits.len() * 8)
                .filter(|i| bits[i / 8] & (1 << (i % 8)) != 0)
                .map(|i| from as usize + i)
                .collect();
            o.swarm.neighbour_has(now, peer, &chunks);
        }
        self.settle();
    }

    pub fn chunk_get(&mut self, now: Instant, peer: NodeId, bundle: u64, chunk: u32) {
        if let Some(o) = self.by_id(bundle) {
            o.swarm.asked(now, peer, chunk as usize);
        }
        self.settle();
    }

    pub fn chunk_data(&mut self, now: Instant, peer: NodeId, bundle: u64, chunk: u32, data: &[u8]) {
        if let Some(o) = self.by_id(bundle) {
            let i = chunk as usize;
            let ok = o.stored.bundle.chunk_ok(i, data);
            if ok && !o.stored.have.get(i).copied().unwrap_or(true) {
                if let Err(e) = o.stored.write_chunk(i, data) {
                    tracing::warn!(
                        "cannot keep chunk {i} of bundle {}: {e:#}",
                        o.stored.bundle.id()
                    );
                    o.swarm.received(now, peer, i, false);
                    self.settle();
                    return;
                }
            }
            if !ok {
                tracing::warn!(%peer, "chunk {i} of bundle {} does not match its hash", o.stored.bundle.id());
            }
            o.swarm.received(now, peer, i, ok);
        }
        self.settle();
    }

    pub fn tick(&mut self, now: Instant) {
        for o in self.offers.values_mut() {
            o.swarm.tick(now);
        }
        self.settle();
    }

    pub fn poll(&mut self) -> Vec<Out> {
        std::mem::take(&mut self.out)
    }

    /// What the swarms decided, as messages; a complete bundle this box wants is handed on.
    fn settle(&mut self) {
        for o in self.offers.values_mut() {
            let id = o.stored.bundle.number();
            for action in o.swarm.poll_actions() {
                match action {
                    Action::Ask { peer, chunk } => self.out.push(Out::To(
                        peer,
                        Msg::ChunkGet {
                            bundle: id,
                            chunk: chunk as u32,
                        },
                    )),
                    Action::Send { peer, chunk } => match o.stored.read_chunk(chunk) {
                        Ok(data) => self.out.push(Out::To(
                            peer,
                            Msg::ChunkData {
                                bundle: id,
                                chunk: chunk as u32,
                                data: data.into(),
                            },
                        )),
                        Err(e) => tracing::warn!("cannot read chunk {chunk}: {e:#}"),
                    },
                    Action::Have { chunk } => self.out.push(Out::All(
                        Msg::ChunkHave {
                            bundle: id,
                            from: chunk as u32,
                            bits: Bytes::from_static(&[1]),
                        },
                        None,
                    )),
                    Action::Complete => {
                        tracing::info!(bundle = %o.stored.bundle.id(), wanted = o.wanted, "update bundle complete");
                        if o.wanted {
                            let _ = self.settings.ready.send(o.stored.path().to_path_buf());
                        }
                    }
                }
            }
        }
    }
}

/// Which chunks `stored` has, as a `ChunkHave` from chunk 0.
fn have_msg(stored: &Stored) -> Msg {
    let mut bits = vec![0u8; stored.have.len().div_ceil(8)];
    for (i, h) in stored.have.iter().enumerate() {
        if *h {
            bits[i / 8] |= 1 << (i % 8);
        }
    }
    Msg::ChunkHave {
        bundle: stored.bundle.number(),
        from: 0,
        bits: bits.into(),
    }
}
