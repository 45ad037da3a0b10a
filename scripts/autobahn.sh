#!/usr/bin/env bash
# WebSocket conformance: runs the Autobahn test suite's fuzzing-client cases (driven by kosoku,
# which runs Autobahn's own case files) against rtgate's raw echo at /echo (`serve --ws-echo`).
# 12.* and 13.* are excluded: they test permessage-deflate, which rtgate does not negotiate.
# Results go to target/autobahn/: report/ (kosoku's Autobahn-format index.json, index.html and
# one file per case), kosoku.log (what it printed), summary.txt (counts by status), server.log.
# Exits non-zero if any case fails, or if the server or kosoku cannot be run.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[autobahn] %s\n' "$*"; }

out=target/autobahn
# The whole run takes about a minute; the bound is for a server that stops answering mid-case.
limit="${AUTOBAHN_TIMEOUT:-900}"

if ! command -v kosoku >/dev/null 2>&1; then
  log "installing kosoku"
  python3 -m pip install --quiet kosoku
fi

cargo build --locked --bin rtgate
rm -rf "$out"
mkdir -p "$out"

# Port 0 and the READY line: no race for a port picked in advance. Redis and the database are
# unset so the echo server never touches shared state; its history goes to a throwaway file.
# Every case is a new TCP connection from 127.0.0.1, and each counts against the per-IP rate.
env -u REDIS_URL -u DATABASE_URL RTGATE_LOG=warn \
  target/debug/rtgate serve --ws-echo --http-addr 127.0.0.1:0 --wt-addr 127.0.0.1:0 \
  --connect-rate-per-ip 1000000 \
  --sqlite-path "$out/rtgate.sqlite" >"$out/server.log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true' EXIT

addr=""
for _ in $(seq 1 300); do
  addr="$(sed -n 's/^READY http=\([^ ]*\) .*/\1/p' "$out/server.log" | head -n1)"
  [ -n "$addr" ] && break
  kill -0 "$server" 2>/dev/null || { log "server exited:"; cat "$out/server.log"; exit 1; }
  sleep 0.1
done
[ -n "$addr" ] || { log "server printed no READY line in 30 s"; cat "$out/server.log"; exit 1; }
for _ in $(seq 1 100); do
  curl -fsS "http://$addr/health/live" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fsS "http://$addr/health/live" >/dev/null || { log "no /health/live at $addr"; exit 1; }

log "running the fuzzing-client cases against ws://$addr/echo (at most ${limit}s)"
set +e
timeout "$limit" kosoku -m fuzzingclient "ws://$addr/echo" -x '12.*' -x '13.*' \
  -o "$out/report" 2>&1 | tee "$out/kosoku.log"
status=${PIPESTATUS[0]}
set -e
kill -0 "$server" 2>/dev/null || { log "the server died during the run:"; cat "$out/server.log"; status=1; }

# kosoku prints only pass/fail; the counts by status come from its index.json.
if [ -f "$out/report/index.json" ]; then
  python3 - "$out/report/index.json" >"$out/summary.txt" <<'EOF'
import collections, json, sys

index = json.load(open(sys.argv[1]))
cases = {cid: c for agent in index.values() for cid, c in agent.items()}
acceptable = {"OK", "NON-STRICT", "INFORMATIONAL"}
key = lambda cid: [int(p) for p in cid.split(".")]
print("behavior:      " + ", ".join(f"{k} {v}" for k, v in sorted(collections.Counter(c["behavior"] for c in cases.values()).items())))
print("behaviorClose: " + ", ".join(f"{k} {v}" for k, v in sorted(collections.Counter(c["behaviorClose"] for c in cases.values()).items())))
failed = sorted((cid for cid, c in cases.items() if c["behavior"] not in acceptable or c["behaviorClose"] not in acceptable), key=key)
for cid in failed:
    c = cases[cid]
    print(f"failed: {cid} behavior={c['behavior']} behaviorClose={c['behaviorClose']}")
print(f"autobahn: {len(cases) - len(failed)} passed, {len(failed)} failed")
EOF
  cat "$out/summary.txt"
else
  log "kosoku wrote no report"
  status=1
fi

if [ "$status" -ne 0 ]; then
  log "FAILED (exit $status); reports in $out/report/index.html"
  exit "$status"
fi
log "all cases passed; reports in $out/report/"
