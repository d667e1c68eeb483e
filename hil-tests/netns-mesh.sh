#!/usr/bin/env bash
# Tier c: sites of three boxes in network namespaces (three, or --sites N), joined by a
# router.
#
#   site s1: boxes b11 (live origin) b12 b13 + an avahi observer   ─┐
#   site s2: boxes b21 b22 b23 + an avahi observer                  ├─ router
#   site s3: boxes b31 b32 b33 + an avahi observer                  ─┘
#
# Each site is a bridge; its one uplink is a veth to the router, whose byte counters are
# the site's WAN traffic. mDNS stays inside a site (the router does not route multicast):
# avahi-browse in each site must see that site's three boxes and no others. Boxes of other
# sites know only the origin's address (a static --peer, until the registry).
# The boxes other than the origin each play the broadcast with `cambox watch`; ffprobe
# checks every recording, and each site's uplink must carry about one copy in and at most
# the fan-out of the tree of sites (4) out.
#
# With --registry, boxes know no peer: a `cambox registry` at a head office (its own
# namespace behind the router, 10.9.0.2) is the only way across sites. It is killed while
# the boxes play (they must keep playing) and restarted (it must list every box again
# within one heartbeat).
#
# With --grain, the origin's picture has grain, so that its encoder sends the whole
# 2 Mbit/s a camera would (the clean test picture compresses to a tenth), and one box per
# site plays it (two cores cannot relay 2 Mbit/s to every box of eight sites in debug
# builds): each uplink must then carry 0.9 to 1.1 copies in.
#
# With --chain, sites form a chain of static peers: each box of site k knows only the
# first box of site k-1, and sites 3 and 6 watch nothing (their boxes only pass the
# broadcast on). The run prints the depth of the tree of sites (site hops from the origin's
# site, from each box's parent) and the delay from the strip at the deepest site against
# the origin's. Both --chain and --registry: the chain, and the registry beside it.
#
# Every box serves RTSP on 8554 (advertised as _rtsp._tcp): a player at site s3 opens the
# s1 broadcast on a box of its own site.
#
# With --no-udp, the router drops all UDP between sites (nftables), as company firewalls
# do: links across sites must form over TCP (port 443) by themselves, with the same
# checks. Then UDP is let through again: every link must be back on QUIC within 30 s,
# and a viewer at the deepest site must see no frame missing across the move. The delay
# there is printed over TCP and over QUIC.
#
# With --nat, site s2 sits behind NAT (the router masquerades it and lets no new
# connection in): its boxes dial out, and over the links they opened they play the others'
# broadcast, and a box at site s3 plays the broadcast of s2's first box (live too). With
# --registry as well, the registry must find s2's boxes reached from their site only (and
# no others), and no box outside may even try to dial into s2: the router counts every
# new connection towards s2, and the count must stay 0.
#
# With --update, every box trusts a release key made for the run, and at the end a 16 MB
# update bundle is published at the origin's box (`cambox update publish`): every other
# box runs an older version of the bundle's board and must keep it whole, and each
# site's uplink must carry at most 1.1 times its size in (the control traffic measured
# just before is subtracted).
#
# Needs root, iproute2, avahi-daemon, avahi-utils, dbus, curl, ffprobe (and nft for
# --no-udp and --nat).
# Usage: hil-tests/netns-mesh.sh [--registry] [--chain] [--grain] [--no-udp] [--nat] [--update]
#        [--sites N] [--seconds N] [--keep]
#        (binary: $CAMBOX_BIN)
set -euo pipefail

SECS=14
KEEP=false
REGISTRY=false
CHAIN=false
SITES=3
HEARTBEAT=3
GRAIN=false
NO_UDP=false
NAT=false
UPDATE=false
while [ $# -gt 0 ]; do
    case "$1" in
        --seconds) SECS=$2; shift 2 ;;
        --keep) KEEP=true; shift ;;
        --registry) REGISTRY=true; shift ;;
        --chain) CHAIN=true; shift ;;
        --grain) GRAIN=true; shift ;;
        --no-udp) NO_UDP=true; shift ;;
        --nat) NAT=true; shift ;;
        --update) UPDATE=true; shift ;;
        --sites) SITES=$2; shift 2 ;;
        -h|--help) sed -n '2,50p' "$0"; exit 0 ;;
        *) echo "netns-mesh: unknown option $1 (try --help)" >&2; exit 2 ;;
    esac
