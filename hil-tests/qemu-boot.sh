#!/usr/bin/env bash
# Boots the image's start-up on an emulated arm64 board (qemu-system-aarch64 -M virt,
# Debian's arm64 kernel) from a card laid out like the SD image: a FAT boot partition
# (config.txt, one directory per slot, cambox.toml), root slots A and B, and the data
# partition. This script plays the Raspberry Pi firmware: before each boot it reads
# config.txt, or tryboot.txt once when the one-shot flag (a file TRYBOOT) is set, and
# boots the slot it names with that slot's cmdline.txt. It checks what a person would see:
#
#   1. cambox.toml on the boot partition is imported: the box comes up with its name and
#      site, makes its node key (host name cambox-<short id>) and registers with a
#      registry on this machine; a button press makes it live and ffmpeg decodes it;
#   2. bundles signed by a stranger's key, for another board, or not newer are refused
#      with their reason, and nothing is written to either slot;
#   3. a good bundle published to the mesh at a box on this machine (`cambox update
#      publish`) reaches the emulated box over its mesh link; while it is live it waits;
#      stopped, it writes the bundle into slot B, reboots to try it, reaches the registry
#      from it, commits it (config.txt names b/ now), and keeps its node id;
#   4. a bundle whose cambox cannot run is tried in slot A and given up: the next boot is
#      slot B again, and the box reports the failed update;
#   5. power cuts (QEMU killed) at random points of an install: the box always boots a
#      good slot; a broken cambox.toml put on the card meanwhile is refused and the last
#      good one kept.
#
# Usage: hil-tests/qemu-boot.sh [--cambox PATH] [--power-cuts N]
#   (default: the static musl build, made with scripts/cross; a glibc build also works,
#   its libraries are copied in; one power cut)
# Needs: qemu-system-aarch64, qemu-aarch64-static, mkfs.vfat, mtools, mkfs.ext4, cpio,
# curl, ffmpeg, python3, and apt with the arm64 architecture (scripts/setup-deps).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}
work=$target/qemu-boot
cache=$target/qemu-cache
cambox_arm=
power_cuts=1
while [ $# -gt 0 ]; do
  case "$1" in
    --cambox) cambox_arm=$2; shift 2 ;;
    --power-cuts) power_cuts=$2; shift 2 ;;
    -h|--help) sed -n '2,27p' "$0"; exit 0 ;;
    *) echo "qemu-boot: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
say() { printf 'qemu-boot: %s\n' "$*"; }
fail() { say "FAIL: $*"; [ -f "$work/console.log" ] && tail -n 40 "$work/console.log" | sed 's/^/  console| /'; exit 1; }

for tool in qemu-system-aarch64 qemu-aarch64-static aarch64-linux-gnu-strip mkfs.vfat mcopy mtype \
    mdel mmd mkfs.ext4 cpio curl ffmpeg python3; do
  command -v "$tool" >/dev/null || { echo "qemu-boot: $tool is missing (scripts/setup-deps installs it)" >&2; exit 2; }
done
export MTOOLS_SKIP_CHECK=1

# ---- what the emulated board boots: Debian's arm64 kernel and busybox, cached
mkdir -p "$cache"
if [ ! -f "$cache/ready" ]; then
  say "fetching Debian's arm64 kernel and busybox (once)"
  kpkg=$(apt-cache depends linux-image-arm64:arm64 | awk '/Depends: linux-image-/ {print $2; exit}')
  [ -n "$kpkg" ] || fail "apt does not know linux-image-arm64:arm64 (dpkg --add-architecture arm64; apt-get update)"
  (cd "$cache" && rm -rf ./*.deb k b && apt-get download -q "$kpkg" busybox-static:arm64 >/dev/null)
  dpkg-deb -x "$cache"/linux-image-*.deb "$cache/k"
  dpkg-deb -x "$cache"/busybox-static_*.deb "$cache/b"
  touch "$cache/ready"
fi
vmlinuz=$(ls "$cache"/k/boot/vmlinuz-*)
kmods=$(ls -d "$cache"/k/lib/modules/*/kernel)
busybox=$cache/b/bin/busybox

