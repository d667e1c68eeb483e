#!/usr/bin/env bash
# Runs schemathesis (from PyPI, in a private virtualenv) against the OpenAPI document of a
# running `cambox registry`: every generated request must get no 5xx and a response that
# matches the schema; schema-violating input must be refused.
# Usage: hil-tests/registry-schemathesis.sh [--examples N]   (binary: $CAMBOX_BIN)
set -euo pipefail

EXAMPLES=50
while [ $# -gt 0 ]; do
    case "$1" in
        --examples) EXAMPLES=$2; shift 2 ;;
        -h|--help) sed -n '2,6p' "$0"; exit 0 ;;
        *) echo "registry-schemathesis: unknown option $1 (try --help)" >&2; exit 2 ;;
    esac
done

me=registry-schemathesis
# shellcheck source=hil-tests/schemathesis-setup.sh
. "$(dirname "$0")/schemathesis-setup.sh"

log=$(mktemp)
# With a release key, so the update routes answer as they do for a company.
keys=$(mktemp -d)
"$BIN" release init --dir "$keys/key" >/dev/null
"$BIN" registry --http 127.0.0.1:0 --rate 1000000 \
    --release-keys "$keys/key/release.pub" --updates "$keys/depot" 2>"$log" &
pid=$!
trap 'kill $pid 2>/dev/null || true; rm -rf "$log" "$keys"' EXIT
url=""
for _ in $(seq 100); do
    url=$(sed -n 's/^cambox: registry at \(http:[^ ]*\) .*/\1/p' "$log")
    [ -n "$url" ] && break
    sleep 0.1
done
[ -n "$url" ] || { echo "registry-schemathesis: the registry did not start" >&2; cat "$log" >&2; exit 1; }

# From a scratch directory: schemathesis keeps a cache in the directory it runs in.
scratch=$(mktemp -d)
trap 'kill $pid 2>/dev/null || true; rm -rf "$log" "$scratch" "$keys"' EXIT
(cd "$scratch" && "$venv/bin/schemathesis" --config-file "$here/hil-tests/schemathesis.toml" run \
    "${url}api/v1/openapi.json" --checks all --max-examples "$EXAMPLES" --no-color)
