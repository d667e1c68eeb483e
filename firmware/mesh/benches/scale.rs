//! The company-scale world in the simulator: N nodes in N/10 sites of skewed sizes (a few of
//! 100 and more, most of 2-10), a full LAN mesh in each site, sites linked as the registry
//! links them (`site_graph`: three gateways per site, each site dialing three others; one
//! way 5-40 ms, 1 % loss), every node announcing itself (`.node`), 100 live
//! broadcasts at every size, each watched at between 1 site and 30 % of the sites (one
//! viewer per site; 1 to 300 sites at 10 000 nodes, most broadcasts at few).
//!
//! Prints one line per size: `scale ` and a JSON object (`nodes`, `sites`, `sim_speed`,
//! `control_kbps_per_node` (the operation window: ordinary life at the rates of `Rates`,
//! viewers coming and going, broadcasts starting and ending, a box failing, commands and
//! chat), `control_kbps_steady` (the steady window, nothing happening),
//! `control_kbps_whole_run` (every phase before the operation window, days of events
//! packed into seconds), `control_kb_per_node_by_phase` (start, live, join, steady,
//! join_50, commands, chat, repair, ends, expiry, operation; kB per box of the world,
//! dead ones included, where the window's average is per living box),
//! `state_entries_per_node`, `copies_into_site_max`,
//! `site_tree_depth`, `delay_p99_ms`, `join_p99_ms`, `repair_p99_ms`, `repair_max_ms`,
//! `command_rtt_p99_ms`, `chat_p99_ms`: from a chat message sent to each of 50 sites'
//! followers of its room, `chat_missing`, `listed_within_2s`: the share of every box's stream list that
//! shows the broadcasts 2 s after they went live, `unlisted_within_5s`: the share that
//! has dropped ten ended ones 5 s after), and progress to stderr with the control bytes
//! per box so far after each phase. Broadcasts run at 10 objects a second (a keyframe of
//! 6 kB, then 1.5 kB objects) to keep the simulation's own cost down; the tree and
//! catalog work per object is the same as at 30.
//!
//! `cargo bench -p cambox-mesh --bench scale` (sizes: `SCALE_NODES=1000,10000`, the
//! default; the simulated seconds of the steady window: `SCALE_SECONDS`, default 4;
//! `SCALE_DEBUG=1` adds catalog entries and control bytes by kind after each phase and
//! prints every orphaned viewer's tree after the repair; the operation window's simulated
//! seconds: `SCALE_OPERATION_SECONDS`, default 30; `SCALE_OPERATION_ONLY=ViewerJoins` (or
//! `ViewerLeaves`, `BroadcastEnds`, `BroadcastStarts`, `BoxFails`, `Command`, `Chat`,
//! `NewSpeaker`) lets only that happen in it, to see what each costs).
//!
//! `SCALE_SHORT=1` is the short scenario the tests run at 10 000 nodes (about a minute):
//! 10 broadcasts, the steady window alone, one line `scale-short {json}` (`nodes`,
//! `sites`, `viewers`, `sim_speed`, `copies_into_site_max`, `site_tree_depth`,
//! `delay_p99_ms`, `starved`), and exit status 1 when a viewer received nothing in the
//! window or a site took more than 1.05 copies of a broadcast in.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cambox_mesh::routed::CommandAllow;
use cambox_mesh::sim::{LinkSpec, Net, SplitMix};

/// Live broadcasts in the world, at every size: state and control traffic then grow with
/// the nodes alone.
const BROADCASTS: usize = 100;

/// Live broadcasts in the short scenario: going live and joining cost about a minute.
const SHORT_BROADCASTS: usize = 10;

/// Ordinary life at a company, as rates: the window the control traffic a box carries on
/// average (`control_kbps_per_node`, the goal of 2 kbit/s) is measured over. The phases
/// before it pack days of events into seconds (every broadcast going live at once,
/// thousands of joins in a second, a tenth of the boxes failing together); what each
/// costs is printed per phase, and their average is `control_kbps_whole_run`.
struct Rates;