if [ -z "$cambox_arm" ]; then
  say "building cambox for aarch64"
  cambox_arm=$("$root/scripts/cross" build aarch64-unknown-linux-musl)
fi
[ -x "$cambox_arm" ] || fail "no aarch64 cambox at $cambox_arm"
cambox_host=$target/debug/cambox
[ -x "$cambox_host" ] || cargo build -q -p cambox --manifest-path "$root/Cargo.toml"

rm -rf "$work" && mkdir -p "$work"
"$cambox_host" release init --dir "$work/release" >/dev/null
"$cambox_host" release init --dir "$work/stranger" >/dev/null

# ---- a root file system: busybox, cambox and its libraries, the image's overlay, and
# what the image says it is (/etc/cambox/release, release.pub). $3 = broken: a cambox
# that cannot start.
make_root() {
  local r=$1 version=$2 broken=${3:-}
  rm -rf "$r" && mkdir -p "$r"/{bin,sbin,usr/bin,usr/sbin,lib,proc,sys,dev,run,tmp,boot,data,root,etc/cambox}
  cp "$busybox" "$r/bin/busybox"
  for applet in $(qemu-aarch64-static "$busybox" --list-full); do
    [ -e "$r/$applet" ] || ln -s /bin/busybox "$r/$applet"
  done
  if [ "$broken" = broken ]; then
    printf '#!/bin/sh\necho "cambox: this build is broken on purpose" >&2\nexit 1\n' >"$r/usr/bin/cambox"
    chmod +x "$r/usr/bin/cambox"
  else
    # Without its debug information: the image strips it too.
    aarch64-linux-gnu-strip -o "$r/usr/bin/cambox" "$cambox_arm"
  fi
  # A static (musl) build needs nothing else; a glibc build brings its libraries.
  if aarch64-linux-gnu-readelf -l "$cambox_arm" | grep -q 'program interpreter'; then
    for lib in ld-linux-aarch64.so.1 libc.so.6 libm.so.6 libgcc_s.so.1 libstdc++.so.6; do
      cp -L "/usr/aarch64-linux-gnu/lib/$lib" "$r/lib/$lib"
    done
  fi
  cp -a "$root/board/common/rootfs-overlay/." "$r/"
  printf 'board=qemu_aarch64\nversion=%s\ntryboot=flag\n' "$version" >"$r/etc/cambox/release"
  cp "$work/release/release.pub" "$r/etc/cambox/release.pub"
}
root_image() { # dir version [broken] -> $work/root-<version>.ext4
  make_root "$work/tree" "$2" "${3:-}"
  local mb=$(( $(du -sm "$work/tree" | cut -f1) + 16 ))
  mkfs.ext4 -q -F -L cambox-root -d "$work/tree" "$1" "${mb}M" >/dev/null
}
# A bundle of a root file system; its boot files are the slot's cmdline.txt (the kernel
# is QEMU's). $1 version, $2 key dir, $3 board, [$4 broken]
bundle() {
  local out
  out=$work/bundle-$1-$3-$(basename "$2")${4:+-$4}.cbx
  root_image "$work/root.ext4" "$1" "${4:-}"
  mkdir -p "$work/slot-boot"
  printf 'root=/dev/vda2 ro console=ttyAMA0 panic=-1 cambox.trial=20\n' >"$work/slot-boot/cmdline.txt"
  "$cambox_host" release pack --key "$2/release.key" --board "$3" --version "$1" \
    --rootfs "$work/root.ext4" --boot-dir "$work/slot-boot" -o "$out" >/dev/null
  echo "$out"
}

