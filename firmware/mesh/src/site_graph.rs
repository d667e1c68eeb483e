//! Which boxes link across sites, and to which sites: the graph that catalogs and trees of
//! sites run over when boxes find each other through a registry.
//!
//! Version 1 had every box dial the two lowest ids of every other site: O(sites) links per
//! box, and every link carried the whole catalog, so a company of 1 000 sites paid for
//! 1 000 copies of each broadcast's news at every box. Now a site keeps a few *gateways*
//! (its lowest ids) and links to a few other sites only: the next one on a ring of all
//! sites (so the graph is connected) and [`RANDOM_LINKS`] chosen by a hash of both names
//! (so it is an expander: diameter about log(sites)). Each gateway links to the gateway of
//! the same rank there, so losing one gateway leaves the site its other links. The rest of
//! a site reaches other sites through its gateways over the LAN, where catalog news is
//! told once per route.
//!
//! Every box and every registry computes the same answer from the same site names, with
//! nobody elected and nothing to keep in step.

use std::collections::BTreeSet;

/// Boxes per site that keep links to other sites: its lowest ids. With two, a tenth of all
/// boxes failing at once cuts one site in a hundred off until the registry's next answer.
pub const GATEWAYS: usize = 3;

/// Sites each site picks by hash, beside the next one on the ring. Links go both ways, so
/// a site has about twice this many plus two neighbouring sites.
pub const RANDOM_LINKS: usize = 2;

/// FNV-1a: stable across builds and machines, unlike std's hasher, so every box and
/// registry agrees.
fn fnv(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.bytes().chain([0xff]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// The sites `my_site` dials, out of every known site (`sites`, in any order, `my_site`
/// among them or not): the next on the ring ordered by hash, and the [`RANDOM_LINKS`]
/// others that rank lowest by a hash of both names. Others dial this site too, so its
/// neighbours are these and the sites whose picks include it.
pub fn linked_sites<'a>(my_site: &str, sites: &[&'a str]) -> Vec<&'a str> {
    let mut ring: Vec<(u64, &str)> = sites
        .iter()
        .filter(|s| **s != my_site)
        .map(|s| (fnv(&[s]), *s))
        .collect();
    if ring.is_empty() {
        return Vec::new();
    }
    ring.sort_unstable();
    ring.dedup();
    let me = (fnv(&[my_site]), my_site);
    let next = ring.iter().find(|s| **s > me).unwrap_or(&ring[0]).1;
    let mut by_pair: Vec<(u64, &str)> = ring
        .iter()
        .filter(|(_, s)| *s != next)
        .map(|(_, s)| (fnv(&[my_site, s]), *s))
        .collect();
    by_pair.sort_unstable();
    std::iter::once(next)
        .chain(by_pair.into_iter().take(RANDOM_LINKS).map(|(_, s)| s))
        .collect()
}

/// The rank of `me` among its site's gateways (`site_ids`: every living id of its site,
/// itself included or not, in any order), or `None` if it is not one.
pub fn gateway_rank<'a, T: Ord + 'a>(
    me: &T,
    site_ids: impl IntoIterator<Item = &'a T>,
) -> Option<usize> {
    let below = site_ids.into_iter().filter(|id| *id < me).count();
    (below < GATEWAYS).then_some(below)
}

/// Which gateway of a linked site (`ids`: its ids, lowest first) a gateway of rank `rank`
/// dials: the one of the same rank, or its lowest if it has fewer.
pub fn peer_gateway<T>(rank: usize, ids: &[T]) -> Option<&T> {
    ids.get(rank.min(GATEWAYS - 1)).or(ids.first())
}

/// Whether this box is one of its site's gateways, and which boxes of other sites it links
/// to, kept up to date as its site-mates' links go down and come back.
///
/// The registry forgets a dead box only when its registration expires (three heartbeats,
/// 30 s), so a site whose gateways all died at once would be cut off that long. Its other
/// boxes see their links to the gateways go down within the idle timeout, and the lowest
/// living ones stand in at once: the boxes the registry will name anyway once the dead
/// registrations expire, so nothing is dialed that would not be dialed a little later.
#[derive(Debug, Clone)]
pub struct GatewayDuty<T> {
    me: T,
    /// The other boxes of this site, lowest first, as the registry last listed them.
    mates: Vec<T>,
    /// The boxes of each site this site links to, lowest first.
    linked: Vec<Vec<T>>,
    /// Site-mates whose link went down and has not come back.
    lost: BTreeSet<T>,
}

impl<T: Ord + Clone> GatewayDuty<T> {
    pub fn new(me: T) -> Self {
        Self {
            me,
            mates: Vec::new(),
            linked: Vec::new(),
            lost: BTreeSet::new(),
        }
    }

    /// The registry's answer: this site's other boxes, and the boxes it lists of each site
    /// this site links to (`linked_sites`).
    pub fn answer(&mut self, mut mates: Vec<T>, linked: Vec<Vec<T>>) {
        mates.retain(|m| *m != self.me);
        mates.sort_unstable();
        mates.dedup();
        self.lost.retain(|l| mates.binary_search(l).is_ok());
        self.mates = mates;
        self.linked = linked
            .into_iter()
            .map(|mut ids| {
                ids.sort_unstable();
                ids.dedup();
                ids
            })
            .filter(|ids| !ids.is_empty())
            .collect();
    }

    /// A link went down. True when that makes this box a gateway of another rank (dial
    /// `across` again).
    pub fn lost(&mut self, id: &T) -> bool {
        if self.mates.binary_search(id).is_err() {
            return false;
        }
        let before = self.rank();
        self.lost.insert(id.clone());
        self.rank() != before
    }