done

case "$SITES" in
    [2-9]|1[0-9]|20) ;;
    *) echo "netns-mesh: --sites takes 2 to 20, not '$SITES'" >&2; exit 2 ;;
esac
boxes=$((SITES * 3))
# Two cores encode the origin's picture and run every box and viewer: beyond three sites
# the picture is smaller, so that the origin keeps its 30 frames a second.
width=1280 height=720
[ "$SITES" -le 3 ] || { width=640 height=360; }
# Sites whose boxes watch nothing (in a chain they only pass the broadcast on).
idle_site() { $CHAIN && { [ "$1" = 3 ] || [ "$1" = 6 ]; }; }

here=$(cd "$(dirname "$0")/.." && pwd)
BIN=${CAMBOX_BIN:-${CARGO_TARGET_DIR:-$here/target}/debug/cambox}
[ -x "$BIN" ] || { echo "netns-mesh: no cambox binary at $BIN (build first or set CAMBOX_BIN)" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "netns-mesh: needs root (network namespaces)" >&2; exit 2; }
needs=(ip avahi-daemon avahi-browse dbus-daemon curl ffprobe)
{ $NO_UDP || $NAT; } && needs+=(nft)
for tool in "${needs[@]}"; do
    command -v "$tool" >/dev/null || { echo "netns-mesh: $tool is missing (scripts/setup-deps test installs it)" >&2; exit 2; }
done

# Names unique to this run; interface names stay under 15 characters.
run=c$(( $$ % 10000 ))
work=$(mktemp -d)
pids=()
namespaces=()

say() { echo "netns-mesh: $*"; }

cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    # Whatever still runs inside our namespaces was started by this script.
    for ns in "${namespaces[@]}"; do
        ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null || true
    done
    wait 2>/dev/null || true
    for ns in "${namespaces[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
    if $KEEP; then say "logs kept in $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

ns_add() { ip netns add "$1"; namespaces+=("$1"); ip -n "$1" link set lo up; }
in_ns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

router=${run}r
ns_add "$router"
in_ns "$router" sysctl -qw net.ipv4.ip_forward=1
hq=${run}hq
ns_add "$hq"
ip link add up0 netns "$router" type veth peer name e0 netns "$hq"
ip -n "$router" addr add 10.9.0.1/24 dev up0
ip -n "$router" link set up0 up
ip -n "$hq" addr add 10.9.0.2/24 dev e0
ip -n "$hq" link set e0 up
ip -n "$hq" route add default via 10.9.0.1

for s in $(seq "$SITES"); do
    site=${run}s$s
    ns_add "$site"
    ip -n "$site" link add br0 type bridge
    ip -n "$site" link set br0 up
    ip link add "up$s" netns "$router" type veth peer name wan netns "$site"
    ip -n "$site" link set wan master br0 up
    ip -n "$router" addr add "10.9.$s.1/24" dev "up$s"
    ip -n "$router" link set "up$s" up
    for b in 1 2 3 o; do
        host=${site}b$b
        ns_add "$host"
        ip link add e0 netns "$host" type veth peer name "p$b" netns "$site"
        ip -n "$site" link set "p$b" master br0 up
        last=$([ "$b" = o ] && echo 99 || echo $((10 + b)))
        ip -n "$host" addr add "10.9.$s.$last/24" dev e0
        ip -n "$host" link set e0 up multicast on
        ip -n "$host" route add default via "10.9.$s.1"
    done
done
say "$SITES sites x 3 boxes and a router are up (namespaces ${run}*)"
# Two chains: the NAT's stays when UDP is let through again (the udp_dropped chain is flushed).
if $NO_UDP || $NAT; then
    in_ns "$router" nft add table inet cambox