# ---- the initramfs (what the Pi's kernel has built in): busybox, drivers, /init
rm -rf "$work/initrd" && mkdir -p "$work/initrd"/{bin,sbin,usr/bin,usr/sbin,lib/modules,proc,sys,dev,newroot}
cp "$busybox" "$work/initrd/bin/busybox"
: >"$work/initrd/lib/modules/load-order"
for m in drivers/net/failover net/core/failover drivers/net/net_failover \
         drivers/virtio/virtio_pci_legacy_dev drivers/virtio/virtio_pci_modern_dev \
         drivers/virtio/virtio_pci drivers/block/virtio_blk drivers/net/virtio_net \
         fs/fat/fat fs/fat/vfat fs/nls/nls_cp437 fs/nls/nls_ascii \
         lib/crc16 fs/mbcache fs/jbd2/jbd2 crypto/crc32c_generic fs/ext4/ext4; do
  [ -f "$kmods/$m.ko" ] || continue
  name=$(basename "$m")
  cp "$kmods/$m.ko" "$work/initrd/lib/modules/$name.ko"
  echo "$name" >>"$work/initrd/lib/modules/load-order"
done
cp "$root/hil-tests/qemu-init" "$work/initrd/init"
(cd "$work/initrd" && find . | cpio -o -H newc --quiet | gzip -1 >"$work/initramfs.cpio.gz")

# ---- the card: boot (FAT), root A (version 1), root B (empty), data
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
reg_port=$(free_port)
http_port=$(free_port)
mesh_port=$(free_port)
host_http=$(free_port)
cat >"$work/cambox.toml" <<TOML
name = "qemu-cam"
node = "qemu-box"
site = "emulated"
source = "testsrc"
audio = "tone"
width = 320
height = 180
fps = 10
bitrate = "300k"
mdns = false
registry = ["http://10.0.2.2:$reg_port"]
peers = ["10.0.2.2:$mesh_port"]
update_health = "90s"
TOML
root_image "$work/rootA.ext4" 1
root_mb=$(( ($(stat -c %s "$work/rootA.ext4") >> 20) * 3 / 2 + 8 ))
printf '# The emulated board: hil-tests/qemu-boot.sh reads this as the firmware would.\nos_prefix=a/\n' >"$work/config.txt"
printf 'root=/dev/vda2 ro console=ttyAMA0 panic=-1 cambox.slot=a\n' >"$work/cmdline-a.txt"
mkfs.vfat -n CAMBOX-BOOT -C "$work/boot.vfat" 16384 >/dev/null
mcopy -i "$work/boot.vfat" "$work/config.txt" "$work/cambox.toml" ::
mmd -i "$work/boot.vfat" ::a
mcopy -i "$work/boot.vfat" "$work/cmdline-a.txt" ::a/cmdline.txt
truncate -s 256M "$work/data.ext4"
mkfs.ext4 -q -F -L cambox-data "$work/data.ext4"
# MBR: 1 boot (FAT), 2 root A, 3 root B, 4 data; the card ends with the data partition.
python3 - "$work" "$root_mb" <<'PY'
import struct, sys
work, root_mb = sys.argv[1], int(sys.argv[2])
parts = [("boot.vfat", 16, 0x0C), ("rootA.ext4", root_mb, 0x83), (None, root_mb, 0x83), ("data.ext4", 256, 0x83)]
mib, at, mbr = 1 << 20, 1, bytearray(512)
with open(f"{work}/disk.img", "wb") as disk:
    for i, (image, size, kind) in enumerate(parts):
        mbr[446 + 16 * i:462 + 16 * i] = struct.pack("<B3sB3sII", 0, b"\xfe\xff\xff", kind, b"\xfe\xff\xff", at * 2048, size * 2048)
        if image:
            disk.seek(at * mib)
            disk.write(open(f"{work}/{image}", "rb").read())
        at += size
    disk.truncate(at * mib)
    mbr[510:512] = b"\x55\xaa"
    disk.seek(0)
    disk.write(mbr)
