//! The box's side of the registry: it registers with every configured registry, renews at
//! the heartbeat each one asks for, and hands the nodes they return to the mesh as
//! candidates (as mDNS does on the LAN). Losing every registry changes nothing for
//! connections and streams already up: only finding new boxes across sites waits.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cambox_mesh::identity::Identity;
use cambox_mesh::{site_graph, NodeId};
use cambox_registry::model::{BroadcastInfo, NodeView, Reach, RegisterReply, Registration};
use cambox_registry::signing;

use crate::client;
use crate::mesh::{Mesh, SiteAnswer};
use crate::station::Station;

/// What of a registry's answer the mesh needs: every other box of this site (for when
/// mDNS cannot see them), and the boxes it lists of each site this site links to
/// (`site_graph`). The registry already answers with just these sites; the choice is made
/// again here so that merged answers of several registries, or a registry that lists
/// every site, still give a few links and not one per site. Which of them this box dials
/// across sites depends on which site-mates are alive, so the mesh decides that
/// (`site_graph::GatewayDuty`). Other sites with a box that can be reached from its own
/// site only (behind NAT) are left out, as the registry leaves them out: their boxes dial
/// this site's, and a dial the other way could not succeed.
pub fn site_answer(nodes: &[NodeView], me: NodeId, my_site: &str) -> SiteAnswer {
    let mut by_site: BTreeMap<&str, Vec<(NodeId, SocketAddr)>> = BTreeMap::new();
    let mut closed = BTreeSet::new();
    let mut tcp = Vec::new();
    for n in nodes {
        let Some(id) = NodeId::from_hex(&n.node) else {
            continue;
        };
        if id == me {
            continue;
        }
        if n.reachable == Reach::Site && n.site != my_site {
            closed.insert(n.site.as_str());
        }
        if let Some(addr) = n.addrs.iter().find_map(|a| a.parse().ok()) {
            by_site.entry(n.site.as_str()).or_default().push((id, addr));
        }
        if let Some(addr) = n.tcp.as_deref().and_then(|a| a.parse().ok()) {
            tcp.push((id, addr));
        }
    }
    for list in by_site.values_mut() {
        list.sort_by_key(|(id, _)| *id);
        list.dedup_by_key(|(id, _)| *id);
    }
    let mates = by_site.get(my_site).cloned().unwrap_or_default();
    let sites: Vec<&str> = by_site
        .keys()
        .copied()
        .filter(|s| !closed.contains(s))
        .collect();
    let linked = site_graph::linked_sites(my_site, &sites)
        .into_iter()
        .map(|site| by_site[site].clone())
        .collect();
    SiteAnswer {
        mates,
        linked,
        tcp,
        closed: false,
    }
}

/// How a box says where it can be reached (`reachable` in cambox.toml).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Reachable {
    /// It names its own address; the registry compares it with where the registration
    /// came from and so finds a NAT or a proxy between.
    #[default]
    Auto,
    /// It names no address: the one its registration comes from stands (a NAT that
    /// forwards the mesh ports to it).
    Anywhere,
    /// From its own site only, whatever the registry sees (a firewall lets nothing in).
    Site,
}

impl std::str::FromStr for Reachable {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "auto" => Ok(Reachable::Auto),
            "anywhere" => Ok(Reachable::Anywhere),
            "site" => Ok(Reachable::Site),
            other => Err(format!("reachable '{other}' is not auto, anywhere or site")),
        }
    }
}

/// How this box registers, beside what the station and mesh say about it.
#[derive(Debug, Clone)]
pub struct Registering {
    /// Registry URLs (`http://host:port`, or a box's `/registry`).
    pub urls: Vec<String>,
    pub token: Option<String>,
    pub client: client::ApiClient,
    pub reachable: Reachable,
    /// The HTTP proxy (HOST:PORT) the box goes out through, if it must: its address is
    /// then never the one registrations come from.
    pub proxy: Option<String>,
}