fi
if $NO_UDP; then
    in_ns "$router" nft 'add chain inet cambox udp_dropped { type filter hook forward priority 0; policy accept; }'
    in_ns "$router" nft add rule inet cambox udp_dropped meta l4proto udp drop
    say "the router drops all UDP between sites"
fi
if $NAT; then
    in_ns "$router" nft add table ip nat
    in_ns "$router" nft 'add chain ip nat out { type nat hook postrouting priority 100; }'
    in_ns "$router" nft add rule ip nat out ip saddr 10.9.2.0/24 oifname != "up2" masquerade
    in_ns "$router" nft 'add chain inet cambox nat_in { type filter hook forward priority -1; policy accept; }'
    in_ns "$router" nft add rule inet cambox nat_in ip daddr 10.9.2.0/24 ct state new counter drop
    say "site s2 is behind NAT: nothing from outside reaches it unasked"
fi

# Whether box $1 lists broadcast $2 within 20 s.
learns() {
    for _ in $(seq 100); do
        in_ns "$1" curl -s http://127.0.0.1:8080/api/v1/streams | grep -q "/live/$2.mp4" && return 0
        sleep 0.2
    done
    return 1
}

if $UPDATE; then
    "$BIN" release init --dir "$work/release" >/dev/null
    printf 'board=netns\nversion=1\n' >"$work/release.txt"
fi
origin_ip=10.9.1.11
registry_url=http://10.9.0.2:8090
start_registry() {
    # `ip netns exec` directly (not through a function), so that $! is the registry.
    ip netns exec "$hq" "$BIN" registry --http 0.0.0.0:8090 --heartbeat "$HEARTBEAT" >>"$work/registry.log" 2>&1 &
    registry_pid=$!
    pids+=("$registry_pid")
}
$REGISTRY && start_registry
for s in $(seq "$SITES"); do
    for b in 1 2 3; do
        host=${run}s${s}b$b
        source=testsrc
        $GRAIN && [ "$s$b" = 11 ] && source=testsrc:grain
        mkdir -p "$work/$host"
        args=(run --http 0.0.0.0:8080 --listen 0.0.0.0:4433 --key "$work/$host/node.key"
              --site "s$s" --name "b$s$b" --node "b$s$b" --source "$source" --width "$width"
              --height "$height" --bitrate 2M)
        if [ "$s$b" = 11 ]; then args+=(--live); fi
        if $NAT && [ "$s$b" = 21 ]; then args+=(--live); fi
        $REGISTRY && args+=(--registry "$registry_url")
        $UPDATE && args+=(--release-keys "$work/release/release.pub" --release-file "$work/release.txt")
        if $CHAIN && [ "$s" -gt 1 ]; then
            args+=(--peer "10.9.$((s - 1)).11:4433")
        elif ! $REGISTRY && ! $CHAIN && [ "$s$b" != 11 ]; then
            args+=(--peer "$origin_ip:4433")
        fi
        CAMBOX_LOG=${BOX_LOG:-info} ip netns exec "$host" "$BIN" "${args[@]}" >"$work/$host.log" 2>&1 &
        pids+=($!)
    done
done

# Wait for the origin to be live and every box to know its broadcast.
origin_id=""
for _ in $(seq 100); do
    origin_id=$(in_ns "${run}s1b2" curl -s "http://$origin_ip:8080/api/v1/status" 2>/dev/null |
        sed -n 's/.*"node_id":"\([0-9a-f]*\)".*/\1/p' || true)
    [ -n "$origin_id" ] && break
    sleep 0.2
done
[ -n "$origin_id" ] || { say "FAIL: the origin box never answered"; cat "$work/${run}s1b1.log"; exit 1; }
short=${origin_id:0:12}
broadcast="b11@$short"
say "origin is node $short; waiting for every box to learn $broadcast"
for s in $(seq "$SITES"); do
    for b in 1 2 3; do
        [ "$s$b" = 11 ] && continue
        host=${run}s${s}b$b
        learns "$host" "$broadcast" || { say "FAIL: $host never learned $broadcast"; tail -20 "$work/$host.log"; exit 1; }
    done