print(f"qemu-boot: the card: {at} MiB, root slots of {root_mb} MiB")
PY
fat="$work/disk.img@@1M"
slot_b_offset=$(( (17 + root_mb) << 20 ))

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
"$cambox_host" registry --http "127.0.0.1:$reg_port" --heartbeat 2 >"$work/registry.log" 2>&1 &
pids+=($!)
# A box on this machine, at another site: where updates are published to the mesh.
"$cambox_host" run --name host-box --site hq --listen "127.0.0.1:$mesh_port" --mesh-tcp off \
  --http "127.0.0.1:$host_http" --https off --rtsp off --webrtc-udp 0 --webrtc-tcp off --mdns false \
  --key "$work/host-box.key" --release-keys "$work/release/release.pub" >"$work/host-box.log" 2>&1 &
pids+=($!)

# The firmware: config.txt, or tryboot.txt once when the flag is set (and cleared before
# the kernel starts); the slot's cmdline.txt becomes the kernel's command line.
boot() {
  local config=config.txt
  if mtype -i "$fat" ::TRYBOOT >/dev/null 2>&1; then
    mdel -i "$fat" ::TRYBOOT
    config=tryboot.txt
  fi
  slot=$(mtype -i "$fat" "::$config" | tr -d '\r' | sed -n 's/^os_prefix=\([ab]\)\/$/\1/p')
  [ -n "$slot" ] || fail "the firmware found no os_prefix in $config"
  local cmdline
  cmdline=$(mtype -i "$fat" "::$slot/cmdline.txt" | tr -d '\r\n')
  say "firmware: $config, slot $slot: $cmdline"
  : >"$work/console.log"
  qemu-system-aarch64 -M virt -cpu cortex-a72 -smp 2 -m 1024 -accel tcg,thread=multi \
    -kernel "$vmlinuz" -initrd "$work/initramfs.cpio.gz" -append "$cmdline" \
    -drive "if=none,id=card,format=raw,file=$work/disk.img" -device virtio-blk-pci,drive=card \
    -netdev "user,id=net0,hostfwd=tcp:127.0.0.1:$http_port-:8080" \
    -device virtio-net-pci,netdev=net0,romfile= \
    -display none -monitor none -serial "file:$work/console.log" -no-reboot &
  qemu_pid=$!
  pids+=("$qemu_pid")
}

# Waits up to $1 s for command $2... to succeed.
wait_for() {
  local limit=$1; shift
  local end=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $end ] || return 1
    [ -z "${qemu_pid:-}" ] || kill -0 "$qemu_pid" 2>/dev/null || fail "QEMU stopped"
    sleep 1
  done
}
# Waits up to $1 s for QEMU to stop (the guest rebooted: -no-reboot ends QEMU).
wait_stopped() {
  local end=$((SECONDS + $1))
  while kill -0 "$qemu_pid" 2>/dev/null; do
    [ $SECONDS -lt $end ] || return 1
    sleep 1
  done
  wait "$qemu_pid" 2>/dev/null || true
  qemu_pid=
}
power_off() { kill -9 "$qemu_pid" 2>/dev/null || true; wait "$qemu_pid" 2>/dev/null || true; qemu_pid=; }
registered() { curl -fsS "http://127.0.0.1:$reg_port/api/v1/nodes" | grep -q '"name":"qemu-box"'; }
status() { curl -fsS "http://127.0.0.1:$http_port/api/v1/status"; }
is_live() { status | grep -q '"live":true'; }
update_state() { curl -fsS "http://127.0.0.1:$http_port/api/v1/update"; }
# POSTs bundle $1 (with query $2): prints the HTTP status, the body goes to $work/post.json.
post_bundle() {
  curl -sS -o "$work/post.json" -w '%{http_code}' -X POST -H 'Content-Type: application/octet-stream' \
    --data-binary "@$1" "http://127.0.0.1:$http_port/api/v1/update${2:-}"
}
slot_b_empty() {
  python3 -c 'import sys; f=open(sys.argv[1],"rb"); f.seek(int(sys.argv[2])); sys.exit(any(f.read(1<<20)))' \
    "$work/disk.img" "$slot_b_offset"
}
node_short() { sed -n 's/.*S20hostname: cambox-\([0-9a-f]*\).*/\1/p' "$work/console.log" | head -n 1; }