impl Rates {
    /// A viewer watches for ten minutes on average, then another starts elsewhere.
    const VIEWER_SESSION_S: f64 = 600.0;
    /// A broadcast is live for an hour on average, then another goes live.
    const BROADCAST_LIFE_S: f64 = 3_600.0;
    /// A box fails once a day.
    const BOX_FAILS_EVERY_S: f64 = 86_400.0;
    /// Commands a second in the whole mesh, each to a box of another site whose way
    /// nobody has looked up yet (a lookup each).
    const COMMANDS_PER_S: f64 = 1.0;
    /// Chat messages a second in the whole mesh, to a room followed at 50 sites, by the
    /// people who spoke there before.
    const CHAT_PER_S: f64 = 1.0;
    /// Someone new speaks in the room once a minute: a broadcast of their own, which
    /// every follower joins.
    const NEW_SPEAKER_EVERY_S: f64 = 60.0;
}

/// What happens in the operation window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Happening {
    ViewerLeaves,
    ViewerJoins,
    BroadcastEnds,
    BroadcastStarts,
    BoxFails,
    Command,
    Chat,
    NewSpeaker,
}

impl Happening {
    const ALL: [Happening; 8] = [
        Happening::ViewerLeaves,
        Happening::ViewerJoins,
        Happening::BroadcastEnds,
        Happening::BroadcastStarts,
        Happening::BoxFails,
        Happening::Command,
        Happening::Chat,
        Happening::NewSpeaker,
    ];
}

/// The window's happenings in time order: each kind `rate x window` times (at least
/// once, so a short window overstates), spread evenly.
fn happenings(window: Duration, counts: &[(Happening, f64)]) -> Vec<(Duration, Happening)> {
    let mut out = Vec::new();
    for &(what, expected) in counts {
        let n = (expected.round() as usize).max(1);
        for i in 0..n {
            out.push((window.mul_f64((i as f64 + 0.5) / n as f64), what));
        }
    }
    out.sort_by_key(|(at, _)| *at);
    out
}

/// What a run found: its line of figures, and for the short scenario what failed.
struct Outcome {
    line: String,
    failed: Vec<String>,
}

/// Site sizes adding up to `nodes`, ten boxes a site on average as in the world
/// (1 000 sites at 10 000 nodes): one site in 40 of 100-150 boxes, the rest of 2-10,
/// most of them near 10 (the larger of two draws).
fn site_sizes(net_seed: &mut u64, nodes: usize) -> Vec<usize> {
    let mut rand = |n: u64| {
        *net_seed = net_seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (*net_seed >> 33) % n
    };
    let mut sizes: Vec<usize> = vec![100 + rand(51) as usize];
    while sizes.iter().sum::<usize>() < nodes {
        let size = if sizes.len().is_multiple_of(40) {
            100 + rand(51)
        } else {
            2 + rand(9).max(rand(9))
        };
        sizes.push(size as usize);
    }
    let over = sizes.iter().sum::<usize>() - nodes;
    let last = sizes.len() - 1;
    sizes[last] -= over.min(sizes[last] - 1);
    sizes
}

/// The p-th percentile in ms, as JSON (`null` when nothing was measured).
fn percentile(mut v: Vec<Duration>, p: usize) -> String {
    if v.is_empty() {
        return "null".into();
    }
    v.sort();
    let ms = v[(v.len() * p / 100).min(v.len() - 1)].as_secs_f64() * 1000.0;
    format!("{ms:.0}")
}

/// Of every living box and every broadcast in `ids`, the share whose stream list shows it.
fn listed_share(net: &Net, ids: &BTreeSet<cambox_mesh::BroadcastId>) -> f64 {
    let now = net.now();
    let (mut shown, mut pairs) = (0usize, 0usize);
    for n in (0..net.len()).filter(|&n| net.is_alive(n)) {
        shown += net
            .node(n)
            .known_broadcasts(now)
            .iter()
            .filter(|k| ids.contains(&k.broadcast))
            .count();
        pairs += ids.len();
    }
    shown as f64 / pairs.max(1) as f64
}

/// Which broadcasts came into `site` over which links, against what their origins
/// produced (`SCALE_DEBUG`): where a second copy came from.
fn print_copies_into(net: &Net, site: usize, by: &cambox_mesh::sim::MediaInByLink) {
    eprintln!("copies into site {site}:");
    for ((s, id), links) in by.iter().filter(|((s, _), _)| *s == site) {
        let k = net.broadcasts.iter().position(|b| &b.id == id);
        let produced = k.map_or(0, |k| net.produced[k]).max(1);
        let total: u64 = links.values().sum();
        eprintln!(
            "  site {s} {} b{k:?}: {:.3} copies",
            id.name,
            total as f64 / produced as f64
        );
        for ((from, to), bytes) in links {
            eprintln!(
                "    {from} (site {}) -> {to}: {:.3}; {to} now: {}",
                net.site_of(*from),
                *bytes as f64 / produced as f64,
                net.node(*to).tree_state(id)
            );
        }
    }
}

