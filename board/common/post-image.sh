#!/bin/sh
# Runs on the build machine after the images are made: assembles the SD-card image from
# the board's genimage.cfg(.in) ($2: the board directory name under board/). The boot
# partition gets the firmware, the device trees, the kernel named in config.txt and a
# cambox.toml to edit; the data partition is a small empty ext4 labelled cambox-data,
# which the box grows at first boot.
set -eu
images=$BINARIES_DIR
board=$(cd "$(dirname "$0")/../$2" && pwd)
cp "$(dirname "$0")/cambox.toml.example" "$images/cambox.toml"
cfg=$images/genimage.cfg
if [ -e "$board/genimage.cfg.in" ]; then
	files=
	for f in "$images"/*.dtb "$images"/rpi-firmware/*; do
		[ -e "$f" ] && files="$files\t\t\t\"${f#"$images"/}\",\n"
	done
	kernel=$(sed -n 's/^kernel=//p' "$images/rpi-firmware/config.txt")
	files="$files\t\t\t\"${kernel:-Image}\",\n\t\t\t\"cambox.toml\""
	sed "s|@BOOT_FILES@|$files|" "$board/genimage.cfg.in" >"$cfg"
else
	cp "$board/genimage.cfg" "$cfg"
fi
tmp=$BUILD_DIR/genimage.tmp
rm -rf "$tmp"
genimage --rootpath "$TARGET_DIR" --tmppath "$tmp" --inputpath "$images" \
	--outputpath "$images" --config "$cfg"
echo "cambox: SD-card image at $images/sdcard.img"
