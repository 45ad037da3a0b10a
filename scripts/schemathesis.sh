#!/usr/bin/env bash
# Server API conformance: runs Schemathesis (property-based tests generated from the OpenAPI
# document) against the real server binary's /api/v1, through the document the server itself
# serves at /api/v1/openapi.json. Every operation gets schema-valid and schema-invalid bodies
# (a bounded number per operation, from a fixed seed, so a run repeats), with and without the
# API key and with other methods, and every answer is checked:
#   - no 5xx, ever (the API answers 503 `unavailable` only when Redis or the database fails,
#     and neither is in play here);
#   - its status is one the document lists for the operation, its Content-Type and body match
#     what the document says of that status (errors included: `{code, message, details}`);
#   - schema-invalid bodies are refused with a 4xx, calls without (or with a wrong) key get 401;
#   - another method gets 405 with an `Allow` header.
# Not checked: `positive_data_acceptance` (a schema-valid body must be accepted). The document
# cannot say which namespaces a server configures or which of them keep presence or history,
# nor limits counted in bytes, so the server rightly refuses some schema-valid bodies with 400
# (`not_enabled`, a multi-byte user id past 128 bytes); the check would have to be told to
# accept 400, i.e. weakened. The stateful checks (`use_after_free`, `ensure_resource_availability`,
# `object_level_authorization`) need resources the API creates and reads back: it has none.
#
#   scripts/schemathesis.sh        # after `cargo build --locked --bin rtgate`
# Env: RTGATE_BIN (default target/debug/rtgate); SCHEMATHESIS_MAX_EXAMPLES (per operation and
# phase, default 100); SCHEMATHESIS_SEED (default 20241202); SCHEMATHESIS_TIMEOUT (seconds for
# the whole run, default 600: the run takes well under a minute, the bound is for a server
# that stops answering).
# Schemathesis is installed (pinned) into target/schemathesis-venv on first use, from PyPI.
# Output: target/schemathesis/: server.log, report/ (JUnit XML and the NDJSON event stream).
# Exits non-zero if any check fails, or if the server or Schemathesis cannot be run. Nothing
# but loopback is contacted once Schemathesis is installed.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[schemathesis] %s\n' "$*"; }

version=4.32.5
venv=target/schemathesis-venv
bin="${RTGATE_BIN:-target/debug/rtgate}"
out=target/schemathesis
examples="${SCHEMATHESIS_MAX_EXAMPLES:-100}"
seed="${SCHEMATHESIS_SEED:-20241202}"
limit="${SCHEMATHESIS_TIMEOUT:-600}"

# The venv is (re)made when it is missing or holds another version.
if [ "$("$venv/bin/schemathesis" --version 2>/dev/null)" != "schemathesis, version $version" ]; then
  log "installing schemathesis $version into $venv"
  rm -rf "$venv"
  python3 -m venv "$venv" || { log "python3 -m venv failed (Debian/Ubuntu: apt-get install python3-venv)"; exit 1; }
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "schemathesis==$version"
fi

