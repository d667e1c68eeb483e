# Sourced by the schemathesis scripts, with $me set to the script's name: finds the cambox
# binary ($BIN: $CAMBOX_BIN, or the debug build) and the pinned schemathesis in a private
# virtualenv beside the build ($venv), installing it from PyPI the first time.
# shellcheck shell=bash

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
target=${CARGO_TARGET_DIR:-$here/target}
BIN=${CAMBOX_BIN:-$target/debug/cambox}
[ -x "$BIN" ] || { echo "${me:?}: no cambox binary at $BIN (build first or set CAMBOX_BIN)" >&2; exit 2; }

venv="$target/schemathesis-venv"
if [ ! -x "$venv/bin/schemathesis" ]; then
    echo "${me:?}: installing schemathesis into $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q "schemathesis==4.32.5"
fi