done

# mDNS: each site's observer sees exactly its own site's boxes (the first three sites:
# each look takes seconds, and the others are built alike).
browse() {
    # A private /run gives this namespace its own D-Bus and avahi-daemon. (The script is
    # single-quoted on purpose: it expands inside the namespace.)
    # shellcheck disable=SC2016
    in_ns "$1" bash -c '
        mount -t tmpfs tmpfs /run && mkdir -p /run/dbus /run/avahi-daemon
        bus=$(dbus-daemon --system --fork --nopidfile --print-pid)
        avahi-daemon --daemonize --no-chroot --no-drop-root --no-rlimits 2>/dev/null
        sleep 3
        avahi-browse --all --no-db-lookup --resolve --parsable --terminate 2>/dev/null
        avahi-daemon --kill 2>/dev/null || true
        kill "$bus" 2>/dev/null || true
    '
}
for s in $(seq "$(( SITES < 3 ? SITES : 3 ))"); do
    found=$(browse "${run}s${s}bo")
    seen=$(echo "$found" | awk -F';' '$1 == "=" && $3 == "IPv4" && $5 == "_cambox._udp" { print $10 }' |
        tr ' ' '\n' | sed -n 's/^"site=\(.*\)"$/\1/p' | sort | uniq -c | tr -s ' ')
    say "avahi-browse at site s$s sees _cambox._udp: ${seen:-nothing}"
    if [ "$(echo "$seen" | grep -c .)" != 1 ] || ! echo "$seen" | grep -q " 3 s$s$"; then
        say "FAIL: site s$s should see exactly its 3 boxes"; exit 1
    fi
    rtsp=$(echo "$found" | awk -F';' '$1 == "=" && $3 == "IPv4" && $5 == "_rtsp._tcp" && $9 == 8554' | wc -l)
    say "avahi-browse at site s$s sees _rtsp._tcp on port 8554: $rtsp boxes"
    [ "$rtsp" = 3 ] || { say "FAIL: site s$s should see 3 RTSP servers"; exit 1; }
done

uplink() { in_ns "$router" cat "/sys/class/net/up$1/statistics/$2_bytes"; }
# Each uplink's control traffic (catalog, QUIC acknowledgements and keep-alives) before
# anyone watches: a site's links, and so its control, differ with the way sites are
# joined (a registry links boxes to many other sites), so each is measured on its own.
declare -A control
for s in $(seq "$SITES"); do control[$s.rx]=$(uplink "$s" rx); control[$s.tx]=$(uplink "$s" tx); done
sleep 3
for s in $(seq "$SITES"); do
    control[$s.rx]=$(( ($(uplink "$s" rx) - control[$s.rx]) / 3 ))
    control[$s.tx]=$(( ($(uplink "$s" tx) - control[$s.tx]) / 3 ))
done

# Every box but the origin plays the broadcast (with --grain, each site's third box);
# count each uplink over the middle of it.
watchers=()
for s in $(seq "$SITES"); do
    idle_site "$s" && continue
    for b in 1 2 3; do
        [ "$s$b" = 11 ] && continue
        $GRAIN && [ "$b" != 3 ] && continue
        host=${run}s${s}b$b
        ip netns exec "$host" "$BIN" watch "$broadcast" --http 127.0.0.1:8080 --duration "${SECS}s" \
            -o "$work/$host.mp4" >"$work/$host.watch.log" 2>&1 &
        watchers+=($!)
        pids+=($!)
    done
done
sleep 4
window=$((SECS - 6))
declare -A before after
for s in $(seq "$SITES"); do before[$s.rx]=$(uplink "$s" rx); before[$s.tx]=$(uplink "$s" tx); done
window_start=$(date +%s%N)

