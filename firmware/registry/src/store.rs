//! The registry's state: soft state only. Entries live for their TTL unless renewed, so a
//! restarted registry is complete again after one heartbeat and needs no storage. Time is
//! passed in (`now` for expiry, `wall_ms` for signatures), so the rules are tested
//! without sleeping.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cambox_mesh::{site_graph, NodeId};
use tokio::sync::broadcast;

use crate::model::{
    BroadcastView, NodeView, Reach, RegisterReply, Registration, SignedRegistration,
};
use crate::signing::{self, SignatureError};

/// What one box may put in the registry, and how often.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub max_addrs: usize,
    pub max_broadcasts: usize,
    pub max_capabilities: usize,
    pub max_string: usize,
    /// Registrations accepted from one source address per minute (valid or not).
    pub per_source_per_minute: u32,
    pub max_nodes: usize,
    pub max_ttl: Duration,
    pub min_ttl: Duration,
    /// How far a registration's timestamp may be from the registry's clock.
    pub max_skew: Duration,
    /// What boxes are told to renew at.
    pub heartbeat: Duration,
    /// The registry sits behind a reverse proxy that appends each client's address to
    /// `X-Forwarded-For`: sources are read from there, for the per-source limit and for
    /// finding boxes behind NAT (behind the proxy, every request comes from the proxy).
    pub forwarded_for: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 16 * 1024,
            max_addrs: 16,
            max_broadcasts: 32,
            max_capabilities: 64,
            max_string: 256,
            per_source_per_minute: 120,
            max_nodes: 100_000,
            max_ttl: Duration::from_secs(300),
            min_ttl: Duration::from_secs(5),
            max_skew: Duration::from_secs(60),
            heartbeat: Duration::from_secs(10),
            forwarded_for: false,
        }
    }
}

/// Who may register: everyone when all are empty.
#[derive(Debug, Clone, Default)]
pub struct Admission {
    pub allow: Vec<NodeId>,
    pub token: Option<String>,
    /// The company CA: only boxes it enrolled register.
    pub ca: Option<std::sync::Arc<crate::CompanyCa>>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    #[error("not a registration: {0}")]
    Malformed(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("too many registrations from {0}: at most {1} a minute")]
    RateLimited(IpAddr, u32),
    #[error(transparent)]
    Signature(#[from] SignatureError),
    #[error("the registry needs its token: send `Authorization: Bearer <token>`")]
    Token,
    #[error("node {0} is not on this registry's allow-list")]
    NotAllowed(String),
    #[error("{0}")]
    NotEnrolled(String),
    #[error("the registration's clock is {0} s off the registry's (at most {1} s): set the box's clock (NTP)")]
    Skew(u64, u64),
    #[error("replayed or out-of-order registration: timestamp {0} is not newer than {1}, the last accepted")]
    Replay(u64, u64),
    #[error("the registry is full ({0} nodes)")]
    Full(usize),
}

/// A change, as the event stream tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Add(NodeView),
    Update(NodeView),
    Remove(String),
}

#[derive(Debug)]
struct Entry {
    view: NodeView,
    expires: Instant,
}

#[derive(Debug, Default)]
struct State {
    nodes: HashMap<NodeId, Entry>,
    /// The newest accepted timestamp per node, kept past expiry while a replay could
    /// still pass the skew check.
    last_ts: HashMap<NodeId, u64>,
    /// Node ids per site, lowest first.
    by_site: HashMap<String, BTreeSet<NodeId>>,
    /// The boxes of each site that can be reached from their own site only. Such a site
    /// is *closed*: other sites do not pick it to link to; it picks among the open ones.
    closed: HashMap<String, BTreeSet<NodeId>>,
    /// Per source: (minute number, registrations in it).
    rate: HashMap<IpAddr, (u64, u32)>,
}

#[derive(Debug)]
pub struct Registry {
    pub limits: Limits,
    pub admission: Admission,
    state: Mutex<State>,
    events: broadcast::Sender<Change>,
    /// Update bundles published here (none without release keys).
    pub updates: Option<crate::UpdateDepot>,
}

