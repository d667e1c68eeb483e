//! A link a tree dialed (a redirect sent a site's puller to a box of another site) is
//! told the entries of what flows over it and of what its sender carries, never the
//! whole catalog: every other route reaches both ends over the links the mesh made.

use std::time::Duration;

use cambox_mesh::sim::{LinkSpec, Net};

use crate::common::{watched_in_every_site, PER_SITE, SITES};

/// Broadcasts nobody watches: most of the catalog every box holds.
const IDLE: usize = 20;
/// The fewest bytes an entry of these broadcasts takes: origin and a 5-byte name (39),
/// site and box name (at least 2 + 5 and 2 + 1), tracks (2 + 2), a path of one hop
/// (2 + 4), and carrying, version and ttl (13).
const ENTRY_MIN: u64 = 39 + 7 + 3 + 4 + 6 + 13;

#[test]
fn a_link_a_tree_dialed_is_told_what_flows_over_it_not_the_whole_catalog() {
    let mut net = Net::sites_by_registry(9, &[PER_SITE; SITES], |_| LinkSpec::WAN);
    net.run_for(Duration::from_secs(2));
    for k in 0..IDLE {
        net.publish(k * 7 + 1, &format!("idle{k:02}"));
    }
    let watched = watched_in_every_site(&mut net, &[0, PER_SITE, 2 * PER_SITE], "cam00");
    net.run_for(Duration::from_secs(3));
    for &(viewer, b) in &watched {
        let id = &net.broadcasts[b].id;
        assert!(
            net.delivered(viewer).iter().any(|d| d.broadcast == *id),
            "viewer {viewer} received nothing of broadcast {b}"
        );
    }
    let dialed = net
        .dialed_links()
        .into_iter()
        .filter(|&(a, b)| net.site_of(a) != net.site_of(b))
        .count() as u64;
    assert!(dialed > 0, "the trees dialed no link across sites");
    let catalog = net.control_over_dialed.get("Catalog").copied().unwrap_or(0);
    let whole = (IDLE as u64 + 3) * ENTRY_MIN;
    println!(
        "{dialed} links across sites that trees dialed: {catalog} bytes of catalog over them, \
         {} a link; a whole catalog is at least {whole}",
        catalog / dialed
    );
    // Told the whole catalog, each such link carried it both ways.
    assert!(
        catalog < dialed * whole / 2,
        "{catalog} bytes of catalog over {dialed} links trees dialed"
    );
}