/// The address this box has on its way to `registry`: toward the proxy when it goes out
/// through one (`HOST:PORT`), else toward the registry itself. What a box names as its
/// own when it registers, and what `cambox doctor` compares with what the registry sees.
pub async fn own_ip_toward(registry: &str, proxy: Option<&str>) -> Option<IpAddr> {
    let first_hop = proxy.map(str::to_owned).or_else(|| host_port(registry))?;
    local_ip_toward(&first_hop).await
}

/// The address this box has on the way to `host_port` (the one a packet to it would
/// leave from); no packet is sent.
async fn local_ip_toward(host_port: &str) -> Option<IpAddr> {
    let target = tokio::net::lookup_host(host_port).await.ok()?.next()?;
    let any: SocketAddr = match target {
        SocketAddr::V4(_) => ([0, 0, 0, 0], 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = std::net::UdpSocket::bind(any).ok()?;
    socket.connect(target).ok()?;
    socket.local_addr().ok().map(|a| a.ip())
}

/// `HOST:PORT` of a registry URL, with the scheme's port when it names none.
fn host_port(url: &str) -> Option<String> {
    let uri: hyper::Uri = url.parse().ok()?;
    let port = uri
        .port_u16()
        .unwrap_or(if uri.scheme_str() == Some("https") {
            443
        } else {
            80
        });
    Some(format!("{}:{port}", uri.host()?))
}

/// `addr` with an unspecified IP replaced by `ip`.
fn named(addr: SocketAddr, ip: Option<IpAddr>) -> SocketAddr {
    match ip {
        Some(ip) if addr.ip().is_unspecified() => SocketAddr::new(ip, addr.port()),
        _ => addr,
    }
}

/// Used until a registry says otherwise, and while one cannot be reached.
const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(10);
/// An entry lives for this many heartbeats, so one lost renewal does not drop the box.
const TTL_HEARTBEATS: u32 = 3;

/// Starts one task per registry URL.
pub fn spawn(
    registering: Registering,
    identity: Identity,
    station: Arc<Station>,
    mesh: Mesh,
    http: SocketAddr,
) {
    let identity = Arc::new(identity);
    let registering = Arc::new(registering);
    for url in registering.urls.clone() {
        let (identity, station, mesh, registering) = (
            identity.clone(),
            station.clone(),
            mesh.clone(),
            registering.clone(),
        );
        tokio::spawn(async move {
            renew_forever(url, &registering, identity, station, mesh, http).await;
        });
    }
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Where this box says it listens: its mesh endpoint over UDP and over TCP, and its web
/// page. An unspecified IP stands for the address the registry sees.
#[derive(Debug, Clone, Copy)]
pub struct Listening {
    pub mesh: SocketAddr,
    pub tcp: Option<SocketAddr>,
    pub http: SocketAddr,
}

/// This box as it registers itself.
pub fn registration(
    identity: &Identity,
    station: &Station,
    at: Listening,
    reachable: Option<Reach>,
    heartbeat: Duration,
) -> Registration {
    let status = station.status();
    Registration {
        node: identity.node_id().to_hex(),
        name: status.node,
        site: status.site,
        addrs: vec![at.mesh.to_string()],
        tcp: at.tcp.map(|a| a.to_string()),
        reachable,
        board: station.release().map(|r| r.board.clone()),
        version: station.release().map(|r| r.version.to_string()),
        update: station
            .update_line()
            .map(|(state, version)| format!("{state} {version}")),
        http: Some(at.http.to_string()),
        broadcasts: vec![BroadcastInfo {
            name: status.stream,
            live: status.live,
        }],
        capabilities: vec!["video".into(), "audio".into()],
        timestamp_ms: wall_ms(),
        ttl_s: (heartbeat.as_secs() as u32).max(1) * TTL_HEARTBEATS,
    }
}

async fn renew_forever(
    base: String,
    registering: &Registering,
    identity: Arc<Identity>,
    station: Arc<Station>,
    mesh: Mesh,
    http: SocketAddr,
) {
    let Registering {
        token,
        client,
        reachable,
        proxy,
        ..
    } = registering;
    let url = format!("{}/api/v1/register", base.trim_end_matches('/'));
    // Behind a proxy the registry sees the proxy's address, never the box's: it is
    // reached from its own site only.
    let claim = match (reachable, proxy) {
        (Reachable::Site, _) | (Reachable::Auto, Some(_)) => Some(Reach::Site),
        _ => None,
    };
    let mut heartbeat = DEFAULT_HEARTBEAT;
    let mut was_ok: Option<bool> = None;
    let mut on_air = station.on_air();
    let seeding = crate::update::from_registry::Seeding::default();
    let certificate = mesh
        .trust
        .as_ref()
        .filter(|t| !t.chain().is_empty())
        .map(|t| cambox_trust::pem::encode_certificates(t.chain()));
    loop {
        // The box's own address on the way out, looked up every time: it may have moved.
        let own_ip = match reachable {
            Reachable::Anywhere => None,
            _ => own_ip_toward(&base, proxy.as_deref()).await,
        };
        let at = Listening {
            mesh: named(mesh.local_addr, own_ip),
            tcp: mesh.tcp_addr.map(|a| named(a, own_ip)),
            http: named(http, own_ip),
        };
        let r = registration(&identity, &station, at, claim, heartbeat);
        let mut signed = signing::sign(&identity, r);
        signed.certificate = certificate.clone();
        let body = serde_json::to_vec(&signed).unwrap_or_default();
        let result = match client.post_json(&url, body, token.as_deref()).await {
            Ok((200, body)) => serde_json::from_slice::<RegisterReply>(&body)
                .map_err(|e| format!("unreadable answer: {e}")),
            Ok((status, body)) => Err(format!(
                "answered {status}: {}",
                String::from_utf8_lossy(&body).trim()
            )),
            Err(e) => Err(e.to_string()),
        };
        match result {
            Ok(reply) => {
                if was_ok != Some(true) || station.reach().map(|r| r.0) != Some(reply.reachable) {
                    tracing::info!(
                        registry = %base,
                        nodes = reply.nodes.len(),
                        reachable = reply.reachable.as_str(),
                        seen_from = %reply.seen_from,
                        "registered"
                    );
                }
                station.set_reach(reply.reachable, reply.seen_from.clone());
                was_ok = Some(true);
                heartbeat = Duration::from_secs(reply.heartbeat_s.clamp(1, 3600));
                let site = station.settings.site.clone();
                let mut answer = site_answer(&reply.nodes, identity.node_id(), &site);
                answer.closed = reply.reachable == Reach::Site;
                mesh.site_answer(answer);
                if let Some(trust) = &mesh.trust {
                    if reply.revocations > trust.list_number() {
                        fetch_revocations(client, &base, &mesh).await;
                    }
                }
                crate::update::from_registry::follow(
                    client,
                    &base,
                    &mesh,
                    &station,
                    &reply.updates,
                    &seeding,
                )
                .await;
            }
            Err(e) => {
                if was_ok != Some(false) {
                    tracing::warn!(registry = %base, "cannot register: {e}; retrying every {heartbeat:?}, streams already flowing are not affected");
                }
                was_ok = Some(false);
            }
        }
        // Renew at the heartbeat, or at once when the box goes live or stops, so the
        // registry's list of live streams follows the button.
        tokio::select! {
            _ = tokio::time::sleep(heartbeat) => {}
            _ = on_air.changed() => {}
        }
    }
}

/// Takes the registry's newer revocation list into the mesh, which keeps it and passes
/// it to every neighbour.
async fn fetch_revocations(client: &client::ApiClient, base: &str, mesh: &Mesh) {
    let url = format!("{}/api/v1/revocations", base.trim_end_matches('/'));
    let outcome = match client.get_whole(&url).await {
        Ok((200, list)) => match mesh.revocations(list).await {
            Ok(Ok(_)) => return,
            Ok(Err(e)) => e,
            Err(e) => e.to_string(),
        },
        Ok((status, body)) => format!("answered {status}: {}", String::from_utf8_lossy(&body)),
        Err(e) => e.to_string(),
    };
    tracing::warn!(registry = %base, "cannot take the registry's revocation list: {outcome}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(id: u8, site: &str) -> NodeView {
        NodeView {
            node: NodeId([id; 32]).to_hex(),
            name: format!("b{id}"),
            site: site.into(),
            addrs: vec![format!("10.0.0.{id}:4433")],
            tcp: Some(format!("10.0.0.{id}:443")),
            reachable: Reach::Anywhere,
            board: None,
            version: None,
            update: None,
            http: None,
            broadcasts: vec![],
            capabilities: vec![],
            expires_in_s: 30,
        }
    }

    /// Whom the box `me` dials or is dialed by, from this answer alone (no site-mate lost):
    /// its site-mates and, if it is a gateway, one box of each linked site.
    fn ids(nodes: &[NodeView], me: u8, site: &str) -> Vec<u8> {
        let answer = site_answer(nodes, NodeId([me; 32]), site);
        let mut duty = site_graph::GatewayDuty::new(NodeId([me; 32]));
        let (mates, linked) = answer.ids();
        duty.answer(mates.clone(), linked);
        let mut got: Vec<u8> = mates
            .into_iter()
            .chain(duty.across())
            .map(|id: NodeId| id.0[0])
            .collect();
        got.sort_unstable();
        got
    }

    #[test]
    fn a_gateway_dials_its_site_and_the_gateway_of_its_rank_in_each_linked_site() {
        let nodes = [
            view(9, "a"),
            view(3, "a"),
            view(4, "a"),
            view(10, "a"),
            view(7, "b"),
            view(5, "b"),
            view(6, "b"),
            view(8, "c"),
        ];
        // Two other sites: a site links to up to three, so to both.
        assert_eq!(ids(&nodes, 3, "a"), vec![4, 5, 8, 9, 10]);
        assert_eq!(ids(&nodes, 4, "a"), vec![3, 6, 8, 9, 10]);
        // c has one box, which every rank dials.
        assert_eq!(ids(&nodes, 9, "a"), vec![3, 4, 7, 8, 10]);
        // Not a gateway: its site only, the world beyond through 3, 4 and 9.
        assert_eq!(ids(&nodes, 10, "a"), vec![3, 4, 9]);
    }

    /// A merged answer that lists a site behind NAT: nobody here dials it (its boxes dial
    /// out), but its site-mates still link to each other.
    #[test]
    fn a_site_behind_nat_is_not_dialed_from_outside() {
        let behind = |id: u8, site: &str| NodeView {
            reachable: Reach::Site,
            ..view(id, site)
        };
        let nodes = [view(3, "a"), view(7, "b"), behind(5, "c"), behind(6, "c")];
        assert_eq!(ids(&nodes, 3, "a"), vec![7]);
        // At the closed site: its mate, and the open sites it dials out to.
        assert_eq!(ids(&nodes, 5, "c"), vec![3, 6, 7]);
        let answer = site_answer(&nodes, NodeId([3; 32]), "a");
        assert!(answer
            .tcp
            .contains(&(NodeId([7; 32]), "10.0.0.7:443".parse().unwrap())));
    }

    #[test]
    fn an_answer_listing_every_site_still_gives_a_few_links() {
        let nodes: Vec<NodeView> = (1..=60).map(|i| view(i, &format!("site-{i}"))).collect();
        let got = ids(&nodes, 1, "site-1");
        assert_eq!(got.len(), 1 + site_graph::RANDOM_LINKS, "{got:?}");
        assert!(!got.contains(&1));
    }
}
