#!/usr/bin/env bash
# Runs schemathesis (from PyPI, in the private virtualenv the registry's run uses) against
# the OpenAPI document of a running box (`cambox run`, with local accounts, live on a test
# source) twice: without credentials, where everything but the open routes must be refused,
# nothing kept and nothing started; then as an operator with a bearer token from
# POST /api/v1/login. Every response must be no 5xx, of a documented status and content
# type and match its schema. The endless streams (server-sent events, /live/*.mp4) are
# documented but not run. About 25 s. Builds nothing: the binary is $CAMBOX_BIN or
# target/debug/cambox.
# Usage: hil-tests/box-schemathesis.sh [--examples N]   (default 50 per operation and run)
set -euo pipefail

EXAMPLES=50
while [ $# -gt 0 ]; do
    case "$1" in
        --examples) EXAMPLES=$2; shift 2 ;;
        -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
        *) echo "box-schemathesis: unknown option $1 (try --help)" >&2; exit 2 ;;
    esac
done

me=box-schemathesis
# shellcheck source=hil-tests/schemathesis-setup.sh
. "$(dirname "$0")/schemathesis-setup.sh"

dir=$(mktemp -d)
pid=""
cleanup() {
    if [ -n "$pid" ]; then
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
    rm -rf "$dir"
}
trap cleanup EXIT
fail() {
    echo "box-schemathesis: $*" >&2
    echo "--- the box's log (last 30 lines):" >&2
    tail -n 30 "$dir/log" >&2 || true
    exit 1
}

# An operator and a viewer; the password is read from standard input.
password=$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')
printf '%s\n' "$password" | "$BIN" user add op --role operator --users "$dir/users.toml" >/dev/null
printf '%s\n' "$password" | "$BIN" user add vw --role viewer --users "$dir/users.toml" >/dev/null
cp "$dir/users.toml" "$dir/users.before"

"$BIN" run --http 127.0.0.1:0 --listen 127.0.0.1:0 --mdns false --rtsp off --https off \
    --live --source testsrc --audio tone --key "$dir/node.key" --users "$dir/users.toml" \
    --audit "$dir/audit.log" --name hall 2>"$dir/log" &
pid=$!
url=""
for _ in $(seq 100); do
    url=$(sed -n "s/^cambox: box '.*' at \(http:[^ ]*\) .*/\1/p" "$dir/log")
    [ -n "$url" ] && break
    kill -0 "$pid" 2>/dev/null || fail "the box exited at start"
    sleep 0.1
done
[ -n "$url" ] || fail "the box did not start within 10 s"

json() { "$venv/bin/python" -c "import json, sys; d = json.load(sys.stdin); $1"; }

# Logged in before run (a): its login attempts use up this address's allowance (10 a minute).
token=$(curl -sf -X POST "${url}api/v1/login" -H 'Content-Type: application/json' \
    -d "{\"name\": \"op\", \"password\": \"$password\"}" | json 'print(d["token"])') \
    || fail "cannot log in as op"

# WHEP offers are SDP, text schemathesis has no serializer for: sent as text/plain would be.
cat >"$dir/hooks.py" <<'EOF'
import schemathesis

schemathesis.serializer.alias("application/sdp", "text/plain")
EOF
# With no include filter, schemathesis would leave out the operation serving the document.
# It runs in the temporary directory, where it keeps its cache (.schemathesis).
st() {
    (cd "$dir" && SCHEMATHESIS_HOOKS="$dir/hooks.py" "$venv/bin/schemathesis" run \
        "${url}api/v1/openapi.yaml" \
        --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
        --max-examples "$EXAMPLES" --no-color --include-path-regex '^/' "$@")
}
streams='/events$|^/live/'

echo "== box-schemathesis: (a) without credentials" >&2
st --exclude-path-regex "$streams" || fail "run (a), without credentials, failed"

# Nothing an unauthenticated request can do is kept or started.
cmp -s "$dir/users.before" "$dir/users.toml" || fail "users.toml changed in run (a)"
if [ -s "$dir/audit.log" ]; then
    cat "$dir/audit.log" >&2
    fail "the audit log has records from run (a), without credentials"
fi
curl -sf -H "Authorization: Bearer $token" "${url}api/v1/status" | json '
assert d["watching"] == [], "watching: %r" % d["watching"]
assert d["live"], "the box is no longer live"' || fail "the status after run (a) is not as it was"

# Logging out would end the session the run uses.
echo "== box-schemathesis: (b) as an operator (Authorization: Bearer)" >&2
st --exclude-path-regex "$streams|^/api/v1/logout\$" -H "Authorization: Bearer $token" \
    || fail "run (b), as an operator, failed"

# Refusals axum makes before any handler (a body over its 2 MiB limit, a path parameter
# that is not UTF-8), which schemathesis does not send, are JSON errors too.
probe() {
    curl -s -o /dev/null -w '%{http_code} %{content_type}' -H "Authorization: Bearer $token" "$@"
}
got=$(head -c 3000000 /dev/zero | probe -X POST --data-binary @- "${url}api/v1/chat/x")
[ "$got" = "413 application/json" ] || fail "a 3 MB body: $got, not 413 application/json"
got=$(probe "${url}api/v1/chat/%ff")
[ "$got" = "400 application/json" ] || fail "a room that is not UTF-8: $got, not 400 application/json"
