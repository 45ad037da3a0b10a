# Sourced by scripts/bench and scripts/bench-ab: the flags of the rtgate server under
# benchmark. Every limit that would throttle a load generator (per-connection events, per-IP
# connects, connections per server and per user) is lifted; everything else is default.
RTGATE_BENCH_FLAGS=(--dev-events --log warn --event-rate-limit 1000000000
  --connect-rate-per-ip 1000000000 --max-connections 1000000 --max-connections-per-user 100000
  --config scripts/bench-channels.toml)