say "1. first boot"
t0=$SECONDS
boot
wait_for 300 registered || fail "the box did not register within 300 s"
say "registered after $((SECONDS - t0)) s"
nodes=$(curl -fsS "http://127.0.0.1:$reg_port/api/v1/nodes")
echo "$nodes" | grep -q '"site":"emulated"' || fail "the box's site is not the one in cambox.toml: $nodes"
grep -q "imported /boot/cambox.toml" "$work/console.log" || fail "no import in the console log"
short=$(node_short)
[ -n "$short" ] || fail "no host name in the console log"
echo "$nodes" | grep -q "\"node\":\"$short" || fail "host name cambox-$short is not the registered node id: $nodes"
say "PASS: cambox.toml imported, key made at first boot, host name cambox-$short, registered"
wait_for 60 status || fail "the box's page does not answer through the port forward"
curl -fsS -X POST -d '{"press":"short"}' "http://127.0.0.1:$http_port/api/v1/button" >/dev/null
wait_for 60 is_live || fail "the button press did not make the box live"
frames=$(ffmpeg -hide_banner -loglevel error -t 5 -i "http://127.0.0.1:$http_port/live/qemu-cam.mp4" \
  -map 0:v -f framemd5 - 2>"$work/ffmpeg.log" | grep -vc '^#' || true)
[ "${frames:-0}" -ge 10 ] || fail "ffmpeg decoded ${frames:-0} frames (want >= 10): $(tail -n 3 "$work/ffmpeg.log")"
say "PASS: a button press made the box live; ffmpeg decoded $frames frames"

