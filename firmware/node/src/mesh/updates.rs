//! Updates over the mesh, the transport's side: offers (a bundle's signed head) spread
//! like revocation lists, checked by every box before it keeps or passes them on, the
//! newest per board; chunks move through `cambox_mesh::swarm`, so each crosses each site's
//! uplink once, and are kept on the data partition (`update::store`) so a broken transfer
//! resumes. A box of the bundle's board that would install it fetches it whole; every box
//! serves and relays what it is asked for.
//!
//! A rollout (`cambox_update::Rollout`, also signed by the release key) narrows which of
//! those boxes install the bundle (sites, a share) and pauses or resumes them; it travels
//! with the offer, and a box keeps it beside the bundle. A bundle without one goes to
//! every box of its board.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use bytes::Bytes;
use cambox_mesh::swarm::{Action, Swarm};
use cambox_mesh::{Msg, NodeId};
use cambox_update::{Bundle, ReleasePublic, Rollout, Version};

use crate::update::store::{Stored, MAX_KEPT};

/// What an update needs of the box: the keys it trusts, what it runs (None off an image:
/// it only relays), and where bundles are kept.
#[derive(Debug, Clone)]
pub struct UpdateSettings {
    pub keys: Vec<ReleasePublic>,
    pub board: Option<String>,
    pub running: Option<Version>,
    pub dir: PathBuf,
    /// This box's site, which a rollout may or may not name.
    pub site: String,
    /// Told of every complete bundle this box may install now, and when it may not.
    pub ready: tokio::sync::mpsc::UnboundedSender<Arrival>,
    /// Where each kept offer stands, for the box's page, registry and metrics.
    pub offers: tokio::sync::watch::Sender<Vec<OfferView>>,
}

/// What the mesh tells the box's installer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Arrival {
    /// A whole bundle for this box that its rollout lets it install now.
    Install(PathBuf),
    /// The rollout was paused, or no longer names this box: install nothing yet.
    Hold,
}