fn lock(m: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    // Every update is a few map operations that cannot be left half done.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Registry {
    pub fn new(limits: Limits, admission: Admission) -> Self {
        Self {
            limits,
            admission,
            state: Mutex::new(State::default()),
            events: broadcast::channel(1024).0,
            updates: None,
        }
    }

    /// The registry takes update bundles into `depot` and hands them to the mesh.
    pub fn with_updates(mut self, depot: crate::UpdateDepot) -> Self {
        self.updates = Some(depot);
        self
    }

    /// Every change from now on (for the SSE stream).
    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.events.subscribe()
    }

    /// Checks and stores a registration; the reply lists the other nodes.
    pub fn register(
        &self,
        now: Instant,
        wall_ms: u64,
        source: IpAddr,
        token: Option<&str>,
        body: &[u8],
    ) -> Result<RegisterReply, RegistryError> {
        self.count_source(wall_ms, source)?;
        if body.len() > self.limits.max_body_bytes {
            return Err(RegistryError::TooLarge(format!(
                "body of {} bytes is over the {}-byte limit",
                body.len(),
                self.limits.max_body_bytes
            )));
        }
        let signed: SignedRegistration =
            serde_json::from_slice(body).map_err(|e| RegistryError::Malformed(e.to_string()))?;
        let r = &signed.registration;
        self.check_sizes(r)?;
        let node = signing::verify(&signed)?;
        if let Some(t) = &self.admission.token {
            if token != Some(t.as_str()) {
                return Err(RegistryError::Token);
            }
        }
        if !self.admission.allow.is_empty() && !self.admission.allow.contains(&node) {
            return Err(RegistryError::NotAllowed(r.node.clone()));
        }
        if let Some(ca) = &self.admission.ca {
            ca.check(node, &r.site, signed.certificate.as_deref())
                .map_err(RegistryError::NotEnrolled)?;
        }
        let skew = wall_ms.abs_diff(r.timestamp_ms) / 1000;
        if skew > self.limits.max_skew.as_secs() {
            return Err(RegistryError::Skew(skew, self.limits.max_skew.as_secs()));
        }
        let view_addrs = r
            .addrs
            .iter()
            .map(|a| resolve(a, source))
            .collect::<Result<Vec<_>, _>>()?;
        let http = r.http.as_deref().map(|a| resolve(a, source)).transpose()?;
        let tcp = r.tcp.as_deref().map(|a| resolve(a, source)).transpose()?;
        let reachable = reach(r, source);
        let ttl =
            Duration::from_secs(u64::from(r.ttl_s)).clamp(self.limits.min_ttl, self.limits.max_ttl);

        // Expiry runs every second (`expire`) and before every read, not here: a
        // registration must not cost a walk over every node.
        let mut st = lock(&self.state);
        if let Some(&last) = st.last_ts.get(&node) {
            if r.timestamp_ms <= last {
                return Err(RegistryError::Replay(r.timestamp_ms, last));
            }
        }
        let known = st.nodes.contains_key(&node);
        if !known && st.nodes.len() >= self.limits.max_nodes {
            return Err(RegistryError::Full(self.limits.max_nodes));
        }
        st.last_ts.insert(node, r.timestamp_ms);
        let view = NodeView {
            node: r.node.clone(),
            name: r.name.clone(),
            site: r.site.clone(),
            addrs: view_addrs,
            tcp,
            reachable,
            board: r.board.clone(),
            version: r.version.clone(),
            update: r.update.clone(),
            http,
            broadcasts: r.broadcasts.clone(),
            capabilities: r.capabilities.clone(),
            expires_in_s: ttl.as_secs(),
        };
        let old = st.nodes.insert(
            node,
            Entry {
                view: view.clone(),
                expires: now + ttl,
            },
        );
        if let Some(o) = &old {
            if o.view.site != view.site {
                unindex(&mut st.by_site, &o.view.site, &node);
            }
            unindex(&mut st.closed, &o.view.site, &node);
        }
        st.by_site
            .entry(view.site.clone())
            .or_default()
            .insert(node);
        if reachable == Reach::Site {
            st.closed.entry(view.site.clone()).or_default().insert(node);
        }
        let nodes = self.neighbours(&st, node, &view.site, now);
        let updates = self.updates.as_ref().map_or_else(Vec::new, |d| {
            d.refs_for(node, now, |n| {
                st.nodes.get(n).is_some_and(|e| e.expires > now)
            })
        });
        drop(st);
        match old {
            None => self.emit(Change::Add(view)),
            // A renewal that changes nothing is not news.
            Some(o) if o.view.expires_in_s == view.expires_in_s && same(&o.view, &view) => {}
            Some(_) => self.emit(Change::Update(view)),
        }
        Ok(RegisterReply {
            expires_in_s: ttl.as_secs(),
            heartbeat_s: self.limits.heartbeat.as_secs(),
            nodes,
            revocations: self.revocations_number(),
            reachable,
            seen_from: source.to_canonical().to_string(),
            updates,
        })
    }

    /// The number of the CA's revocation list held (0: none).
    pub fn revocations_number(&self) -> u64 {
        self.admission
            .ca
            .as_ref()
            .map_or(0, |ca| ca.rule().revocations().number)
    }

    /// Whom a box should know: every other box of its site, and the gateways (lowest
    /// ids) of the few sites its site links to (`site_graph`). The reply has the same
    /// small size however many boxes and sites register, and no box is asked to link to
    /// every site. Sites link only to open sites (those reached from anywhere): a closed
    /// site behind NAT links to open ones by dialing out, and nobody dials into it.
    fn neighbours(&self, st: &State, me: NodeId, site: &str, now: Instant) -> Vec<NodeView> {
        let sites: Vec<&str> = st
            .by_site
            .keys()
            .map(String::as_str)
            .filter(|s| *s == site || !st.closed.contains_key(*s))
            .collect();
        let linked = site_graph::linked_sites(site, &sites);
        let own = st.by_site.get(site).into_iter().flatten();
        let gateways = linked
            .iter()
            .filter_map(|s| st.by_site.get(*s))
            .flat_map(|ids| ids.iter().take(site_graph::GATEWAYS));
        own.chain(gateways)
            .filter(|id| **id != me)
            .filter_map(|id| st.nodes.get(id).map(|e| with_expiry(e, now)))
            .collect()
    }

    fn emit(&self, c: Change) {
        // No subscriber is not an error.
        let _ = self.events.send(c);
    }

    /// Counts a request from `source` against its per-minute allowance.
    pub fn count_source(&self, wall_ms: u64, source: IpAddr) -> Result<(), RegistryError> {
        let minute = wall_ms / 60_000;
        let mut st = lock(&self.state);
        let slot = st.rate.entry(source).or_insert((minute, 0));
        if slot.0 != minute {
            *slot = (minute, 0);
        }
        slot.1 += 1;
        if slot.1 > self.limits.per_source_per_minute {
            return Err(RegistryError::RateLimited(
                source,
                self.limits.per_source_per_minute,
            ));
        }
        if st.rate.len() > 4 * self.limits.max_nodes {
            st.rate.retain(|_, (m, _)| *m == minute);
        }
        Ok(())
    }

    fn check_sizes(&self, r: &Registration) -> Result<(), RegistryError> {
        let l = &self.limits;
        let count = |what: &str, n: usize, max: usize| {
            if n > max {
                Err(RegistryError::TooLarge(format!(
                    "{n} {what}, at most {max}"
                )))
            } else {
                Ok(())
            }
        };
        count("addrs", r.addrs.len(), l.max_addrs)?;
        count("broadcasts", r.broadcasts.len(), l.max_broadcasts)?;
        count("capabilities", r.capabilities.len(), l.max_capabilities)?;
        let strings = [&r.name, &r.site]
            .into_iter()
            .chain(r.http.iter())
            .chain(r.tcp.iter())
            .chain(r.board.iter())
            .chain(r.version.iter())
            .chain(r.update.iter())
            .chain(r.addrs.iter())
            .chain(r.capabilities.iter())
            .chain(r.broadcasts.iter().map(|b| &b.name));
        for s in strings {
            let chars = s.chars().count();
            if chars > l.max_string {
                return Err(RegistryError::TooLarge(format!(
                    "a string of {chars} characters, at most {}",
                    l.max_string
                )));
            }
        }
        Ok(())
    }

    /// Drops expired entries (telling subscribers) and forgets replay state that the
    /// skew check now covers.
    pub fn expire(&self, now: Instant, wall_ms: u64) {
        let mut st = lock(&self.state);
        self.expire_locked(&mut st, now);
        let horizon = wall_ms.saturating_sub(self.limits.max_skew.as_millis() as u64);
        let State { nodes, last_ts, .. } = &mut *st;
        last_ts.retain(|id, ts| *ts >= horizon || nodes.contains_key(id));
    }

    fn expire_locked(&self, st: &mut State, now: Instant) {
        let gone: Vec<NodeId> = st
            .nodes
            .iter()
            .filter(|(_, e)| e.expires <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            if let Some(e) = st.nodes.remove(&id) {
                unindex(&mut st.by_site, &e.view.site, &id);
                unindex(&mut st.closed, &e.view.site, &id);
                self.emit(Change::Remove(e.view.node));
            }
        }
    }

    pub fn nodes(&self, now: Instant, site: Option<&str>) -> Vec<NodeView> {
        let mut st = lock(&self.state);
        self.expire_locked(&mut st, now);
        let mut out: Vec<NodeView> = st
            .nodes
            .values()
            .filter(|e| site.is_none_or(|s| e.view.site == s))
            .map(|e| with_expiry(e, now))
            .collect();
        out.sort_by(|a, b| (&a.site, &a.name, &a.node).cmp(&(&b.site, &b.name, &b.node)));
        out
    }

    pub fn node(&self, now: Instant, id: &str) -> Option<NodeView> {
        let node = NodeId::from_hex(id)?;
        let mut st = lock(&self.state);
        self.expire_locked(&mut st, now);
        st.nodes.get(&node).map(|e| with_expiry(e, now))
    }

    pub fn broadcasts(
        &self,
        now: Instant,
        site: Option<&str>,
        name: Option<&str>,
    ) -> Vec<BroadcastView> {
        self.nodes(now, site)
            .into_iter()
            .flat_map(|n| {
                n.broadcasts
                    .iter()
                    .map(move |b| BroadcastView {
                        name: b.name.clone(),
                        live: b.live,
                        origin: n.node.clone(),
                        origin_name: n.name.clone(),
                        site: n.site.clone(),
                        http: n.http.clone(),
                    })
                    .collect::<Vec<_>>()
            })
            .filter(|b| name.is_none_or(|n| b.name == n))
            .collect()
    }

    pub fn len(&self) -> usize {
        lock(&self.state).nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn unindex(by_site: &mut HashMap<String, BTreeSet<NodeId>>, site: &str, id: &NodeId) {
    if let Some(set) = by_site.get_mut(site) {
        set.remove(id);
        if set.is_empty() {
            by_site.remove(site);
        }
    }
}

fn with_expiry(e: &Entry, now: Instant) -> NodeView {
    NodeView {
        expires_in_s: e.expires.saturating_duration_since(now).as_secs(),
        ..e.view.clone()
    }
}

/// Equal apart from the expiry countdown.
fn same(a: &NodeView, b: &NodeView) -> bool {
    NodeView {
        expires_in_s: 0,
        ..a.clone()
    } == NodeView {
        expires_in_s: 0,
        ..b.clone()
    }
}

/// `ip:port`, with an unspecified IP standing for the registration's source.
fn resolve(addr: &str, source: IpAddr) -> Result<String, RegistryError> {
    let a: SocketAddr = addr
        .parse()
        .map_err(|_| RegistryError::Malformed(format!("'{addr}' is not ip:port")))?;
    let ip = if a.ip().is_unspecified() {
        source.to_canonical()
    } else {
        a.ip()
    };
    Ok(SocketAddr::new(ip, a.port()).to_string())
}

/// From where a box can be dialed: from its site only when it says so, or when it names
/// an address of its own that is not where its registration came from (a NAT or a proxy
/// stands between; the address it names is then good on its own site only). Addresses
/// were checked by `resolve` already.
fn reach(r: &Registration, source: IpAddr) -> Reach {
    let source = source.to_canonical();
    let elsewhere = r
        .addrs
        .iter()
        .filter_map(|a| a.parse::<SocketAddr>().ok())
        .any(|a| {
            let ip = a.ip().to_canonical();
            !ip.is_unspecified() && ip != source
        });
    if r.reachable == Some(Reach::Site) || elsewhere {
        Reach::Site
    } else {
        Reach::Anywhere
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signing::sign;
    use cambox_mesh::identity::Identity;

    const T0: u64 = 1_800_000_000_000;

    fn reg(id: &Identity, ts: u64, ttl_s: u32) -> Registration {
        Registration {
            ttl_s,
            capabilities: vec![],
            ..crate::signing::tests::registration(id, ts)
        }
    }

    fn body(id: &Identity, r: Registration) -> Vec<u8> {
        serde_json::to_vec(&sign(id, r)).unwrap()
    }

    fn src() -> IpAddr {
        "192.0.2.7".parse().unwrap()
    }

    #[test]
    fn a_registration_is_stored_with_its_source_address_and_expires_after_its_ttl() {
        let r = Registry::new(Limits::default(), Admission::default());
        let id = Identity::from_seed([1; 32]);
        let t = Instant::now();
        let mut events = r.subscribe();
        r.register(t, T0, src(), None, &body(&id, reg(&id, T0, 30)))
            .unwrap();
        let nodes = r.nodes(t, None);
        assert_eq!(nodes.len(), 1);
        assert_eq!(nodes[0].addrs, vec!["192.0.2.7:4433".to_string()]);
        assert_eq!(nodes[0].http.as_deref(), Some("192.0.2.7:8080"));
        assert!(matches!(events.try_recv(), Ok(Change::Add(_))));
        assert_eq!(r.nodes(t + Duration::from_secs(29), None).len(), 1);
        assert!(
            r.nodes(t + Duration::from_secs(30), None).is_empty(),
            "expired"
        );
        assert!(matches!(events.try_recv(), Ok(Change::Remove(n)) if n == id.node_id().to_hex()));
    }

    #[test]
    fn a_box_is_told_its_site_and_the_gateways_of_a_few_linked_sites() {
        let r = Registry::new(Limits::default(), Admission::default());
        let t = Instant::now();
        let mut last = None;
        for i in 0..90u8 {
            let id = Identity::from_seed([i + 1; 32]);
            let reg = Registration {
                site: format!("site-{}", i % 30),
                ..reg(&id, T0, 30)
            };
            last = Some(r.register(t, T0, src(), None, &body(&id, reg)).unwrap());
        }
        // The last box, of site-29: its two site-mates, and the three gateways of each
        // of the three sites its site links to, out of 30 sites of three boxes.
        let reply = last.unwrap();
        let mates = reply.nodes.iter().filter(|n| n.site == "site-29").count();
        let others: std::collections::BTreeSet<&str> = reply
            .nodes
            .iter()
            .filter(|n| n.site != "site-29")
            .map(|n| n.site.as_str())
            .collect();
        assert_eq!(mates, 2);
        assert_eq!(others.len(), 1 + site_graph::RANDOM_LINKS, "{others:?}");
        assert_eq!(
            reply.nodes.len(),
            2 + others.len() * site_graph::GATEWAYS,
            "{:?}",
            reply.nodes
        );
    }

    #[test]
    fn a_box_that_names_an_address_its_registration_did_not_come_from_is_reached_from_its_site_only(
    ) {
        let r = Registry::new(Limits::default(), Admission::default());
        let t = Instant::now();
        let outside: IpAddr = "203.0.113.7".parse().unwrap();
        let cases = [
            // (the mesh address it names, what it claims, where it registers from, reach)
            ("0.0.0.0:4433", None, outside, Reach::Anywhere),
            ("203.0.113.7:4433", None, outside, Reach::Anywhere),
            ("10.1.0.5:4433", None, outside, Reach::Site),
            ("203.0.113.7:4433", Some(Reach::Site), outside, Reach::Site),
            // A registry on a dual-stack socket sees IPv4 sources as mapped IPv6.
            (
                "10.1.0.5:4433",
                None,
                "::ffff:10.1.0.5".parse().unwrap(),
                Reach::Anywhere,
            ),
        ];
        for (i, (addr, claim, source, want)) in cases.into_iter().enumerate() {
            let id = Identity::from_seed([i as u8 + 1; 32]);
            let reg = Registration {
                addrs: vec![addr.into()],
                tcp: Some("0.0.0.0:443".into()),
                reachable: claim,
                ..reg(&id, T0, 30)
            };
            let reply = r.register(t, T0, source, None, &body(&id, reg)).unwrap();
            assert_eq!(reply.reachable, want, "{addr} {claim:?} from {source}");
            assert_eq!(reply.seen_from, source.to_canonical().to_string());
            let view = r.node(t, &id.node_id().to_hex()).unwrap();
            assert_eq!(view.reachable, want);
            assert_eq!(
                view.tcp,
                Some(format!("{}:443", source.to_canonical())),
                "the TCP address stands for the source like the UDP one"
            );
        }
    }

    /// 30 sites of three boxes, the first ten behind NAT: the open sites link among
    /// themselves as before; a closed site links to open ones (it dials them), and no site
    /// is told to link to a closed one (the dial could not succeed).
    #[test]
    fn sites_behind_nat_link_to_open_sites_and_nobody_dials_them() {
        let r = Registry::new(Limits::default(), Admission::default());
        let t = Instant::now();
        let nat: IpAddr = "203.0.113.1".parse().unwrap();
        let closed = |site: usize| site < 10;
        let mut replies = Vec::new();
        for round in 0..2u64 {
            for i in 0..90u8 {
                let id = Identity::from_seed([i + 1; 32]);
                let site = usize::from(i) % 30;
                let reg = Registration {
                    site: format!("site-{site}"),
                    addrs: vec![format!("10.{site}.0.{i}:4433")],
                    ..reg(&id, T0 + round, 30)
                };
                let source = if closed(site) {
                    nat
                } else {
                    format!("10.{site}.0.{i}").parse().unwrap()
                };
                let reply = r
                    .register(t, T0 + round, source, None, &body(&id, reg))
                    .unwrap();
                if round == 1 {
                    replies.push((site, reply));
                }
            }
        }
        for (site, reply) in &replies {
            let me = format!("site-{site}");
            let others: BTreeSet<&str> = reply
                .nodes
                .iter()
                .filter(|n| n.site != me)
                .map(|n| n.site.as_str())
                .collect();
            assert_eq!(
                others.len(),
                1 + site_graph::RANDOM_LINKS,
                "{me}: {others:?}"
            );
            for n in reply.nodes.iter().filter(|n| n.site != me) {
                assert_eq!(n.reachable, Reach::Anywhere, "{me} was told of {}", n.site);
            }
            let mates = reply.nodes.iter().filter(|n| n.site == me);
            let want = if closed(*site) {
                Reach::Site
            } else {
                Reach::Anywhere
            };
            assert!(mates.clone().count() == 2 && mates.into_iter().all(|n| n.reachable == want));
        }
    }

    #[test]
    fn replay_and_out_of_order_registrations_are_refused() {
        let r = Registry::new(Limits::default(), Admission::default());
        let id = Identity::from_seed([1; 32]);
        let t = Instant::now();
        let first = body(&id, reg(&id, T0, 30));
        r.register(t, T0, src(), None, &first).unwrap();
        assert_eq!(
            r.register(t, T0, src(), None, &first),
            Err(RegistryError::Replay(T0, T0))
        );
        let older = body(&id, reg(&id, T0 - 5, 30));
        assert!(matches!(
            r.register(t, T0, src(), None, &older),
            Err(RegistryError::Replay(..))
        ));
        // Even after the entry expired, within the skew window.
        let later = t + Duration::from_secs(31);
        assert!(matches!(
            r.register(later, T0 + 31_000, src(), None, &first),
            Err(RegistryError::Replay(..))
        ));
        r.register(
            later,
            T0 + 31_000,
            src(),
            None,
            &body(&id, reg(&id, T0 + 31_000, 30)),
        )
        .unwrap();
    }

    #[test]
    fn a_clock_too_far_off_is_refused_with_how_far() {
        let r = Registry::new(Limits::default(), Admission::default());
        let id = Identity::from_seed([1; 32]);
        let e = r
            .register(
                Instant::now(),
                T0,
                src(),
                None,
                &body(&id, reg(&id, T0 - 61_000, 30)),
            )
            .unwrap_err();
        assert_eq!(e, RegistryError::Skew(61, 60));
        assert!(e.to_string().contains("NTP"));
        assert!(r.is_empty());
    }

    #[test]
    fn forged_signatures_store_nothing() {
        let r = Registry::new(Limits::default(), Admission::default());
        let id = Identity::from_seed([1; 32]);
        let thief = Identity::from_seed([2; 32]);
        let forged = serde_json::to_vec(&sign(&thief, reg(&id, T0, 30))).unwrap();
        assert!(matches!(
            r.register(Instant::now(), T0, src(), None, &forged),
            Err(RegistryError::Signature(SignatureError::Mismatch))
        ));
        assert!(r.is_empty());
    }

    #[test]
    fn admission_by_token_and_allow_list() {
        let id = Identity::from_seed([1; 32]);
        let other = Identity::from_seed([2; 32]);
        let r = Registry::new(
            Limits::default(),
            Admission {
                allow: vec![id.node_id()],
                token: Some("s3cret".into()),
                ca: None,
            },
        );
        let t = Instant::now();
        let b = body(&id, reg(&id, T0, 30));
        assert_eq!(
            r.register(t, T0, src(), None, &b),
            Err(RegistryError::Token)
        );
        assert_eq!(
            r.register(t, T0, src(), Some("wrong"), &b),
            Err(RegistryError::Token)
        );
        r.register(t, T0, src(), Some("s3cret"), &b).unwrap();
        let o = body(&other, reg(&other, T0, 30));
        assert!(matches!(
            r.register(t, T0, src(), Some("s3cret"), &o),
            Err(RegistryError::NotAllowed(_))
        ));
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn limits_on_entries_and_on_registrations_per_source() {
        let limits = Limits {
            per_source_per_minute: 3,
            ..Limits::default()
        };
        let r = Registry::new(limits, Admission::default());
        let t = Instant::now();
        let id = Identity::from_seed([1; 32]);
        let mut big = reg(&id, T0, 30);
        big.capabilities = vec!["x".into(); 65];
        assert!(matches!(
            r.register(t, T0, src(), None, &body(&id, big)),
            Err(RegistryError::TooLarge(_))
        ));
        for k in 1..=2 {
            r.register(t, T0, src(), None, &body(&id, reg(&id, T0 + k, 30)))
                .unwrap();
        }
        assert!(matches!(
            r.register(t, T0, src(), None, &body(&id, reg(&id, T0 + 3, 30))),
            Err(RegistryError::RateLimited(..))
        ));
        // Another source is not affected; the next minute starts afresh.
        let other: IpAddr = "192.0.2.8".parse().unwrap();
        r.register(t, T0, other, None, &body(&id, reg(&id, T0 + 4, 30)))
            .unwrap();
        r.register(
            t,
            T0 + 60_000,
            src(),
            None,
            &body(&id, reg(&id, T0 + 60_000, 30)),
        )
        .unwrap();
    }

    #[test]
    fn garbage_and_unknown_fields_are_malformed() {
        let r = Registry::new(Limits::default(), Admission::default());
        let t = Instant::now();
        for bad in [&b"{"[..], b"[]", b"null", b"{\"registration\":{}}"] {
            assert!(matches!(
                r.register(t, T0, src(), None, bad),
                Err(RegistryError::Malformed(_))
            ));
        }
        let id = Identity::from_seed([1; 32]);
        let mut v: serde_json::Value =
            serde_json::from_slice(&body(&id, reg(&id, T0, 30))).unwrap();
        v["registration"]["extra"] = serde_json::json!(1);
        let e = r
            .register(t, T0, src(), None, &serde_json::to_vec(&v).unwrap())
            .unwrap_err();
        assert!(e.to_string().contains("unknown field"), "{e}");
        assert!(r.is_empty());
    }

    #[test]
    fn renewals_that_change_nothing_are_not_news() {
        let r = Registry::new(Limits::default(), Admission::default());
        let id = Identity::from_seed([1; 32]);
        let t = Instant::now();
        let mut events = r.subscribe();
        r.register(t, T0, src(), None, &body(&id, reg(&id, T0, 30)))
            .unwrap();
        r.register(t, T0, src(), None, &body(&id, reg(&id, T0 + 1, 30)))
            .unwrap();
        let mut changed = reg(&id, T0 + 2, 30);
        changed.broadcasts[0].live = false;
        r.register(t, T0, src(), None, &body(&id, changed)).unwrap();
        assert!(matches!(events.try_recv(), Ok(Change::Add(_))));
        assert!(matches!(events.try_recv(), Ok(Change::Update(v)) if !v.broadcasts[0].live));
        assert!(events.try_recv().is_err());
    }
}