[ -x "$bin" ] || { log "no server binary at $bin (cargo build --locked --bin rtgate)"; exit 1; }
rm -rf "$out"
mkdir -p "$out"
work="$(mktemp -d)"
server=""
cleanup() {
  if [ -n "$server" ]; then
    kill "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 143' TERM INT # so a CI timeout still stops the server

# Namespaces covering every branch the API has: presence with and without history, history in
# shared state (memory here) and in the database, user-limited names, volatile publications.
# Generated channel names mostly have no `namespace:` and land in `default`, so it keeps both
# presence and durable history; names in other namespaces come from the document's examples.
cat >"$work/rtgate.toml" <<'EOF'
[namespaces.default]
presence = true
join_leave = true
history_size = 100
history_ttl = "5m"
history_durable = true
recover = true

[namespaces.news]
history_size = 50
history_ttl = "10m"
recover = true

[namespaces.notify]
subscribe = "user"
history_size = 20
history_ttl = "10m"
recover = true

[namespaces.room]
presence = true

[namespaces.live]
volatile = true
EOF

# Schemathesis's own settings. No cache: it would replay requests of earlier runs (and write
# .schemathesis/ into the repository), and a run must depend on the seed alone. Naming the
# file also keeps a schemathesis.toml found in a parent directory out of it.
cat >"$work/schemathesis.toml" <<'EOF'
[cache]
enabled = false
EOF

key="schemathesis-test-key-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"

# Port 0 and the READY line, as in scripts/autobahn.sh. An empty environment: no REDIS_URL,
# DATABASE_URL, RTGATE_API_ADDR or RTGATE_* of the caller's shell changes what is tested. Every
# request may be a new TCP connection from 127.0.0.1, and each counts against the per-IP rate.
env -i PATH="$PATH" RTGATE_LOG=warn RTGATE_JWT_SECRET="schemathesis-$key" \
  "$bin" serve --http-addr 127.0.0.1:0 --wt-addr 127.0.0.1:0 \
  --connect-rate-per-ip 1000000 --api-keys "$key" \
  --sqlite-path "$work/rtgate.sqlite" --config "$work/rtgate.toml" >"$out/server.log" 2>&1 &
server=$!

addr=""
for _ in $(seq 1 300); do
  addr="$(sed -n 's/^READY http=\([^ ]*\) .*/\1/p' "$out/server.log" | head -n1)"
  [ -n "$addr" ] && break
  kill -0 "$server" 2>/dev/null || { log "server exited:"; cat "$out/server.log"; exit 1; }
  sleep 0.1
done
[ -n "$addr" ] || { log "server printed no READY line in 30 s"; cat "$out/server.log"; exit 1; }

checks=not_a_server_error,status_code_conformance,content_type_conformance
checks+=,response_headers_conformance,response_schema_conformance,negative_data_rejection
checks+=,missing_required_header,ignored_auth,unsupported_method,allow_header_conformance

log "testing http://$addr/api/v1 ($examples examples per operation, seed $seed, at most ${limit}s)"
# No --max-time: with it, Schemathesis repeats its phases until the time is spent; the bound
# on the run is `timeout`. No example database (Hypothesis's memory of failing inputs): a run
# depends on the seed alone; what else Hypothesis keeps goes to $out, not .hypothesis/ in the
# repository. No proxy, so requests go straight to loopback.
set +e
env -u http_proxy -u https_proxy -u all_proxy -u HTTP_PROXY -u HTTPS_PROXY -u ALL_PROXY \
  NO_PROXY='*' HYPOTHESIS_STORAGE_DIRECTORY="$out/hypothesis" timeout "$limit" \
  "$venv/bin/schemathesis" --config-file "$work/schemathesis.toml" \
  run "http://$addr/api/v1/openapi.json" \
  --header "Authorization: apikey $key" \
  --checks "$checks" \
  --max-examples "$examples" --seed "$seed" --generation-database none \
  --workers 1 --request-timeout 10 \
  --report junit,ndjson --report-dir "$out/report"
status=$?
set -e

kill -0 "$server" 2>/dev/null || { log "the server died during the run:"; tail -n 50 "$out/server.log"; status=1; }
# A handler that panics drops its connection, which Schemathesis reports; the log says where.
if grep -q 'panicked' "$out/server.log"; then
  log "the server panicked:"
  grep -A5 'panicked' "$out/server.log" | head -n 40
  status=1
fi

if [ "$status" -ne 0 ]; then
  [ "$status" -eq 124 ] && log "timed out after ${limit}s"
  # A 5xx is logged by the server (`server API call failed on a dependency`, with the cause).
  if grep -qE ' (WARN|ERROR) ' "$out/server.log"; then
    log "the server's warnings and errors (last 20):"
    grep -E ' (WARN|ERROR) ' "$out/server.log" | tail -n 20
  fi
  log "FAILED (exit $status); server log and reports in $out/"
  exit "$status"
fi
log "passed; reports in $out/report/"