/// A kept offer as people see it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct OfferView {
    pub bundle: String,
    pub board: String,
    pub version: String,
    /// `relaying` (not for this box), `excluded` (the rollout does not name it),
    /// `fetching`, `paused` (whole, the rollout paused), `ready` (whole, installed when
    /// the box is not live).
    pub state: &'static str,
    pub chunks: usize,
    pub have: usize,
    /// The rollout, for people ("10 % of every site"); none: every box of the board.
    pub rollout: Option<String>,
    /// When that rollout was signed, ms since 1970 (0: none).
    pub rollout_issued: u64,
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
    /// Heard since the last tick: not fetched yet, so that a rollout sent right behind
    /// its offer is heard before this box asks for a chunk it may not want.
    fresh: bool,
    /// The installer was told to install it (and not told to hold since).
    told: bool,
    rollout: Option<Rollout>,
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

    /// Whether `bundle` is for this box's board and newer than what it runs.
    fn fits(settings: &UpdateSettings, bundle: &Bundle) -> bool {
        let m = &bundle.manifest;
        settings.board.as_deref() == Some(m.board.as_str())
            && m.version()
                .is_ok_and(|v| settings.running.as_ref().is_some_and(|r| v > *r))
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
                    let toward = toward_publisher(&o.offered_by, &self.neighbours);
                    o.swarm.set_toward_origin(now, toward);
                    self.settle(now);
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
        // A rollout kept from before a restart holds until a neighbour sends a newer one.
        let rollout = stored
            .rollout()
            .and_then(|doc| Rollout::from_bytes(&doc).ok())
            .filter(|r| r.signed_by(&self.settings.keys) && r.plan.bundle == bundle.id());
        let offer = Offer {
            head: head.clone(),
            stored,
            swarm,
            wanted: false,
            fresh: from.is_some(),
            told: false,
            rollout,
            offered_by: from.into_iter().collect(),
        };
        tracing::info!(bundle = %bundle.id(), board = %board, version = %bundle.manifest.version, "update offered");
        // What this box holds already (all of it, where it was published) is news to
        // neighbours that learn of the bundle now.
        let have = offer
            .stored
            .have
            .iter()
            .any(|h| *h)
            .then(|| have_msg(&offer.stored));
        if let Some(old) = self.offers.insert(board, offer) {
            old.stored.remove();
        }
        self.out.push(Out::All(Msg::UpdateOffer { head }, from));
        if let Some(have) = have {
            self.out.push(Out::All(have, None));
        }
        self.settle(now);
        Ok(true)
    }

    /// A rollout from a neighbour or this box's operator (None). Ok(true): newer than the
    /// one kept, kept and passed on.
    pub fn rollout(
        &mut self,
        now: Instant,
        r: Rollout,
        from: Option<NodeId>,
    ) -> Result<bool, String> {
        if !r.signed_by(&self.settings.keys) {
            return Err("the rollout is not signed by a release key this box trusts".into());
        }
        let Some(o) = self
            .offers
            .values_mut()
            .find(|o| o.stored.bundle.id() == r.plan.bundle)
        else {
            return Err(format!(
                "no offer of bundle {} is kept here: publish the bundle first",
                r.plan.bundle
            ));
        };
        if o.rollout
            .as_ref()
            .is_some_and(|kept| kept.plan.issued >= r.plan.issued)
        {
            return Ok(false);
        }
        let doc = Bytes::from(r.to_bytes());
        if let Err(e) = o.stored.keep_rollout(&doc) {
            tracing::warn!("cannot keep the rollout of bundle {}: {e:#}", r.plan.bundle);
        }
        tracing::info!(bundle = %r.plan.bundle, rollout = %r.plan.describe(), "update rollout");
        o.rollout = Some(r);
        self.out.push(Out::All(Msg::UpdateRollout { doc }, from));
        self.settle(now);
        Ok(true)
    }

    fn check_signed(&self, bundle: &Bundle) -> Result<(), String> {
        match bundle.signer(&self.settings.keys) {
            Some(_) => Ok(()),
            None => Err("not signed by a release key this box trusts".into()),
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

    /// Each kept offer's state, as [`OfferView`] tells it.
    fn views(&self) -> Vec<OfferView> {
        self.offers
            .values()
            .map(|o| {
                let m = &o.stored.bundle.manifest;
                let (fits, included, paused) = self.decision(o);
                let complete = o.stored.complete();
                OfferView {
                    bundle: o.stored.bundle.id(),
                    board: m.board.clone(),
                    version: m.version.clone(),
                    state: match () {
                        _ if !fits => "relaying",
                        _ if !included => "excluded",
                        _ if !complete => "fetching",
                        _ if paused => "paused",
                        _ => "ready",
                    },
                    chunks: o.stored.have.len(),
                    have: o.stored.have.iter().filter(|h| **h).count(),
                    rollout: o.rollout.as_ref().map(|r| r.plan.describe()),
                    rollout_issued: o.rollout.as_ref().map_or(0, |r| r.plan.issued),
                }
            })
            .collect()
    }

    /// For an offer: whether it fits this box, whether its rollout names this box, and
    /// whether the rollout is paused.
    fn decision(&self, o: &Offer) -> (bool, bool, bool) {
        let fits = Self::fits(&self.settings, &o.stored.bundle);
        match &o.rollout {
            None => (fits, true, false),
            Some(r) => (
                fits,
                r.plan.includes(&self.me.0, &self.settings.site),
                r.plan.paused,
            ),
        }
    }

    /// An update message from neighbour `peer`; others are ignored.
    pub fn message(&mut self, now: Instant, peer: NodeId, msg: Msg) {
        match msg {
            Msg::UpdateOffer { head } => {
                if let Err(e) = self.offer(now, head, Some(peer)) {
                    tracing::warn!(%peer, "an update offer is not taken: {e}");
                }
            }
            Msg::UpdateRollout { doc } => {
                let taken =
                    Rollout::from_bytes(&doc).and_then(|r| self.rollout(now, r, Some(peer)));
                if let Err(e) = taken {
                    tracing::warn!(%peer, "an update rollout is not taken: {e}");
                }
            }
            Msg::ChunkHave { bundle, from, bits } => {
                self.chunk_have(now, peer, bundle, from, &bits)
            }
            Msg::ChunkGet { bundle, chunk } => self.chunk_get(now, peer, bundle, chunk),
            Msg::ChunkData {
                bundle,
                chunk,
                data,
            } => self.chunk_data(now, peer, bundle, chunk, &data),
            _ => {}
        }
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
            if let Some(r) = &o.rollout {
                msgs.push(Msg::UpdateRollout {
                    doc: r.to_bytes().into(),
                });
            }
        }
        self.settle(now);
        msgs
    }

    pub fn link_down(&mut self, now: Instant, peer: NodeId) {
        self.neighbours.remove(&peer);
        for o in self.offers.values_mut() {
            o.offered_by.remove(&peer);
            o.swarm.neighbour_down(now, peer);
            let toward = toward_publisher(&o.offered_by, &self.neighbours);
            o.swarm.set_toward_origin(now, toward);
        }
        self.settle(now);
    }

    fn by_id(&mut self, bundle: u64) -> Option<&mut Offer> {
        self.offers
            .values_mut()
            .find(|o| o.stored.bundle.number() == bundle)
    }

    fn chunk_have(&mut self, now: Instant, peer: NodeId, bundle: u64, from: u32, bits: &[u8]) {
        if let Some(o) = self.by_id(bundle) {
            let chunks: Vec<usize> = (0..bits.len() * 8)
                .filter(|i| bits[i / 8] & (1 << (i % 8)) != 0)
                .map(|i| from as usize + i)
                .collect();
            o.swarm.neighbour_has(now, peer, &chunks);
        }
        self.settle(now);
    }

    fn chunk_get(&mut self, now: Instant, peer: NodeId, bundle: u64, chunk: u32) {
        if let Some(o) = self.by_id(bundle) {
            o.swarm.asked(now, peer, chunk as usize);
        }
        self.settle(now);
    }

    fn chunk_data(&mut self, now: Instant, peer: NodeId, bundle: u64, chunk: u32, data: &[u8]) {
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
                    self.settle(now);
                    return;
                }
            }
            if !ok {
                tracing::warn!(%peer, "chunk {i} of bundle {} does not match its hash", o.stored.bundle.id());
            }
            o.swarm.received(now, peer, i, ok);
        }
        self.settle(now);
    }

    pub fn tick(&mut self, now: Instant) {
        for o in self.offers.values_mut() {
            o.fresh = false;
            o.swarm.tick(now);
        }
        self.settle(now);
    }

    pub fn poll(&mut self) -> Vec<Out> {
        std::mem::take(&mut self.out)
    }

    /// What the swarms and rollouts decided: messages to send, and the installer told of
    /// a whole bundle it may install now, or to hold one it may no longer.
    fn settle(&mut self, now: Instant) {
        let decisions: Vec<(bool, bool, bool)> =
            self.offers.values().map(|o| self.decision(o)).collect();
        for (o, (fits, included, paused)) in self.offers.values_mut().zip(decisions) {
            let want = fits && included && !o.fresh;
            if want != o.wanted {
                o.wanted = want;
                o.swarm.set_wants_all(now, want);
            }
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
                    }
                }
            }
            let go = fits && included && !paused && o.stored.complete();
            if go != o.told {
                o.told = go;
                let _ = self.settings.ready.send(if go {
                    Arrival::Install(o.stored.path().to_path_buf())
                } else {
                    Arrival::Hold
                });
            }
        }
        let views = self.views();
        self.settings.offers.send_if_modified(|v| {
            let changed = *v != views;
            *v = views;
            changed
        });
    }
}

