#!/usr/bin/env bash
# Makes sure the local services the test suite talks to are installed and answering:
# Redis on 127.0.0.1:6379, a Redis Cluster (3 masters, 3 replicas) on 127.0.0.1:7101-7106,
# and PostgreSQL on 127.0.0.1:5432 (trust auth, database `test`);
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

# The Redis Cluster the cluster cases of tests/state run against (REDIS_CLUSTER_TEST_URL). Kept
# out of the ordinary Redis' way: its own ports and directories, no persistence.
CLUSTER_PORTS="7101 7102 7103 7104 7105 7106"
CLUSTER_DIR=/tmp/rtgate-redis-cluster

cluster_ok() { redis-cli -h 127.0.0.1 -p 7101 cluster info 2>/dev/null | grep -q '^cluster_state:ok'; }
node_up() { redis-cli -h 127.0.0.1 -p "$1" ping 2>/dev/null | grep -q PONG; }

ensure_redis_cluster() {
  local port nodes=()
  # Nodes are started even when the cluster is ok without them: a node that died (a failover
  # test, a crash) rejoins from its nodes.conf, as a replica of whoever took its slots over.
  for port in $CLUSTER_PORTS; do
    nodes+=("127.0.0.1:$port")
    node_up "$port" && continue
    log "starting redis cluster node $port"
    mkdir -p "$CLUSTER_DIR/$port"
    redis-server --cluster-enabled yes --cluster-config-file "nodes-$port.conf" --port "$port" \
      --bind 127.0.0.1 --save "" --appendonly no --daemonize yes --dir "$CLUSTER_DIR/$port" >/dev/null
  done
  for port in $CLUSTER_PORTS; do
    for _ in $(seq 1 50); do node_up "$port" && break; sleep 0.1; done
    node_up "$port" || { log "redis cluster node $port is not answering"; return 1; }
  done
  if cluster_ok; then return 0; fi
  # A node that already knows others was joined before (a partial restart): wait for it to
  # converge rather than create a second cluster over it.
  if [ "$(redis-cli -h 127.0.0.1 -p 7101 cluster info | grep -c '^cluster_known_nodes:1\b')" = 1 ]; then
    log "creating redis cluster"
    redis-cli --cluster create "${nodes[@]}" --cluster-replicas 1 --cluster-yes >/dev/null
  fi
  # Up to 30 s: nodes restarted after their masters died converge only once the cluster's node
  # timeout (15 s) has promoted replicas.
  for _ in $(seq 1 300); do cluster_ok && break; sleep 0.1; done
  cluster_ok || { log "redis cluster is not ok on 127.0.0.1:7101"; return 1; }
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
ensure_redis_cluster
ensure_postgres
ensure_soak_tools
log "redis, redis cluster and postgresql are up"
ensure_client_tools
log "node, chromium, firefox-esr and client-js dependencies are ready"