say "2. bundles the box must refuse"
for spec in "2 $work/stranger qemu_aarch64|signed by no release key" \
            "2 $work/release rpi4_64|built for board rpi4_64" \
            "1 $work/release qemu_aarch64|is not newer than 1"; do
  IFS='|' read -r args want <<<"$spec"
  # shellcheck disable=SC2086 # three words on purpose
  b=$(bundle $args)
  code=$(post_bundle "$b" '?now=true')
  if [ "$code" != 403 ] || ! grep -q "$want" "$work/post.json"; then
    fail "bundle ($args): $code $(cat "$work/post.json"), want 403 '$want'"
  fi
  say "$(sed -n 's/.*"error":"\([^"]*\)".*/\1/p' "$work/post.json")"
done
slot_b_empty || fail "a refused bundle wrote to slot B"
if mtype -i "$fat" ::tryboot.txt >/dev/null 2>&1; then fail "a refused bundle wrote tryboot.txt"; fi
say "PASS: a stranger's, another board's and an older bundle refused; nothing written"

say "3. version 2, published to the mesh: fetched, installed into slot B, tried, committed"
good=$(bundle 2 "$work/release" qemu_aarch64)
sent() { curl -fsS "http://127.0.0.1:$host_http/metrics" | awk '/^cambox_mesh_sent_bytes_total/ {s += $2} END {print s + 0}'; }
sent_before=$(sent)
t0=$SECONDS
"$cambox_host" update publish "$good" --http "127.0.0.1:$host_http" || fail "cambox update publish failed"
arrived() { grep -q "update bundle complete" "$work/console.log"; }
wait_for 180 arrived || fail "the bundle did not arrive over the mesh: $(grep -c . "$work/host-box.log") host log lines"
say "the bundle came over the mesh in $((SECONDS - t0)) s: the host box sent $(( $(sent) - sent_before )) bytes for $(stat -c %s "$good")"
# Live: the box waits.
sleep 5
if ! kill -0 "$qemu_pid" || ! is_live; then fail "the box did not wait while it was live"; fi
update_state | grep -q '"update":null' || fail "the box installed while it was live: $(update_state)"
curl -fsS -X POST -d '{"live":false}' "http://127.0.0.1:$http_port/api/v1/live" >/dev/null
say "PASS: it waited while live; stopped, it installs and reboots"
wait_stopped 180 || fail "the box did not reboot after the install"
boot
[ "$slot" = b ] || fail "the firmware did not try slot B"
wait_for 300 status || fail "version 2 did not come up"
committed() { update_state | grep -q '"state":"committed"'; }
wait_for 120 committed || fail "version 2 was not committed: $(update_state)"
update_state | grep -q '"version":"2"' || fail "the record is not of version 2: $(update_state)"
[ "$(node_short)" = "$short" ] || fail "node id changed across the update: $short -> $(node_short)"
say "PASS: slot B tried, reached the registry, committed: $(update_state)"
listed() { curl -fsS "http://127.0.0.1:$reg_port/api/v1/nodes" | grep -q "\"version\":\"$1\",\"update\":\"$2\""; }
wait_for 30 listed 2 "committed 2" || fail "the registry does not list version 2, committed: $(curl -fsS "http://127.0.0.1:$reg_port/api/v1/nodes")"
curl -fsS "http://127.0.0.1:$http_port/metrics" | grep -q '^cambox_update_state{state="committed"} 1' ||
  fail "/metrics does not say committed"
say "PASS: the registry lists version 2, committed; /metrics says so"
power_off
[ "$(mtype -i "$fat" ::config.txt | sed -n 's/^os_prefix=//p' | tr -d '\r')" = b/ ] ||
  fail "config.txt does not name b/ after the commit"

say "4. version 3, whose cambox cannot run: tried in slot A, given up"
boot
wait_for 300 status || fail "slot B did not come back up"
bad=$(bundle 3 "$work/release" qemu_aarch64 broken)
t0=$SECONDS
code=$(post_bundle "$bad" '?now=true')
[ "$code" = 202 ] || fail "the broken bundle: $code $(cat "$work/post.json")"
install_s=$((SECONDS - t0))
say "sent to the box and installed in $install_s s"
wait_stopped 120 || fail "the box did not reboot after installing version 3"
boot
[ "$slot" = a ] || fail "the firmware did not try slot A"
wait_stopped 180 || fail "slot A with a broken cambox did not give up (S03trial)"
grep -q "S03trial: slot a was not committed" "$work/console.log" || fail "no S03trial message"
boot
[ "$slot" = b ] || fail "after the failed try the firmware did not boot slot B again"
failed() { update_state | grep -q '"state":"failed"'; }
wait_for 300 failed || fail "the failed update is not reported: $(update_state 2>&1)"
say "PASS: back on slot B; reported: $(update_state)"
wait_for 30 listed 2 "failed 3" || fail "the registry does not list the failed update"

say "5. power cuts while version 4 is installed"
good4=$(bundle 4 "$work/release" qemu_aarch64)
printf 'name = "qemu-cam"\nfps = "fast"\n' >"$work/broken.toml"
for cut in $(seq "$power_cuts"); do
  wait_for 300 status || fail "the box is not up before power cut $cut"
  delay=$(python3 -c "import random; print(round(random.uniform(0.2, $install_s + 1), 1))")
  post_bundle "$good4" '?now=true' >/dev/null 2>&1 &
  poster=$!
  sleep "$delay"
  power_off
  wait "$poster" 2>/dev/null || true
  if [ "$cut" = 1 ]; then mcopy -o -i "$fat" "$work/broken.toml" ::cambox.toml; fi
  say "power cut $cut, $delay s into the install"
  boot
  # The port forward answers only once this boot's box is up; then it registers.
  up_again() { status && registered; }
  wait_for 300 up_again || fail "after power cut $cut ($delay s in) the box did not come up (slot $slot)"
  say "PASS: after power cut $cut the box came up on slot $slot: $(update_state)"
done
grep -q "was not imported" "$work/console.log" || fail "the broken cambox.toml was not reported"
curl -fsS "http://127.0.0.1:$reg_port/api/v1/nodes" | grep -q '"site":"emulated"' ||
  fail "the box lost its last good configuration"
say "PASS: a broken cambox.toml was refused and the last good one kept"
say "all checks passed"