# The tree of sites while every viewer plays: from each box's parent, the site hops up to
# the origin's site; then the strip's delay at the deepest box against the origin's.
declare -A site_of parent_of host_of
for s in $(seq "$SITES"); do
    for b in 1 2 3; do
        host=${run}s${s}b$b
        id=$(in_ns "$host" curl -s http://127.0.0.1:8080/api/v1/status |
            sed -n 's/.*"node_id":"\([0-9a-f]*\)".*/\1/p')
        id=${id:0:12}
        site_of[$id]=$s host_of[$id]=$host
        parent_of[$id]=$(in_ns "$host" curl -s http://127.0.0.1:8080/metrics |
            sed -n "s/^cambox_mesh_parent{broadcast=\"$broadcast\",parent=\"\([0-9a-f]*\)\"} 1$/\1/p" | head -1)
    done
done
depth=0 deepest=${run}s1b1
for id in "${!parent_of[@]}"; do
    hops=0 cur=$id
    for _ in $(seq 64); do
        up=${parent_of[$cur]:-}
        [ -n "$up" ] || break
        [ "${site_of[$up]:-0}" != "${site_of[$cur]}" ] && hops=$((hops + 1))
        cur=$up
    done
    if [ "$hops" -gt "$depth" ]; then depth=$hops deepest=${host_of[$id]}; fi
done
say "tree of sites: $depth site hops deep at the most ($deepest; $SITES sites)"
strip_json() {
    ip netns exec "$1" "$BIN" strip "http://127.0.0.1:8080/live/$2.mp4" --duration 4s --json \
        >"$work/$1.strip.json" 2>/dev/null || true
}
strip_json "${run}s1b1" b11 &
strip_origin=$!
strip_json "$deepest" "$broadcast" &
strip_deep=$!
wait "$strip_origin" "$strip_deep"
median() { sed -n 's/.*"latency_median_ms":\([0-9.]*\).*/\1/p' "$work/$1.strip.json"; }
say "delay from the strip, median: origin's box $(median "${run}s1b1") ms, deepest site's box $(median "$deepest") ms"
# What is left of the window (in whole seconds) after the tree and the strips.
rest=$(( window - ($(date +%s%N) - window_start) / 1000000000 ))
[ "$rest" -gt 0 ] || rest=0
if $REGISTRY; then
    sleep $((rest / 2))
    kill "$registry_pid"
    say "registry killed while ${#watchers[@]} boxes play"
    sleep $((rest - rest / 2))
else
    sleep "$rest"