/// Control bytes per node that each phase cost (kB), in order: what a going live, a join
/// or a repair costs, apart from the whole run's average, which they make.
#[derive(Default)]
struct PhaseCost {
    so_far: f64,
    phases: Vec<(&'static str, f64)>,
}

impl PhaseCost {
    fn mark(&mut self, net: &Net, phase: &'static str) {
        let kb = net.control_total as f64 / 1000.0 / net.len() as f64;
        self.phases.push((phase, kb - self.so_far));
        self.so_far = kb;
    }

    fn json(&self) -> String {
        let fields: Vec<String> = self
            .phases
            .iter()
            .map(|(phase, kb)| format!("\"{phase}\":{kb:.1}"))
            .collect();
        format!("{{{}}}", fields.join(","))
    }
}

/// Node `n`'s place in the tree of `id`, without its routes (a line of a chain).
fn tree_of(net: &Net, n: usize, id: &cambox_mesh::BroadcastId) -> String {
    let state = net.node(n).tree_state(id);
    state.split(" routes").next().unwrap_or("").to_string()
}

/// One line on stderr per phase, with the control bytes each node sent so far (on
/// average): which phase costs what.
fn progress(net: &Net, t: Instant, what: &str) {
    eprintln!(
        "scale {}: {what} ({:.0} s; control so far {:.1} kB per node)",
        net.len(),
        t.elapsed().as_secs_f64(),
        net.control_total as f64 / 1000.0 / net.len() as f64
    );
    if std::env::var("SCALE_DEBUG").is_ok() {
        eprintln!("  catalog entries so far: {:?}", net.catalog_entries);
        eprintln!("  control bytes by type so far: {:?}", net.control_by_type);
        eprintln!(
            "  of them over links trees dialed: {:?}",
            net.control_over_dialed
        );
    }
}

fn run(nodes: usize, steady: Duration, short: bool) -> Outcome {
    let broadcasts = if short { SHORT_BROADCASTS } else { BROADCASTS };
    let t0 = Instant::now();
    let mut seed = 42;
    let sizes = site_sizes(&mut seed, nodes);
    let sites = sizes.len();
    let mut net = Net::sites_by_registry(1, &sizes, |net| {
        let delay = Duration::from_millis(5 + net.random() % 36);
        LinkSpec::wan(delay, Duration::from_millis(2), 0.01)
    });
    for n in 0..net.len() {
        net.node_mut(n).set_command_allow(CommandAllow::Anyone);
        net.announce(n);
    }
    progress(
        &net,
        t0,
        &format!("{sites} sites built, every node announced"),
    );
    net.run_for(Duration::from_secs(2));
    progress(&net, t0, "2 s of start-up simulated");
    let mut cost = PhaseCost::default();
    cost.mark(&net, "start");

    // Broadcasts, and one viewer in each site that watches.
    let first_of_site: Vec<usize> = sizes
        .iter()
        .scan(0, |start, s| {
            let f = *start;
            *start += s;
            Some(f)
        })
        .collect();
    // The benchmark's own choices (origins, watchers, joiners, commands, the dead) come
    // from a generator of their own: the simulator's draws (jitter, loss) vary with every
    // message sent, and two versions of the code were compared on different worlds
    // (another tenth killed, another repair).
    let mut pick = SplitMix(7);
    let node_in = |pick: &mut SplitMix, site: usize| first_of_site[site] + pick.below(sizes[site]);
    let max_watch = (sites * 3 / 10).max(1);
    let mut watched: Vec<BTreeSet<usize>> = Vec::new();
    let mut subscribers = Vec::new();
    for k in 0..broadcasts {
        let origin = pick.below(net.len());
        let b = net.publish(origin, &format!("cam{k}"));
        net.broadcasts[b].fps = 10;
        let u = pick.unit();
        let count = 1 + (u * u * u * (max_watch - 1) as f64) as usize;
        let mut set = BTreeSet::new();
        while set.len() < count {
            let site = pick.below(sites);
            if site != net.site_of(origin) {
                set.insert(site);
            }
        }
        watched.push(set);
    }
    net.run_for(Duration::from_millis(500));
    progress(&net, t0, &format!("{broadcasts} broadcasts went live"));
    cost.mark(&net, "live");
    for (b, set) in watched.iter().enumerate() {
        for &site in set {
            let n = node_in(&mut pick, site);
            net.subscribe(n, b);
            subscribers.push((n, b));
        }
    }
    net.run_for(Duration::from_millis(1500));
    // Every box's stream list 2 s after the broadcasts went live.
    let ids: BTreeSet<_> = net.broadcasts.iter().map(|b| b.id.clone()).collect();
    let listed = listed_share(&net, &ids);
    net.run_for(Duration::from_millis(500));
    progress(
        &net,
        t0,
        &format!(
            "{} viewers of {} broadcasts joined",
            subscribers.len(),
            watched.len()
        ),
    );

    cost.mark(&net, "join");
    // Steady state: speed, control traffic, copies, state, depth, delay.
    net.measuring = true;
    if std::env::var("SCALE_DEBUG").is_ok() {
        net.media_in_by_link = Some(Default::default());
    }
    let wall = Instant::now();
    net.run_for(steady);
    let sim_speed = steady.as_secs_f64() / wall.elapsed().as_secs_f64();
    cost.mark(&net, "steady");
    net.measuring = false;
    let control_steady =
        net.control_sent as f64 * 8.0 / 1000.0 / nodes as f64 / steady.as_secs_f64();
    // Against what the site carries (watched, or relayed on to other sites).
    let mut carried = vec![BTreeSet::new(); sites];
    for n in 0..net.len() {
        for (b, sb) in net.broadcasts.iter().enumerate() {
            if net.site_of(sb.origin) != net.site_of(n) && net.node(n).parent(&sb.id).is_some() {
                carried[net.site_of(n)].insert(b);
            }
        }
    }
    let mut copies_max: f64 = 0.0;
    let mut worst_site = None;
    for (site, carried) in carried.iter().enumerate() {
        let inbound: u64 = carried.iter().map(|&b| net.produced[b]).sum();
        if inbound > 0 {
            let copies = net.wan[site].media_in as f64 / inbound as f64;
            if copies > copies_max {
                (copies_max, worst_site) = (copies, Some(site));
            }
        }
    }
    if let (Some(site), Some(by)) = (worst_site, net.media_in_by_link.take()) {
        print_copies_into(&net, site, &by);
    }
    let state_max = (0..net.len())
        .map(|n| net.node(n).state_entries())
        .max()
        .unwrap_or(0);
    let depth = subscribers
        .iter()
        .filter_map(|&(n, b)| net.site_depth(n, b))
        .max()
        .unwrap_or(0);
    let epoch = net.now() - net.elapsed();
    let since = net.elapsed() - steady;
    let delays: Vec<Duration> = subscribers
        .iter()
        .flat_map(|&(n, _)| net.delivered(n).iter())
        .filter(|d| d.at - epoch >= since)
        .map(|d| d.at - epoch - Duration::from_micros(d.capture_us))
        .collect();
    progress(
        &net,
        t0,
        &format!("steady state measured at {sim_speed:.3} simulated s per wall s"),
    );
    if short {
        let starved: Vec<(usize, usize)> = subscribers
            .iter()
            .copied()
            .filter(|&(n, b)| {
                let id = &net.broadcasts[b].id;
                !net.delivered(n)
                    .iter()
                    .any(|d| &d.broadcast == id && d.at - epoch >= since)
            })
            .collect();
        let mut failed = Vec::new();
        if !starved.is_empty() {
            failed.push(format!(
                "{} of {} viewers received nothing in the steady window (node, broadcast): {:?}",
                starved.len(),
                subscribers.len(),
                &starved[..starved.len().min(10)]
            ));
        }
        if copies_max > 1.05 {
            failed.push(format!(
                "site {worst_site:?} took {copies_max:.3} copies of what it carries in (at most 1.05)"
            ));
        }
        let line = format!(
            "{{\"nodes\":{nodes},\"sites\":{sites},\"viewers\":{},\"sim_speed\":{sim_speed:.4},\
             \"copies_into_site_max\":{copies_max:.3},\"site_tree_depth\":{depth},\
             \"delay_p99_ms\":{},\"starved\":{}}}",
            subscribers.len(),
            percentile(delays, 99),
            starved.len()
        );
        return Outcome { line, failed };
    }

    // Join: a viewer in a site that does not carry the broadcast yet.
    let mut joins = Vec::new();
    for _ in 0..50 {
        let b = pick.below(watched.len());
        let site = loop {
            let s = pick.below(sites);
            if !watched[b].contains(&s) && s != net.site_of(net.broadcasts[b].origin) {
                break s;
            }
        };
        watched[b].insert(site);
        let n = node_in(&mut pick, site);
        joins.push((n, b, net.now()));
        net.subscribe(n, b);
        subscribers.push((n, b));
        net.run_for(Duration::from_millis(10));
    }
    net.run_for(Duration::from_millis(1500));
    let join_times: Vec<Duration> = joins
        .iter()
        .filter_map(|&(n, b, at)| {
            let id = &net.broadcasts[b].id;
            net.delivered(n)
                .iter()
                .find(|d| &d.broadcast == id && d.at >= at)
                .map(|d| d.at - at)
        })
        .collect();
    if std::env::var("SCALE_DEBUG").is_ok() {
        let mut sorted = join_times.clone();
        sorted.sort();
        eprintln!("join times: {sorted:?}");
        for &(n, b, _) in &joins {
            let id = &net.broadcasts[b].id;
            if !net.delivered(n).iter().any(|d| &d.broadcast == id) {
                eprintln!(
                    "not joined {n} site {} b{b}: {}",
                    net.site_of(n),
                    net.node(n).tree_state(id)
                );
            }
        }
    }
    let joined = join_times.len();
    progress(&net, t0, &format!("{joined} of 50 joins measured"));
    cost.mark(&net, "join_50");

    // Commands to nodes of other sites through the senders' buses, each answered by the
    // target's (the simulator's nodes reply with the command's body).
    let mut commands = Vec::new();
    for _ in 0..50 {
        let from = pick.below(net.len());
        let to = loop {
            let t = pick.below(net.len());
            if net.site_of(t) != net.site_of(from) {
                break t;
            }
        };
        if let Ok(id) = net.ask(from, to, Bytes::from_static(b"{}")) {
            commands.push((from, net.id(to), id));
        }
        net.run_for(Duration::from_millis(10));
    }
    net.run_for(Duration::from_millis(1500));
    let rtts: Vec<Duration> = commands
        .iter()
        .filter_map(|&(from, target, id)| {
            let a = net.answered(from).iter().find(|a| a.id == id)?;
            (a.from == target).then(|| a.at - a.sent)
        })
        .collect();
    let answered = rtts.len();
    progress(&net, t0, &format!("{answered} of 50 commands answered"));
    cost.mark(&net, "commands");

    // Chat: one box in each of 50 sites follows a room; five of them say something.
    let mut chatters: Vec<usize> = Vec::new();
    for site in 0..sites.min(50) {
        if let Some(n) = (0..net.len()).find(|&n| net.site_of(n) == site) {
            net.chat_follow(n, "all");
            chatters.push(n);
        }
    }
    net.run_for(Duration::from_millis(500));
    let mut said = Vec::new();
    for (k, &n) in chatters.iter().take(5).enumerate() {
        let m = net.chat_send(n, "all", &format!("chatter{k}"), "hello");
        said.push((m.from, m.seq, net.now()));
        net.run_for(Duration::from_millis(100));
    }
    net.run_for(Duration::from_secs(2));
    let mut chat_delays = Vec::new();
    let mut chat_missing = 0;
    for &n in &chatters {
        for (from, seq, at) in &said {
            match net
                .chat_seen(n)
                .iter()
                .find(|c| &c.message.from == from && c.message.seq == *seq)
            {
                Some(c) => chat_delays.push(c.at - *at),
                None => chat_missing += 1,
            }
        }
    }
    progress(
        &net,
        t0,
        &format!(
            "{} chat messages seen by their room's followers, {chat_missing} missing",
            chat_delays.len()
        ),
    );
    cost.mark(&net, "chat");

    // Repair: a tenth of the nodes die at once (origins excepted).
    let origins: BTreeSet<usize> = net.broadcasts.iter().map(|b| b.origin).collect();
    let mut dead = BTreeSet::new();
    while dead.len() < nodes / 10 {
        let n = pick.below(net.len());
        if !origins.contains(&n) {
            dead.insert(n);
        }
    }
    let ancestors = |net: &Net, n: usize, b: usize| -> Vec<usize> {
        let id = &net.broadcasts[b].id;
        let mut out = Vec::new();
        let mut at = n;
        while let Some(p) = net.node(at).parent(id).and_then(|p| net.index_of(&p)) {
            if out.contains(&p) || p == net.broadcasts[b].origin {
                break;
            }
            out.push(p);
            at = p;
        }
        out
    };
    let orphans: Vec<(usize, usize)> = subscribers
        .iter()
        .copied()
        .filter(|&(n, b)| {
            !dead.contains(&n) && ancestors(&net, n, b).iter().any(|a| dead.contains(a))
        })
        .collect();
    let killed_at = net.now();
    for &n in &dead {
        net.kill(n);
    }
    // `SCALE_TRACE=node:broadcast`: that viewer's chain, each time it changes, every 5 ms
    // of the repair (the simulation is deterministic: a second run traces the slowest).
    let trace: Option<(usize, usize)> = std::env::var("SCALE_TRACE").ok().and_then(|v| {
        let (n, b) = v.split_once(':')?;
        Some((n.parse().ok()?, b.parse().ok()?))
    });
    match trace {
        Some((n, b)) => {
            let id = net.broadcasts[b].id.clone();
            let mut last = String::new();
            for step in 0..600 {
                net.run_for(Duration::from_millis(5));
                let (mut chain, mut state) = (String::new(), String::new());
                let mut at = n;
                for _ in 0..12 {
                    let got = net.delivered(at).iter().rev().find(|d| d.broadcast == id);
                    let tree = tree_of(&net, at, &id);
                    state += &tree;
                    chain += &format!(
                        "\n   {at} site {} alive {} last {:?}: {tree}",
                        net.site_of(at),
                        net.is_alive(at),
                        got.map(|d| d.at.saturating_duration_since(killed_at).as_millis()),
                    );
                    let up = net
                        .node(at)
                        .parent(&id)
                        .or_else(|| net.node(at).pending(&id));
                    match up.and_then(|p| net.index_of(&p)) {
                        Some(p) if p != at => at = p,
                        _ => break,
                    }
                }
                if state != last || step % 20 == 0 {
                    eprintln!("trace +{} ms:{chain}", (step + 1) * 5);
                    last = state;
                }
            }
        }
        None => net.run_for(Duration::from_secs(3)),
    }
    let repairs: Vec<Duration> = orphans
        .iter()
        .map(|&(n, b)| {
            let id = &net.broadcasts[b].id;
            net.delivered(n)
                .iter()
                .find(|d| &d.broadcast == id && d.at > killed_at + Duration::from_millis(1))
                .map_or(Duration::from_secs(3), |d| d.at - killed_at)
        })
        .collect();
    progress(
        &net,
        t0,
        &format!(
            "{} orphaned viewers after killing {}",
            orphans.len(),
            dead.len()
        ),
    );
    cost.mark(&net, "repair");
    if std::env::var("SCALE_DEBUG").is_ok() {
        for (&(n, b), r) in orphans.iter().zip(&repairs) {
            let id = &net.broadcasts[b].id;
            eprintln!(
                "orphan {n} site {} b{b} repaired {r:?}: {}",
                net.site_of(n),
                net.node(n).tree_state(id)
            );
            let mut at = n;
            for _ in 0..8 {
                let Some(p) = net.node(at).parent(id).and_then(|p| net.index_of(&p)) else {
                    break;
                };
                eprintln!(
                    "   up {p} site {} alive {} {}",
                    net.site_of(p),
                    net.is_alive(p),
                    tree_of(&net, p, id)
                );
                at = p;
            }
        }
    }
    if std::env::var("SCALE_DEBUG").is_ok() {
        eprintln!("control bytes by type: {:?}", net.control_by_type);
    }
    // The stream list again: ten broadcasts end, and 5 s later no living box lists them.
    let ended: BTreeSet<_> = (0..10)
        .map(|k| {
            net.unpublish(k);
            net.broadcasts[k].id.clone()
        })
        .collect();
    net.run_for(Duration::from_secs(5));
    let unlisted = 1.0 - listed_share(&net, &ended);
    cost.mark(&net, "ends");
    progress(
        &net,
        t0,
        &format!(
            "{:.1} % of every box's list showed them 2 s after going live, {:.1} % had dropped ended ones 5 s after",
            listed * 100.0,
            unlisted * 100.0
        ),
    );
    let repair_max = repairs.iter().max().copied().unwrap_or_default();
    // On average over the run so far: start-up, going live, joins, commands and repair.
    let control_whole_run =
        net.control_total as f64 * 8.0 / 1000.0 / nodes as f64 / net.elapsed().as_secs_f64();

    // Operation: ordinary life at `Rates` for a window, on the world the repair left,
    // once the ended broadcasts' entries have expired everywhere.
    net.run_for(Duration::from_secs(10));
    let window = operation_window();
    let alive = (0..net.len()).filter(|&n| net.is_alive(n)).count();
    let live = net.broadcasts.iter().filter(|b| !b.ended).count();
    let secs = window.as_secs_f64();
    let turnover = subscribers.len() as f64 * secs / Rates::VIEWER_SESSION_S;
    let plan = happenings(
        window,
        &Happening::ALL.map(|h| {
            let expected = match h {
                Happening::ViewerLeaves | Happening::ViewerJoins => turnover,
                Happening::BroadcastEnds | Happening::BroadcastStarts => {
                    live as f64 * secs / Rates::BROADCAST_LIFE_S
                }
                Happening::BoxFails => alive as f64 * secs / Rates::BOX_FAILS_EVERY_S,
                Happening::Command => Rates::COMMANDS_PER_S * secs,
                Happening::Chat => Rates::CHAT_PER_S * secs,
                Happening::NewSpeaker => secs / Rates::NEW_SPEAKER_EVERY_S,
            };
            (h, expected)
        }),
    );
    cost.mark(&net, "expiry");
    progress(
        &net,
        t0,
        "ended broadcasts expired; the operation window starts",
    );
    let mut speakers: Vec<usize> = chatters.iter().take(5).copied().collect();
    let before = net.control_total;
    let start = net.elapsed();
    let mut counted: std::collections::BTreeMap<String, usize> = Default::default();
    let only = operation_only();
    for (at, what) in plan {
        if only.is_some_and(|o| o != what) {
            continue;
        }
        net.run_for((start + at).saturating_sub(net.elapsed()));
        let alive_node = |net: &Net, pick: &mut SplitMix| loop {
            let n = pick.below(net.len());
            if net.is_alive(n) {
                break n;
            }
        };
        // A draw that cannot happen (a site that watches already, a dead box) draws
        // again; what happened is counted.
        let happened = 'tries: {
            for _ in 0..20 {
                match what {
                    Happening::ViewerLeaves => {
                        let watching: Vec<usize> = (0..subscribers.len())
                            .filter(|&i| {
                                let (n, b) = subscribers[i];
                                net.is_alive(n) && !net.broadcasts[b].ended
                            })
                            .collect();
                        if watching.is_empty() {
                            break 'tries false;
                        }
                        let (n, b) = subscribers.swap_remove(watching[pick.below(watching.len())]);
                        watched[b].remove(&net.site_of(n));
                        net.unsubscribe(n, b);
                    }
                    Happening::ViewerJoins => {
                        let b = pick.below(net.broadcasts.len());
                        let site = pick.below(sites);
                        let n = node_in(&mut pick, site);
                        let origin_site = net.site_of(net.broadcasts[b].origin);
                        if net.broadcasts[b].ended
                            || site == origin_site
                            || watched[b].contains(&site)
                            || !net.is_alive(n)
                        {
                            continue;
                        }
                        watched[b].insert(site);
                        net.subscribe(n, b);
                        subscribers.push((n, b));
                    }
                    Happening::BroadcastEnds => {
                        let live: Vec<usize> = (0..net.broadcasts.len())
                            .filter(|&b| !net.broadcasts[b].ended)
                            .collect();
                        if live.is_empty() {
                            break 'tries false;
                        }
                        net.unpublish(live[pick.below(live.len())]);
                    }
                    Happening::BroadcastStarts => {
                        let origin = alive_node(&net, &mut pick);
                        let name = format!("cam{}", net.broadcasts.len());
                        let b = net.publish(origin, &name);
                        net.broadcasts[b].fps = 10;
                        watched.push(BTreeSet::new());
                    }
                    Happening::BoxFails => {
                        let n = alive_node(&net, &mut pick);
                        if net.broadcasts.iter().any(|b| b.origin == n && !b.ended) {
                            continue;
                        }
                        net.kill(n);
                    }
                    Happening::Command => {
                        let from = alive_node(&net, &mut pick);
                        let to = alive_node(&net, &mut pick);
                        if net.site_of(to) == net.site_of(from)
                            || net.ask(from, to, Bytes::from_static(b"{}")).is_err()
                        {
                            continue;
                        }
                    }
                    Happening::Chat => {
                        let n = speakers[pick.below(speakers.len())];
                        if !net.is_alive(n) {
                            continue;
                        }
                        net.chat_send(n, "all", "operator", "hello");
                    }
                    Happening::NewSpeaker => {
                        let n = alive_node(&net, &mut pick);
                        net.chat_send(n, "all", "newcomer", "hello");
                        speakers.push(n);
                    }
                }
                break 'tries true;
            }
            false
        };
        if happened {
            *counted.entry(format!("{what:?}")).or_default() += 1;
        }
    }
    net.run_for((start + window).saturating_sub(net.elapsed()));
    let control_kbps = (net.control_total - before) as f64 * 8.0 / 1000.0 / alive as f64 / secs;
    cost.mark(&net, "operation");
    progress(
        &net,
        t0,
        &format!("{secs:.0} s of operation at ordinary rates: {counted:?}"),
    );

