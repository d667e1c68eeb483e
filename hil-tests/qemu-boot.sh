#!/usr/bin/env bash
# Boots the image's start-up (busybox init, /etc/init.d from board/common/rootfs-overlay,
# the same files the SD image has) with an aarch64 cambox on an emulated arm64 machine
# (qemu-system-aarch64 -M virt, Debian's arm64 kernel), and checks what a person would see:
#
#   1. cambox.toml on a FAT partition labelled CAMBOX-BOOT is imported to the data
#      partition (ext4, label cambox-data): the box comes up with its name and site;
#   2. the node key is made at first boot, and the host name is cambox-<short id>;
#   3. the box advertises itself: it registers with a registry on this machine;
#   4. a simulated button press (POST /api/v1/button) makes it live, and ffmpeg decodes
#      its stream through QEMU's port forward;
#   5. after a reboot with the same disks, the node id is the same (the key persisted)
#      and a bad cambox.toml is refused while the box keeps its last good one.
#
# Usage: hil-tests/qemu-boot.sh [--cambox PATH]   (default: the static musl build, made
# with scripts/cross; a glibc build also works, its libraries are copied in)
# Needs: qemu-system-aarch64, mkfs.vfat, mcopy, mkfs.ext4, cpio, curl, ffmpeg, and apt
# with the arm64 architecture added (scripts/setup-deps does all this).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}
work=$target/qemu-boot
cache=$target/qemu-cache
cambox_arm=
while [ $# -gt 0 ]; do
  case "$1" in
    --cambox) cambox_arm=$2; shift 2 ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "qemu-boot: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
say() { printf 'qemu-boot: %s\n' "$*"; }
fail() { say "FAIL: $*"; [ -f "$work/console.log" ] && tail -n 40 "$work/console.log" | sed 's/^/  console| /'; exit 1; }

for tool in qemu-system-aarch64 aarch64-linux-gnu-strip mkfs.vfat mcopy mkfs.ext4 cpio curl ffmpeg; do
  command -v "$tool" >/dev/null || { echo "qemu-boot: $tool is missing (scripts/setup-deps installs it)" >&2; exit 2; }
done

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

if [ -z "$cambox_arm" ]; then
  say "building cambox for aarch64"
  cambox_arm=$("$root/scripts/cross" build aarch64-unknown-linux-musl)
fi
[ -x "$cambox_arm" ] || fail "no aarch64 cambox at $cambox_arm"
cambox_host=$target/debug/cambox
[ -x "$cambox_host" ] || cargo build -q -p cambox --manifest-path "$root/Cargo.toml"

# ---- the initramfs: busybox, cambox and its libraries, drivers, the image's overlay
rm -rf "$work" && mkdir -p "$work/root"
r=$work/root
mkdir -p "$r"/{bin,sbin,usr/bin,usr/sbin,lib/modules,proc,sys,dev,run,tmp,boot,data,root}
cp "$cache/b/bin/busybox" "$r/bin/busybox"
# Without its debug information: the image strips it too.
aarch64-linux-gnu-strip -o "$r/usr/bin/cambox" "$cambox_arm"
# A static (musl) build needs nothing else; a glibc build brings its libraries.
if aarch64-linux-gnu-readelf -l "$cambox_arm" | grep -q 'program interpreter'; then
  sysroot=/usr/aarch64-linux-gnu/lib
  for lib in ld-linux-aarch64.so.1 libc.so.6 libm.so.6 libgcc_s.so.1 libstdc++.so.6; do
    cp -L "$sysroot/$lib" "$r/lib/$lib"
  done
fi
: >"$r/lib/modules/load-order"
for m in drivers/net/failover net/core/failover drivers/net/net_failover \
         drivers/virtio/virtio_pci_legacy_dev drivers/virtio/virtio_pci_modern_dev \
         drivers/virtio/virtio_pci drivers/block/virtio_blk drivers/net/virtio_net \
         fs/fat/fat fs/fat/vfat fs/nls/nls_cp437 fs/nls/nls_ascii \
         lib/crc16 fs/mbcache fs/jbd2/jbd2 crypto/crc32c_generic fs/ext4/ext4; do
  [ -f "$kmods/$m.ko" ] || continue
  name=$(basename "$m")
  cp "$kmods/$m.ko" "$r/lib/modules/$name.ko"
  echo "$name" >>"$r/lib/modules/load-order"
done
cp -a "$root/board/common/rootfs-overlay/." "$r/"
cp "$root/hil-tests/qemu-init" "$r/init"
(cd "$r" && find . | cpio -o -H newc --quiet | gzip -1 >"$work/initramfs.cpio.gz")

