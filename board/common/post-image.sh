#!/bin/sh
# Runs on the build machine after the images are made: assembles the SD-card image from
# the board's genimage.cfg(.in) ($2: the board directory name under board/). The card has
# two root slots (docs/architecture.md, "Updates"): the boot partition holds the firmware,
# config.txt naming slot A's directory (os_prefix=a/), and a/ with the kernel, device
# trees, overlays and a cmdline.txt that names root partition 2 and cambox.slot=a; slot
# B's root partition (3) starts empty; the data partition (4) is a small empty ext4
# labelled cambox-data, which the box grows at first boot. A cambox.toml to edit sits at
# the top of the boot partition.
set -eu
images=$BINARIES_DIR
board=$(cd "$(dirname "$0")/../$2" && pwd)
cp "$(dirname "$0")/cambox.toml.example" "$images/cambox.toml"
cfg=$images/genimage.cfg
slot=$images/a
rm -rf "$slot" && mkdir -p "$slot"
if [ -e "$board/genimage.cfg.in" ]; then
	firmware=$images/rpi-firmware
	kernel=$(sed -n 's/^kernel=//p' "$firmware/config.txt")
	cp "$images/${kernel:-Image}" "$slot/"
	for f in "$images"/*.dtb; do [ -e "$f" ] && cp "$f" "$slot/"; done
	[ -d "$firmware/overlays" ] && cp -r "$firmware/overlays" "$slot/"
	sed 's/$/ cambox.slot=a/' "$firmware/cmdline.txt" >"$slot/cmdline.txt"
	grep -v '^os_prefix=' "$firmware/config.txt" >"$images/config.txt"
	printf '# The slot the firmware boots (a/ or b/); an update changes this letter only.\nos_prefix=a/\n' \
		>>"$images/config.txt"
	files=
	for f in "$firmware"/*; do
		case "${f##*/}" in config.txt | cmdline.txt | overlays) continue ;; esac
		files="$files\t\t\t\"${f#"$images"/}\",\n"
	done
	files="$files\t\t\t\"config.txt\",\n\t\t\t\"a\",\n\t\t\t\"cambox.toml\""
	sed "s|@BOOT_FILES@|$files|" "$board/genimage.cfg.in" >"$cfg"
else
	# The emulated board: QEMU is given the kernel; the boot stage reads the rest.
	printf 'root=/dev/vda2 ro console=ttyAMA0 panic=-1 cambox.slot=a\n' >"$slot/cmdline.txt"
	printf 'os_prefix=a/\n' >"$images/config.txt"
	cp "$board/genimage.cfg" "$cfg"
fi
tmp=$BUILD_DIR/genimage.tmp
rm -rf "$tmp"
genimage --rootpath "$TARGET_DIR" --tmppath "$tmp" --inputpath "$images" \
	--outputpath "$images" --config "$cfg"
echo "cambox: SD-card image at $images/sdcard.img; slot A's boot files in $slot"