    /// A link came up: a site-mate lost before counts again.
    pub fn found(&mut self, id: &T) {
        self.lost.remove(id);
    }

    /// This box's rank among its site's gateways, counting only site-mates not lost.
    pub fn rank(&self) -> Option<usize> {
        let living = self.mates.iter().filter(|m| !self.lost.contains(*m));
        gateway_rank(&self.me, living)
    }

    /// The boxes of other sites this box dials now: the gateway of its rank in each linked
    /// site, or nobody if it is not a gateway.
    pub fn across(&self) -> Vec<T> {
        let Some(rank) = self.rank() else {
            return Vec::new();
        };
        self.linked
            .iter()
            .filter_map(|ids| peer_gateway(rank, ids).cloned())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, VecDeque};

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("site-{i}")).collect()
    }

    /// Undirected site graph: each site's picks, both ways.
    fn graph(sites: &[&str]) -> BTreeMap<String, BTreeSet<String>> {
        let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for s in sites {
            for t in linked_sites(s, sites) {
                g.entry(s.to_string()).or_default().insert(t.to_string());
                g.entry(t.to_string()).or_default().insert(s.to_string());
            }
        }
        g
    }

    fn eccentricity(g: &BTreeMap<String, BTreeSet<String>>, from: &str) -> Option<usize> {
        let mut dist = BTreeMap::from([(from.to_string(), 0)]);
        let mut queue = VecDeque::from([from.to_string()]);
        while let Some(s) = queue.pop_front() {
            let d = dist[&s];
            for t in &g[&s] {
                if !dist.contains_key(t) {
                    dist.insert(t.clone(), d + 1);
                    queue.push_back(t.clone());
                }
            }
        }
        (dist.len() == g.len()).then(|| dist.values().copied().max().unwrap_or(0))
    }

    #[test]
    fn a_thousand_sites_form_one_graph_of_small_degree_and_diameter() {
        let names = names(1000);
        let sites: Vec<&str> = names.iter().map(String::as_str).collect();
        let g = graph(&sites);
        assert_eq!(g.len(), 1000, "every site has a neighbour");
        let max_degree = g.values().map(BTreeSet::len).max().unwrap();
        let mean_degree = g.values().map(BTreeSet::len).sum::<usize>() as f64 / 1000.0;
        let diameter = sites
            .iter()
            .step_by(50)
            .map(|s| eccentricity(&g, s).expect("connected"))
            .max()
            .unwrap();
        // An expander of mean degree ~6 (log5(1000) is 4.3); here: mean 5.98, max 17,
        // diameter 7.
        assert!(
            mean_degree <= 2.0 * (RANDOM_LINKS + 1) as f64,
            "{max_degree} {mean_degree} {diameter}"
        );
        assert!(max_degree <= 20, "{max_degree} {mean_degree} {diameter}");
        assert!(diameter <= 8, "{diameter}");
    }

    #[test]
    fn every_caller_gets_the_same_answer_whatever_the_order() {
        let names = names(40);
        let mut sites: Vec<&str> = names.iter().map(String::as_str).collect();
        let a = linked_sites("site-7", &sites);
        sites.reverse();
        assert_eq!(a, linked_sites("site-7", &sites));
        assert_eq!(a.len(), 1 + RANDOM_LINKS);
        assert!(!a.contains(&"site-7"));
    }

    #[test]
    fn few_sites_link_to_each_other_and_one_site_to_nobody() {
        assert!(linked_sites("a", &["a"]).is_empty());
        assert_eq!(linked_sites("a", &["a", "b"]), vec!["b"]);
        let three = linked_sites("a", &["a", "b", "c"]);
        assert_eq!(three.len(), 2);
    }

    #[test]
    fn gateways_are_the_lowest_ids_and_pair_by_rank() {
        let ids = [9, 3, 7, 5, 11];
        assert_eq!(gateway_rank(&3, &ids), Some(0));
        assert_eq!(gateway_rank(&5, &ids), Some(1));
        assert_eq!(gateway_rank(&7, &ids), Some(2));
        assert_eq!(gateway_rank(&9, &ids), None);
        assert_eq!(peer_gateway(1, &[4, 6, 8]), Some(&6));
        assert_eq!(peer_gateway(2, &[4]), Some(&4));
        assert_eq!(peer_gateway::<u8>(0, &[]), None);
    }

    #[test]
    fn the_lowest_living_site_mates_stand_in_for_lost_gateways() {
        // Site of 10, 20, 30, 40, 50; this box is 40, not a gateway while the three
        // lowest live.
        let mut duty = GatewayDuty::new(40);
        duty.answer(vec![50, 30, 10, 20, 40], vec![vec![3, 1, 2], vec![7]]);
        assert_eq!(duty.rank(), None);
        assert!(duty.across().is_empty());
        assert!(!duty.lost(&50), "a higher mate changes nothing");
        assert!(!duty.lost(&99), "not a mate");
        assert!(duty.lost(&20), "one gateway gone: 40 is the third");
        assert_eq!(duty.rank(), Some(2));
        assert_eq!(duty.across(), vec![3, 7], "rank 2 there, or the lowest");
        assert!(duty.lost(&10));
        assert_eq!(duty.rank(), Some(1));
        assert_eq!(duty.across(), vec![2, 7]);
        duty.found(&10);
        duty.found(&20);
        assert_eq!(duty.rank(), None, "back when they are");
        // A new answer that no longer lists a lost mate forgets it was lost.
        duty.lost(&20);
        duty.answer(vec![10, 30, 50], vec![vec![1]]);
        assert_eq!(duty.rank(), Some(2));
        duty.answer(vec![10, 20, 30, 50], vec![vec![1]]);
        assert_eq!(duty.rank(), None, "20 listed again and not lost any more");
    }
}
