#!/usr/bin/env bash
# Makes sure the local services the test suite talks to are installed and answering:
# Redis on 127.0.0.1:6379 and PostgreSQL on 127.0.0.1:5432 (trust auth, database `test`);
# and the browser client's tools: Node, Debian's Chromium and Firefox ESR (the e2e browsers) and
# client-js' dev dependencies.
# Safe to run repeatedly; installs with apt-get (and `npm ci`) only what is missing.
set -euo pipefail

log() { printf '[services] %s\n' "$*"; }

apt_install() {
  if ! command -v apt-get >/dev/null 2>&1; then
    log "apt-get not available; cannot install $*"; return 1
  fi
  if [ -z "${RTGATE_APT_UPDATED:-}" ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq || true
    export RTGATE_APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

redis_up() { redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; }
pg_up() { pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; }

ensure_redis() {
  command -v redis-server >/dev/null 2>&1 || { log "installing redis"; apt_install redis-server redis-tools; }
  if ! redis_up; then
    log "starting redis"
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null
    for _ in $(seq 1 50); do redis_up && break; sleep 0.1; done
  fi
  redis_up || { log "redis is not answering on 127.0.0.1:6379"; return 1; }
}

ensure_postgres() {
  if ! command -v pg_ctlcluster >/dev/null 2>&1; then
    log "installing postgresql"; apt_install postgresql postgresql-client
  fi
  if ! pg_up; then
    log "starting postgresql"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
    for _ in $(seq 1 100); do pg_up && break; sleep 0.1; done
  fi
  pg_up || { log "postgresql is not answering on 127.0.0.1:5432"; return 1; }
  if ! psql -h 127.0.0.1 -U postgres -tAc "select 1 from pg_database where datname='test'" 2>/dev/null | grep -q 1; then
    log "creating database test"
    psql -h 127.0.0.1 -U postgres -c "create database test" >/dev/null
  fi
}

ensure_client_tools() {
  command -v node >/dev/null 2>&1 || { log "installing node"; apt_install nodejs npm; }
  [ -x /usr/bin/chromium ] || { log "installing chromium"; apt_install chromium; }
  # Firefox ESR for the e2e tests (driven by puppeteer-core over WebDriver BiDi): the candidate
  # comes from Debian's security repository (153 ESR on bookworm), hence the update in apt_install.
  [ -x /usr/bin/firefox-esr ] || { log "installing firefox-esr"; apt_install firefox-esr; }
  local dir
  dir="$(cd "$(dirname "$0")/../client-js" && pwd)"
  # `npm ci` when node_modules is missing or older than the lock file.
  if [ ! -f "$dir/node_modules/.package-lock.json" ] || [ "$dir/package-lock.json" -nt "$dir/node_modules/.package-lock.json" ]; then
    log "npm ci in client-js"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
  fi
}

# The memory soak reads the history database and /metrics from the shell.
ensure_soak_tools() {
  command -v sqlite3 >/dev/null 2>&1 || { log "installing sqlite3"; apt_install sqlite3; }
  command -v curl >/dev/null 2>&1 || { log "installing curl"; apt_install curl; }
}

ensure_redis
ensure_postgres
ensure_soak_tools
log "redis and postgresql are up"
ensure_client_tools
log "node, chromium, firefox-esr and client-js dependencies are ready"