    let line = format!(
        "{{\"nodes\":{nodes},\"sites\":{sites},\"sim_speed\":{sim_speed:.4},\
         \"control_kbps_per_node\":{control_kbps:.2},\"control_kbps_steady\":{control_steady:.3},\
         \"control_kbps_whole_run\":{control_whole_run:.2},\
         \"control_kb_per_node_by_phase\":{},\"state_entries_per_node\":{state_max},\
         \"copies_into_site_max\":{copies_max:.3},\"site_tree_depth\":{depth},\
         \"delay_p99_ms\":{},\"join_p99_ms\":{},\"joins_measured\":{joined},\
         \"repair_p99_ms\":{},\"repair_max_ms\":{:.0},\"orphans\":{},\
         \"command_rtt_p99_ms\":{},\"commands_answered\":{answered},\
         \"chat_p99_ms\":{},\"chat_missing\":{chat_missing},\
         \"listed_within_2s\":{listed:.4},\"unlisted_within_5s\":{unlisted:.4}}}",
        cost.json(),
        percentile(delays, 99),
        percentile(join_times, 99),
        percentile(repairs.clone(), 99),
        repair_max.as_secs_f64() * 1000.0,
        orphans.len(),
        percentile(rtts, 99),
        percentile(chat_delays, 99),
    );
    Outcome {
        line,
        failed: Vec::new(),
    }
}