# ---- the disks: the boot partition a person edits, and the box's data partition
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
reg_port=$(free_port)
http_port=$(free_port)
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
TOML
mkfs.vfat -n CAMBOX-BOOT -C "$work/boot.img" 16384 >/dev/null
mcopy -i "$work/boot.img" "$work/cambox.toml" ::cambox.toml
truncate -s 64M "$work/data.img"
mkfs.ext4 -q -F -L cambox-data "$work/data.img"

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
"$cambox_host" registry --http "127.0.0.1:$reg_port" --heartbeat 2 >"$work/registry.log" 2>&1 &
pids+=($!)

boot() {
  qemu-system-aarch64 -M virt -cpu cortex-a72 -smp 2 -m 1024 -accel tcg,thread=multi \
    -kernel "$vmlinuz" -initrd "$work/initramfs.cpio.gz" -append "console=ttyAMA0 panic=-1" \
    -drive "if=none,id=boot,format=raw,file=$work/boot.img" -device virtio-blk-pci,drive=boot \
    -drive "if=none,id=data,format=raw,file=$work/data.img" -device virtio-blk-pci,drive=data \
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
registered() { curl -fsS "http://127.0.0.1:$reg_port/api/v1/nodes" | grep -q '"name":"qemu-box"'; }
status() { curl -fsS "http://127.0.0.1:$http_port/api/v1/status"; }
is_live() { status | grep -q '"live":true'; }

say "first boot"
t0=$SECONDS
boot
wait_for 300 registered || fail "the box did not register within 300 s"
say "registered after $((SECONDS - t0)) s"
nodes=$(curl -fsS "http://127.0.0.1:$reg_port/api/v1/nodes")
echo "$nodes" | grep -q '"site":"emulated"' || fail "the box's site is not the one in cambox.toml: $nodes"
grep -q "imported /boot/cambox.toml" "$work/console.log" || fail "no import in the console log"
short=$(sed -n 's/.*S20hostname: cambox-\([0-9a-f]*\).*/\1/p' "$work/console.log" | head -n 1)
[ -n "$short" ] || fail "no host name in the console log"
echo "$nodes" | grep -q "\"node\":\"$short" || fail "host name cambox-$short is not the registered node id: $nodes"
say "PASS: cambox.toml imported, key made at first boot, host name cambox-$short, registered"

wait_for 60 status || fail "the box's page does not answer through the port forward"
curl -fsS -X POST -d '{"press":"short"}' "http://127.0.0.1:$http_port/api/v1/button" >/dev/null
wait_for 60 is_live || fail "the button press did not make the box live"
say "PASS: a button press made the box live"
frames=$(ffmpeg -hide_banner -loglevel error -t 5 -i "http://127.0.0.1:$http_port/live/qemu-cam.mp4" \
  -map 0:v -f framemd5 - 2>"$work/ffmpeg.log" | grep -vc '^#' || true)
[ "${frames:-0}" -ge 10 ] || fail "ffmpeg decoded ${frames:-0} frames (want >= 10): $(tail -n 3 "$work/ffmpeg.log")"
codec=$(ffprobe -v error -select_streams v:0 -show_entries stream=codec_name,width,height -of csv=p=0 \
  -read_intervals "%+2" "http://127.0.0.1:$http_port/live/qemu-cam.mp4" | head -n 1)
[ "$codec" = "h264,320,180" ] || fail "ffprobe saw '$codec', want h264,320,180"
say "PASS: ffmpeg decoded $frames frames of the live stream ($codec)"

say "second boot, same disks, with a broken cambox.toml on the boot partition"
kill "$qemu_pid"; wait "$qemu_pid" 2>/dev/null || true; qemu_pid=
unregistered() { ! registered; }
wait_for 60 unregistered || fail "the registry kept the stopped box"
printf 'name = "qemu-cam"\nfps = "fast"\n' >"$work/broken.toml"
mcopy -o -i "$work/boot.img" "$work/broken.toml" ::cambox.toml
: >"$work/console.log"
boot
wait_for 300 registered || fail "the box did not register again within 300 s"
short2=$(sed -n 's/.*S20hostname: cambox-\([0-9a-f]*\).*/\1/p' "$work/console.log" | head -n 1)
[ "$short2" = "$short" ] || fail "node id changed across reboots: $short -> $short2"
grep -q "was not imported" "$work/console.log" || fail "the broken file was not reported"
curl -fsS "http://127.0.0.1:$reg_port/api/v1/nodes" | grep -q '"site":"emulated"' ||
  fail "the box lost its last good configuration"
say "PASS: same node id after reboot; a broken cambox.toml was refused and the last good one kept"
say "all checks passed"