/// The way to the publisher among the neighbours that offered the bundle: one beyond the
/// site first (only a site's fetcher goes that way, and a site-mate that offered it may be
/// waiting on the fetcher), else a site-mate.
fn toward_publisher(
    offered_by: &BTreeSet<NodeId>,
    neighbours: &BTreeMap<NodeId, bool>,
) -> Option<NodeId> {
    let beyond = offered_by
        .iter()
        .find(|p| neighbours.get(*p) == Some(&false));
    beyond.or(offered_by.iter().next()).copied()
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

#[cfg(test)]
mod tests {
    use super::*;
    use cambox_update::{Plan, ReleaseKey};
    use tokio::sync::mpsc::UnboundedReceiver;

    const A: NodeId = NodeId([1; 32]);
    const B: NodeId = NodeId([2; 32]);

    fn updates(
        me: NodeId,
        dir: &Path,
        site: &str,
        key: &ReleaseKey,
    ) -> (Updates, UnboundedReceiver<Arrival>) {
        let (ready, arrived) = tokio::sync::mpsc::unbounded_channel();
        let settings = UpdateSettings {
            keys: vec![key.public()],
            board: Some("qemu_aarch64".into()),
            running: Some(Version::parse("1").unwrap()),
            dir: dir.join(site),
            site: site.into(),
            ready,
            offers: tokio::sync::watch::channel(Vec::new()).0,
        };
        (Updates::new(me, settings), arrived)
    }

    /// Moves every message between the two until neither has more to say, even after a
    /// tick.
    fn pump(now: Instant, a: &mut Updates, b: &mut Updates) {
        let mut ticked = false;
        loop {
            let (mut from_a, mut from_b) = (a.poll(), b.poll());
            if from_a.is_empty() && from_b.is_empty() {
                if ticked {
                    return;
                }
                a.tick(now);
                b.tick(now);
                (from_a, from_b) = (a.poll(), b.poll());
            }
            ticked = from_a.is_empty() && from_b.is_empty();
            for (out, to, from) in [(from_a, &mut *b, A), (from_b, &mut *a, B)] {
                for o in out {
                    match o {
                        Out::To(_, msg) | Out::All(msg, None) => to.message(now, from, msg),
                        Out::All(msg, Some(except)) if except != to.me => {
                            to.message(now, from, msg)
                        }
                        Out::All(..) => {}
                    }
                }
            }
        }
    }

    fn told(arrived: &mut UnboundedReceiver<Arrival>) -> Vec<Arrival> {
        std::iter::from_fn(|| arrived.try_recv().ok()).collect()
    }

    fn state(u: &Updates) -> &'static str {
        u.views()[0].state
    }

    #[test]
    fn a_rollout_narrows_pauses_and_resumes_who_installs_and_holds_across_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let key = ReleaseKey::generate().unwrap();
        let rootfs = dir.path().join("rootfs");
        std::fs::write(&rootfs, vec![7u8; 40_000]).unwrap();
        let file = dir.path().join("v2.cbx");
        let images = [("rootfs".to_string(), rootfs)];
        let bundle =
            cambox_update::bundle::pack("qemu_aarch64", "2", 0, &images, 4096, &key, &file)
                .unwrap();
        let plan = |issued, paused, sites: &[&str]| {
            let plan = Plan {
                bundle: bundle.id(),
                issued,
                paused,
                share: 100,
                sites: sites.iter().map(|s| s.to_string()).collect(),
            };
            Rollout::sign(plan, &key).unwrap()
        };
        let now = Instant::now();
        let (mut a, _) = updates(A, dir.path(), "a", &key);
        let (mut b, mut b_told) = updates(B, dir.path(), "b", &key);
        a.publish(now, &file).unwrap();
        assert!(a.rollout(now, plan(1, false, &["a"]), None).unwrap());
        let to_b = a.link_up(now, B, false);
        for m in to_b {
            b.message(now, A, m);
        }
        for m in b.link_up(now, A, false) {
            a.message(now, B, m);
        }
        pump(now, &mut a, &mut b);
        // Site a only: b relays, fetches nothing, installs nothing.
        assert_eq!(state(&b), "excluded");
        assert_eq!(b.views()[0].have, 0);
        assert!(told(&mut b_told).is_empty());

        // Every site, paused: b fetches it whole and waits.
        assert!(a.rollout(now, plan(2, true, &[]), None).unwrap());
        pump(now, &mut a, &mut b);
        assert_eq!(state(&b), "paused");
        assert_eq!(b.views()[0].have, b.views()[0].chunks);
        assert!(told(&mut b_told).is_empty());

        // Resumed: b may install it now. Paused again: it holds.
        assert!(a.rollout(now, plan(3, false, &[]), None).unwrap());
        pump(now, &mut a, &mut b);
        let path = dir.path().join("b").join(format!("{}.cbx", bundle.id()));
        assert_eq!(told(&mut b_told), vec![Arrival::Install(path.clone())]);
        assert_eq!(state(&b), "ready");
        assert!(a.rollout(now, plan(4, true, &[]), None).unwrap());
        pump(now, &mut a, &mut b);
        assert_eq!(told(&mut b_told), vec![Arrival::Hold]);

        // An older rollout changes nothing, and one signed by another key is refused.
        assert!(!b.rollout(now, plan(3, false, &[]), None).unwrap());
        let stranger = ReleaseKey::generate().unwrap();
        let forged = Plan {
            bundle: bundle.id(),
            issued: 9,
            paused: false,
            share: 100,
            sites: vec![],
        };
        let forged = Rollout::sign(forged, &stranger).unwrap();
        assert!(b
            .rollout(now, forged, None)
            .unwrap_err()
            .contains("not signed"));
        assert_eq!(state(&b), "paused");

        // b restarts and hears the offer before any rollout: the kept one still holds.
        drop(b);
        let (mut b, mut b_told) = updates(B, dir.path(), "b", &key);
        b.offer(now, Bytes::from(bundle.head_bytes()), Some(A))
            .unwrap();
        assert_eq!(state(&b), "paused");
        assert!(told(&mut b_told).is_empty());
        assert!(b.rollout(now, plan(5, false, &["b"]), None).unwrap());
        assert_eq!(told(&mut b_told), vec![Arrival::Install(path)]);
    }

    #[test]
    fn a_rollout_of_a_bundle_not_offered_here_is_refused_with_a_reason() {
        let dir = tempfile::tempdir().unwrap();
        let key = ReleaseKey::generate().unwrap();
        let (mut a, _) = updates(A, dir.path(), "a", &key);
        let plan = Plan {
            bundle: "0011223344556677".into(),
            issued: 1,
            paused: false,
            share: 10,
            sites: vec![],
        };
        let doc = Rollout::sign(plan, &key).unwrap();
        let err = a.rollout(Instant::now(), doc, None).unwrap_err();
        assert!(err.contains("publish the bundle first"), "{err}");
    }
}