/// The simulated seconds of the operation window: `SCALE_OPERATION_SECONDS`, default 30
/// (an end's entry expires 12 s after it, inside the window).
fn operation_window() -> Duration {
    Duration::from_secs(
        std::env::var("SCALE_OPERATION_SECONDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(30)
            .max(1),
    )
}

/// The one happening `SCALE_OPERATION_ONLY` names, if set; a name that is none of them
/// ends the run rather than measure a window where nothing happens.
fn operation_only() -> Option<Happening> {
    let name = std::env::var("SCALE_OPERATION_ONLY").ok()?;
    match Happening::ALL
        .into_iter()
        .find(|h| format!("{h:?}") == name)
    {
        Some(h) => Some(h),
        None => {
            let names: Vec<String> = Happening::ALL.iter().map(|h| format!("{h:?}")).collect();
            eprintln!(
                "SCALE_OPERATION_ONLY={name} is none of {}",
                names.join(", ")
            );
            std::process::exit(2);
        }
    }
}

fn main() {
    let sizes: Vec<usize> = std::env::var("SCALE_NODES")
        .unwrap_or_else(|_| "1000,10000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let steady = Duration::from_secs(
        std::env::var("SCALE_SECONDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(4),
    );
    let short = std::env::var("SCALE_SHORT").is_ok_and(|v| v != "0");
    // Checked before the long run, not after it.
    let _ = operation_only();
    let mut failed = false;
    for n in sizes {
        let outcome = run(n, steady, short);
        println!(
            "scale{} {}",
            if short { "-short" } else { "" },
            outcome.line
        );
        for f in &outcome.failed {
            eprintln!("scale {n}: FAILED: {f}");
        }
        failed |= !outcome.failed.is_empty();
    }
    if failed {
        std::process::exit(1);
    }
}
