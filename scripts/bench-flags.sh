# Sourced by the benchmark scripts (bench, bench-ab, bench-capacity, cluster-bench, …): the flags of the rtgate server under
# benchmark. Every limit that would throttle a load generator (per-connection events, per-IP
# connects, connections per server and per user) is lifted; everything else is default.
RTGATE_BENCH_FLAGS=(--dev-events --log warn --event-rate-limit 1000000000
  --connect-rate-per-ip 1000000000 --max-connections 1000000 --max-connections-per-user 100000
  --config scripts/bench-channels.toml)

# pg_row_counts URL SCHEMA: every table's exact row count in SCHEMA as one JSON object (the
# migrations' bookkeeping table left out); used by the capacity benchmarks.
pg_row_counts() {
  psql -qtA "$1" -c "select coalesce(json_object_agg(table_name, (xpath('/row/c/text()',
    query_to_xml(format('select count(*) as c from %I.%I', table_schema, table_name), false, true, '')))[1]::text::int), '{}')
    from information_schema.tables where table_schema = '$2' and table_name <> '_sqlx_migrations'"
}