fi
for s in $(seq "$SITES"); do after[$s.rx]=$(uplink "$s" rx); after[$s.tx]=$(uplink "$s" tx); done
window_ms=$(( ($(date +%s%N) - window_start) / 1000000 ))
failed=false
for w in "${watchers[@]}"; do wait "$w" || failed=true; done
$failed && { say "FAIL: a viewer failed"; tail -n 3 "$work"/*.watch.log; exit 1; }

# Each recording decodes, with most of its frames.
min_frames=$(( SECS * 30 * 3 / 4 ))
for f in "$work"/*.mp4; do
    n=$(ffprobe -v error -select_streams v:0 -count_frames -show_entries stream=nb_read_frames -of csv=p=0 "$f")
    [ "${n:-0}" -ge "$min_frames" ] || { say "FAIL: $(basename "$f") decodes $n frames, want >= $min_frames"; exit 1; }
done
say "all ${#watchers[@]} viewers decoded >= $min_frames frames of ${SECS} s"

# RTSP: a player at site s3 opens the s1 broadcast on a box of its own site.
rtsp_url="rtsp://10.9.3.11:8554/$broadcast"
probe=$(in_ns "${run}s3bo" ffprobe -v error -rtsp_transport tcp -show_entries stream=codec_name \
    -of csv=p=0 "$rtsp_url" | tr '\n' ' ')
say "ffprobe at site s3 of $rtsp_url: ${probe:-nothing}"
[ "$probe" = "h264 opus " ] || { say "FAIL: RTSP of a broadcast from another site"; exit 1; }

# One copy: what one viewer received per second (the box's fMP4, close to the media rate).
viewer=${run}s1b2
$GRAIN && viewer=${run}s1b3
copy=$(( $(stat -c %s "$work/$viewer.mp4") / SECS ))
say "one copy of the broadcast is about $((copy * 8 / 1000)) kbit/s"
# At a 2 Mbit/s camera's rate (--grain) control traffic is a few per cent of a copy, and an
# uplink must carry at most 1.1 copies in. At the clean test picture's tenth of that, the
# control measured before the viewers is a large part of each uplink, and where a registry
# is killed meanwhile its answers stop coming in, so a copy can read as 0.5 to 1.4.
# Out of the origin's site go up to 4 copies (the uplink budget's fan-out of the tree of
# sites); each copy on the wire is a few per cent above the viewer's MP4 (QUIC and UDP
# headers), which at 4 copies reads as 4.1 to 4.2, and the noise of the control estimate
# comes on top once, as it does into a site. A fifth copy would read as 5.2.
# What a site sends out brings traffic back in (QUIC's acknowledgements, its children's
# control): at the test picture's rate, across nine runs, into a site read 0.95 copies
# plus 0.12 per copy it sent out (1.2 at two out, 1.37 at three, 1.44 at four; later runs
# up to 1.50 at four), a second copy in would add 1. At 2 Mbit/s packets are full and it
# is a few hundredths a copy.
min_in=0.5 max_in=1.4 max_out=4.8 back_in=0.12
$GRAIN && { min_in=0.9 max_in=1.1 max_out=4.4 back_in=0.03; }
ok=true
for s in $(seq "$SITES"); do
    rx=$(( (after[$s.rx] - before[$s.rx]) * 1000 / window_ms ))   # out of the site
    tx=$(( (after[$s.tx] - before[$s.tx]) * 1000 / window_ms ))   # into the site
    into=$(awk -v a="$tx" -v k="${control[$s.tx]}" -v c="$copy" 'BEGIN { printf "%.2f", (a - k) / c }')
    out=$(awk -v a="$rx" -v k="${control[$s.rx]}" -v c="$copy" 'BEGIN { printf "%.2f", (a - k) / c }')
    say "site s$s uplink: into the site $((tx * 8 / 1000)) kbit/s = $into copies + $((control[$s.tx] * 8 / 1000)) of control, out $((rx * 8 / 1000)) kbit/s = $out copies + $((control[$s.rx] * 8 / 1000)) of control"
    # Into a site that plays it: one copy; two would be 2. A site that watches nothing
    # carries one only if it passes the broadcast on; that the media arrived at all, the
    # recordings show.
    if [ "$s" != 1 ] && ! idle_site "$s"; then
        awk -v r="$into" -v o="$out" -v lo="$min_in" -v hi="$max_in" -v b="$back_in" \
            'BEGIN { if (o < 0) o = 0; exit !(r >= lo && r <= hi + b * o) }' || ok=false
    fi
    # Out of any site: at most the fan-out of the tree of sites.
    awk -v r="$out" -v hi="$max_out" 'BEGIN { exit !(r <= hi) }' || ok=false
    idle_site "$s" && { awk -v r="$into" -v hi="$max_in" 'BEGIN { exit !(r <= hi) }' || ok=false; }
done
$ok || { say "FAIL: an uplink carried more than one copy in, or more than the fan-out out"; exit 1; }
# The NATed site's broadcast, played at a site outside over the links s2 opened.
if $NAT; then
    nat_id=$(in_ns "${run}s2b1" curl -s http://127.0.0.1:8080/api/v1/status |
        sed -n 's/.*"node_id":"\([0-9a-f]*\)".*/\1/p')
    nat_broadcast="b21@${nat_id:0:12}"
    learns "${run}s3b2" "$nat_broadcast" || { say "FAIL: site s3 never learned $nat_broadcast from behind the NAT"; exit 1; }
    ip netns exec "${run}s3b2" "$BIN" watch "$nat_broadcast" --http 127.0.0.1:8080 --duration 6s \
        -o "$work/nat.mp4" >"$work/nat.watch.log" 2>&1 || true
    n=$(ffprobe -v error -select_streams v:0 -count_frames -show_entries stream=nb_read_frames -of csv=p=0 "$work/nat.mp4" 2>/dev/null || true)
    say "site s3 played $nat_broadcast from behind the NAT: ${n:-0} frames in 6 s"
    [ "${n:-0}" -ge 100 ] || { say "FAIL: the NATed site's broadcast did not play outside"; tail -3 "$work/nat.watch.log"; exit 1; }
    tried=$(in_ns "$router" nft list chain inet cambox nat_in | sed -n 's/.*counter packets \([0-9]*\).*/\1/p')
    say "new connections from outside towards the NATed site, all dropped: ${tried:-?}"
    if $REGISTRY; then
        [ "${tried:-1}" = 0 ] || { say "FAIL: boxes outside tried to dial into the NATed site"; exit 1; }
    fi
fi

# Links across sites: over TCP while the router drops UDP.
links_by_transport() {
    for s in $(seq "$SITES"); do
        for b in 1 2 3; do
            in_ns "${run}s${s}b$b" curl -s http://127.0.0.1:8080/api/v1/peers |
                grep -o '"transport":"[a-z ]*"' || true
        done
    done | sort | uniq -c | tr -s ' ' | tr '\n' ' '
}
if $NO_UDP; then
    now_links=$(links_by_transport)
    say "links while UDP is dropped:$now_links"
    echo "$now_links" | grep -q '"transport":"tcp"' || { say "FAIL: no link across sites runs over TCP"; exit 1; }
    over_tcp=$(median "$deepest")
    # A viewer at the deepest site reads the strip across the move back to QUIC.
    ip netns exec "$deepest" "$BIN" strip "http://127.0.0.1:8080/live/$broadcast.mp4" --duration 30s \
        --json >"$work/move.strip.json" 2>/dev/null &
    mover=$!
    pids+=("$mover")
    sleep 3
    in_ns "$router" nft flush chain inet cambox udp_dropped
    lifted=$(date +%s%N)
    back=false
    for _ in $(seq 60); do
        if ! links_by_transport | grep -q '"transport":"tcp"'; then back=true; break; fi
        sleep 0.5
    done
    took=$(( ($(date +%s%N) - lifted) / 1000000 ))
    $back || { say "FAIL: links still over TCP 30 s after UDP got through again:$(links_by_transport)"; exit 1; }
    say "every link back on QUIC $took ms after UDP got through again:$(links_by_transport)"
    wait "$mover" || true
    missing=$(sed -n 's/.*"missing":\([0-9]*\).*/\1/p' "$work/move.strip.json")
    frames=$(sed -n 's/.*"frames":\([0-9]*\).*/\1/p' "$work/move.strip.json")
    say "a viewer at $deepest across the move: $frames frames, ${missing:-?} missing"
    if [ "${missing:-1}" != 0 ] || [ "${frames:-0}" -lt 600 ]; then
        say "FAIL: frames lost across the move"; cat "$work/move.strip.json"; exit 1
    fi
    strip_json "$deepest" "$broadcast"
    say "delay from the strip at $deepest, median: over TCP $over_tcp ms, over QUIC $(median "$deepest") ms"
fi
if $UPDATE; then
    head -c $((16 << 20)) /dev/urandom >"$work/rootfs.ext4"
    "$BIN" release pack --key "$work/release/release.key" --board netns --version 2 \
        --rootfs "$work/rootfs.ext4" -o "$work/v2.cbx" >/dev/null
    size=$(stat -c %s "$work/v2.cbx")
    # Control traffic into each site over 3 s, to subtract (tx: from the router into the site).
    declare -A base upd
    for s in $(seq "$SITES"); do base[$s]=$(uplink "$s" tx); done
    sleep 3
    for s in $(seq "$SITES"); do base[$s]=$(( ($(uplink "$s" tx) - base[$s]) / 3 )); upd[$s]=$(uplink "$s" tx); done
    started=$(date +%s%N)
    id=$(ip netns exec "${run}s1b1" "$BIN" update publish "$work/v2.cbx" --http 127.0.0.1:8080 | awk '{print $2}')
    whole() {
        local have
        for s in $(seq "$SITES"); do
            for b in 1 2 3; do
                [ "$s$b" = 11 ] && continue
                have=$(cat "$work/${run}s${s}b$b/bundles/$id.have" 2>/dev/null || true)
                [ -n "$have" ] && [ -z "${have//1/}" ] || return 1
            done
        done
    }
    for _ in $(seq 600); do whole && break; sleep 0.2; done
    took=$(( ($(date +%s%N) - started) / 1000000 ))
    whole || { say "FAIL: not every box kept update bundle $id whole within 120 s"; exit 1; }
    for s in $(seq "$SITES"); do
        for b in 1 2 3; do
            [ "$s$b" = 11 ] && continue
            cmp -s "$work/v2.cbx" "$work/${run}s${s}b$b/bundles/$id.cbx" ||
                { say "FAIL: ${run}s${s}b$b's copy of the bundle differs"; exit 1; }
        done
    done
    say "update bundle $id ($size bytes) whole at all $(( boxes - 1 )) other boxes after $took ms"
    ok=true
    for s in $(seq 2 "$SITES"); do
        into=$(( $(uplink "$s" tx) - upd[$s] - base[$s] * took / 1000 ))
        copies=$(awk -v b="$into" -v z="$size" 'BEGIN { printf "%.3f", b / z }')
        say "site s$s uplink: $into bytes of the bundle in = $copies copies"
        awk -v c="$copies" 'BEGIN { exit !(c <= 1.1) }' || ok=false
    done
    $ok || { say "FAIL: a site's uplink carried the bundle more than 1.1 times"; exit 1; }
fi
if $REGISTRY; then
    start_registry
    started=$(date +%s%N)
    count=0
    for _ in $(seq 100); do
        count=$(in_ns "${run}s1b2" curl -s "$registry_url/api/v1/nodes" 2>/dev/null | grep -o '"node":' | wc -l || true)
        [ "$count" = "$boxes" ] && break
        sleep 0.1
    done
    took=$(( ($(date +%s%N) - started) / 1000000 ))
    say "restarted registry lists $count of $boxes boxes after $took ms (heartbeat ${HEARTBEAT} s)"
    if [ "$count" != "$boxes" ] || [ "$took" -gt $(( HEARTBEAT * 1000 + 1000 )) ]; then
        say "FAIL: the registry was not complete again within one heartbeat"; exit 1
    fi
    if $NAT; then
        reach=$(in_ns "$hq" curl -s "http://127.0.0.1:8090/api/v1/nodes" |
            grep -o '"site":"s[0-9]*"\|"reachable":"[a-z]*"' | paste -d' ' - - | sort | uniq -c | tr -s ' ' | tr '\n' ';')
        say "the registry finds (boxes, site, reach):$reach"
        want_closed=$(echo "$reach" | grep -o ' 3 "site":"s2" "reachable":"site"' || true)
        others_closed=$(echo "$reach" | tr ';' '\n' | grep '"reachable":"site"' | grep -vc '"s2"' || true)
        if [ -z "$want_closed" ] || [ "$others_closed" != 0 ]; then
            say "FAIL: the registry should find s2's 3 boxes (and only those) reached from their site only"; exit 1
        fi
        found=$(ip netns exec "${run}s2b2" "$BIN" doctor --registry "$registry_url" --mdns false 2>&1 | grep "reach:" || true)
        say "cambox doctor behind the NAT:${found#*reach:}"
        echo "$found" | grep -q "sees 10.9.0.1, this box is 10.9.2.12: behind NAT" ||
            { say "FAIL: cambox doctor did not find the NAT"; exit 1; }
    fi
    if $CHAIN; then
        say "PASS: sites joined by a chain and a registry; streams outlived the registry"
    else
        say "PASS: sites found each other only through the registry; streams outlived it"
    fi
else
    say "PASS: one copy into each site, at most the fan-out out, mDNS per site, ${#watchers[@]} viewers played"
fi
