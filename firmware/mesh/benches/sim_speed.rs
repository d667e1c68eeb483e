//! How fast the simulator runs the overlay: simulated seconds per wall-clock second
//! (sites of 20, five live broadcasts, everyone subscribed). The reference in the same run
//! is the 200-node case, so the ratio shows how cost grows with the mesh.
//!
//! The goal sizes are 1 000 and 10 000 nodes. 1 000 runs here (about two minutes); the cost
//! grows much faster than the node count, because across sites the tree is a chain whose
//! length is the number of sites, and path vectors and catalog changes grow with it, so
//! 10 000 nodes (500 sites) is not run by default: `SIM_NODES=10000` measures it.
//!
//! `cargo bench -p cambox-mesh --bench sim_speed`

use std::time::{Duration, Instant};

use cambox_mesh::sim::{LinkSpec, Net};

const PER_SITE: usize = 20;

fn world(nodes: usize) -> Net {
    let sites = nodes / PER_SITE;
    let mut net = Net::sites(1, sites, PER_SITE, 2, |_| LinkSpec::WAN);
    net.run_for(Duration::from_millis(200));
    let bs: Vec<usize> = (0..5)
        .map(|k| {
            let origin = (k * sites / 5) * PER_SITE;
            net.publish(origin, &format!("cam{k}"))
        })
        .collect();
    for n in 0..net.len() {
        for &b in &bs {
            if net.broadcasts[b].origin != n {
                net.subscribe(n, b);
            }
        }
    }
    net
}

/// Simulated seconds per wall second over `seconds` of simulated time, after start-up.
fn speed(nodes: usize, seconds: u64) -> (f64, usize) {
    let mut net = world(nodes);
    net.run_for(Duration::from_secs(2));
    let t = Instant::now();
    net.run_for(Duration::from_secs(seconds));
    let wall = t.elapsed().as_secs_f64();
    let delivered: usize = (0..net.len()).map(|n| net.delivered(n).len()).sum();
    (seconds as f64 / wall, delivered)
}

fn main() {
    let sizes: Vec<usize> = match std::env::var("SIM_NODES").ok().and_then(|s| s.parse().ok()) {
        Some(n) => vec![n],
        None => vec![200, 400, 1000],
    };
    println!("simulator speed: sites of {PER_SITE}, 5 broadcasts at 30 objects/s, all subscribed");
    println!(
        "{:>8} {:>22} {:>14} {:>8}",
        "nodes", "simulated s / wall s", "deliveries", "ratio"
    );
    let mut reference = None;
    for n in sizes {
        let seconds = match n {
            0..=300 => 5,
            301..=600 => 2,
            _ => 1,
        };
        let (s, delivered) = speed(n, seconds);
        let r = *reference.get_or_insert(s);
        println!("{n:>8} {s:>22.2} {delivered:>14} {:>8.3}", s / r);
    }
    println!("(ratio = speed relative to the first size in this run)");
    if std::env::var("SIM_NODES").is_err() {
        println!(
            "10000 nodes: not run by default (500 sites in one chain); SIM_NODES=10000 runs it"
        );
    }
}
