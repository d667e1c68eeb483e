#!/usr/bin/env bash
# scripts/flash against a loop device standing in for an SD card (run as root): it
# writes and verifies, and refuses what it must refuse. Prints PASS lines; exits 1 on
# the first failure.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
flash=$root/scripts/flash
[ "$(id -u)" = 0 ] || { echo "flash-test: needs root (loop devices)" >&2; exit 2; }
work=$(mktemp -d)
loop=
cleanup() {
  mountpoint -q "$work/mnt" 2>/dev/null && umount "$work/mnt"
  [ -n "$loop" ] && losetup -d "$loop"
  rm -rf "$work"
}
trap cleanup EXIT
pass() { echo "flash-test: PASS: $*"; }
fail() { echo "flash-test: FAIL: $*"; exit 1; }
# Expects the command to be refused with a message containing $1.
refused() {
  local want=$1; shift
  local out
  if out=$("$@" 2>&1); then fail "accepted: $*"; fi
  grep -q "$want" <<<"$out" || fail "refused without '$want': $out"
}

head -c 8M /dev/urandom >"$work/sdcard.img"
truncate -s 32M "$work/card"
loop=$(losetup -f --show "$work/card")

refused "not a block device" "$flash" "$work/sdcard.img" "$work/card" --yes
pass "a file that is not a block device is refused"
refused "not confirmed" sh -c "echo nope | '$flash' '$work/sdcard.img' '$loop'"
pass "a wrong confirmation is refused"
refused "more than --max-size" "$flash" "$work/sdcard.img" "$loop" --yes --max-size 0
pass "a device over the size limit is refused"
"$flash" "$work/sdcard.img" "$loop" --yes --max-size 0 --force >"$work/out" 2>&1 || fail "flash failed: $(cat "$work/out")"
grep -q "verified" "$work/out" || fail "no verification: $(cat "$work/out")"
cmp -n 8388608 "$work/sdcard.img" "$loop" || fail "the card differs from the image"
pass "written with --force and verified"
mkfs.ext4 -q -F "$loop"
mkdir -p "$work/mnt" && mount "$loop" "$work/mnt"
refused "is mounted" "$flash" "$work/sdcard.img" "$loop" --yes
umount "$work/mnt"
pass "a mounted card is refused"
truncate -s 64M "$work/big.img"
refused "smaller than the image" "$flash" "$work/big.img" "$loop" --yes
pass "an image larger than the card is refused"
echo "flash-test: all checks passed"
