#!/bin/sh
# Runs on the build machine after the root file system is assembled ($1: the target
# directory). The root stays read-only on the box: everything that changes lives on the
# data partition (/data) or in tmpfs (/run, /tmp).
set -eu
target=$1
mkdir -p "$target/boot" "$target/data" "$target/run" "$target/tmp"
# The boot and data partitions are mounted by S01mounts by their labels, not by fstab.
grep -q '^# cambox' "$target/etc/fstab" 2>/dev/null ||
	printf '# cambox: / is read-only; /boot and /data are mounted by /etc/init.d/S01mounts\n' \
		>>"$target/etc/fstab"
# Start-up scripts of Buildroot's packages that would write to the read-only root or
# duplicate ours (the overlay, copied before this runs, replaced S40network by name).
for s in S20seedrng S20urandom S49ntp S50crond; do
	[ -e "$target/etc/init.d/$s" ] && chmod -x "$target/etc/init.d/$s"
done
# What the image is, for updates ($2: the board): its board, its release version
# (scripts/build-image sets CAMBOX_RELEASE_VERSION), and how its firmware tries a slot
# (the Raspberry Pi firmware's tryboot flag; the emulated board's boot stage reads a file).
board=${2:-unknown}
tryboot=firmware
[ "$board" = qemu_aarch64 ] && tryboot=flag
mkdir -p "$target/etc/cambox"
printf 'board=%s\nversion=%s\ntryboot=%s\n' "$board" "${CAMBOX_RELEASE_VERSION:-0}" "$tryboot" \
	>"$target/etc/cambox/release"
# The release keys this image installs updates from (scripts/build-image --release-key).
if [ -n "${CAMBOX_RELEASE_PUB:-}" ]; then
	cp "$CAMBOX_RELEASE_PUB" "$target/etc/cambox/release.pub"
else
	rm -f "$target/etc/cambox/release.pub"
	echo "post-build: no release key given: this image will refuse every update" >&2
fi
exit 0
