#!/usr/bin/env python3
"""Turns scripts/bench's results.tsv (loadgen, backend, JSON line) into markdown tables with
rtgate/raw and rtgate/Socket.IO ratios (Socket.IO through both load generators) and the
issue's targets marked met / not met."""
import json
import sys

rows = []
for line in open(sys.argv[1]):
    parts = line.rstrip("\n").split("\t", 2)
    if len(parts) == 3:
        loadgen, backend, js = parts
        try:
            o = json.loads(js)
        except ValueError:
            continue
        o["loadgen"], o["backend"] = loadgen, backend
        rows.append(o)


def find(loadgen, target, scenario, backend, transport="ws"):
    for o in rows:
        if (o["loadgen"], o.get("target"), o.get("scenario"), o["backend"]) == (loadgen, target, scenario, backend) \
                and (loadgen == "node" or o.get("transport") == transport):
            return o
    return None


def fmt(v):
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:,.1f}" if abs(v) < 100 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def ratio(a, b):
    if a is None or b in (None, 0):
        return "—"
    return f"{a / b:.2f}"


RUST = [
    ("idle", ["held", "bytes_per_conn"]),
    ("echo_closed_loop", ["msgs_per_s", "p50_us", "p99_us", "p999_us", "max_us"]),
    ("echo_fixed_rate", ["msgs_per_s", "p50_us", "p99_us", "p999_us", "max_us"]),
    ("fanout", ["receivers", "deliveries_per_s", "delivered_ratio", "p50_us", "p99_us"]),
    ("connect", ["connected", "connects_per_s", "handshake_p99_us"]),
    ("churn", ["cycles_per_s", "cycle_p99_us"]),
]
backends = sorted({o["backend"] for o in rows if o["loadgen"] == "rust"}, key=lambda b: b != "embedded")
transports = [t for t in ("ws", "wt") if any(o.get("transport") == t for o in rows)]

print("## rtgate vs raw (rtgate-bench)\n")
print("| scenario | transport | backend | metric | rtgate | raw | rtgate/raw | rtgate server CPU s | raw server CPU s |")
print("|---|---|---|---|---|---|---|---|---|")
for scenario, metrics in RUST:
    for t in transports:
        raw = find("rust", "raw", scenario, "embedded", t)
        for b in backends:
            rt = find("rust", "rtgate", scenario, b, t)
            if rt is None and raw is None:
                continue
            for m in metrics:
                a, r = (rt or {}).get(m), (raw or {}).get(m)
                print(f"| {scenario} | {t} | {b} | {m} | {fmt(a)} | {fmt(r)} | {ratio(a, r)} | "
                      f"{fmt((rt or {}).get('server_cpu_s'))} | {fmt((raw or {}).get('server_cpu_s'))} |")

def vs_socketio_rows(scenario, backend, metrics, servers):
    """Rows of a table whose servers end with Socket.IO: each server's value, rtgate (the
    first) over Socket.IO (the last), and each server's CPU seconds."""
    cpu = " / ".join(fmt(x.get("server_cpu_s")) for x in servers)
    for m in metrics:
        values = " | ".join(fmt(x.get(m)) for x in servers)
        print(f"| {scenario} | {backend} | {m} | {values} | "
              f"{ratio(servers[0].get(m), servers[-1].get(m))} | {cpu} |")


rust_sio = [o for o in rows if o["loadgen"] == "rust" and o.get("target") == "socketio"]
if rust_sio:
    print("\n## rtgate vs Socket.IO 4.8 (rtgate-bench for both, `--protocol socketio`; WebSocket)\n")
    print("| scenario | backend | metric | rtgate | Socket.IO | rtgate/Socket.IO | server CPU s rtgate / Socket.IO |")
    print("|---|---|---|---|---|---|---|")
    for scenario, metrics in RUST:
        for b in backends:
            rt = find("rust", "rtgate", scenario, b, "ws") or {}
            sio = find("rust", "socketio", scenario, b, "ws") or {}
            if sio:
                vs_socketio_rows(scenario, b, metrics, (rt, sio))

NODE = [
    ("connect", ["connects_per_s"]),
    ("echo_closed_loop", ["msgs_per_s", "p50_ms", "p99_ms"]),
    ("fanout", ["receivers", "deliveries_per_s", "p99_ms", "delivered", "expected"]),
    ("idle", ["n", "bytes_per_conn"]),
]
nb = sorted({o["backend"] for o in rows if o["loadgen"] == "node"}, key=lambda b: b != "embedded")
if nb:
    print("\n## rtgate vs raw vs Socket.IO 4.8 (the Socket.IO peer's loadgen.js against all three)\n")
    print("| scenario | backend | metric | rtgate | raw | Socket.IO | rtgate/Socket.IO | server CPU s rtgate / raw / Socket.IO |")
    print("|---|---|---|---|---|---|---|---|")
    for scenario, metrics in NODE:
        for b in nb:
            rt = find("node", "rtgate", scenario, b) or {}
            raw = find("node", "raw", scenario, "embedded") or {}
            sio = find("node", "socketio", scenario, b) or {}
            if rt or sio:
                vs_socketio_rows(scenario, b, metrics, (rt, raw, sio))


def check(name, ok, detail):
    state = "—" if ok is None else ("met" if ok else "NOT met")
    print(f"| {name} | {state} | {detail} |")


def get(o, k):
    return None if o is None else o.get(k)


print("\n## Targets (at the sizes of this run)\n")
print("| target | status | measured |")
print("|---|---|---|")
idle_ws = find("rust", "rtgate", "idle", "embedded", "ws")
idle_wt = find("rust", "rtgate", "idle", "embedded", "wt")
v = get(idle_ws, "bytes_per_conn")
check("idle ≤ 8 KiB RSS per WS connection", None if v is None else v <= 8192, f"{fmt(v)} B/conn over {fmt(get(idle_ws, 'held'))} connections")
v = get(idle_wt, "bytes_per_conn")
check("idle ≤ 32 KiB RSS per WT connection", None if v is None else v <= 32768, f"{fmt(v)} B/conn over {fmt(get(idle_wt, 'held'))} connections")
held = get(idle_ws, "held")
check("100k concurrent WS held", None if held is None else held >= 100_000, f"{fmt(held)} held in this run")
e_rt = get(find("rust", "rtgate", "echo_closed_loop", "embedded", "ws"), "msgs_per_s")
e_raw = get(find("rust", "raw", "echo_closed_loop", "embedded", "ws"), "msgs_per_s")
check("echo ≥ 85 % of raw closed-loop throughput (WS)", None if not (e_rt and e_raw) else e_rt >= 0.85 * e_raw,
      f"{fmt(e_rt)} vs {fmt(e_raw)} msg/s = {ratio(e_rt, e_raw)}")
fr = find("rust", "rtgate", "echo_fixed_rate", "embedded", "ws")
p99 = get(fr, "p99_us")
check("echo p99 ≤ 1 ms at 10k msg/s (WS)", None if p99 is None else p99 <= 1000,
      f"p99 {fmt(p99)} µs at {fmt(get(fr, 'msgs_per_s'))} msg/s")
f_rt = find("rust", "rtgate", "fanout", "embedded", "ws")
f_raw = find("rust", "raw", "fanout", "embedded", "ws")
a, r = get(f_rt, "deliveries_per_s"), get(f_raw, "deliveries_per_s")
check("fanout ≥ 80 % of raw broadcast rate", None if not (a and r) else a >= 0.8 * r,
      f"{fmt(a)} vs {fmt(r)} deliveries/s = {ratio(a, r)} ({fmt(get(f_rt, 'receivers'))} receivers)")
r_sio = find("rust", "socketio", "fanout", "embedded", "ws")
a, s = get(f_rt, "deliveries_per_s"), get(r_sio, "deliveries_per_s")
if s:
    check("fanout ≥ 5× Socket.IO (same Rust loadgen)", None if not (a and s) else a >= 5 * s,
          f"{fmt(a)} vs {fmt(s)} deliveries/s = {ratio(a, s)}× ({fmt(get(f_rt, 'receivers'))} receivers)")
n_rt, n_sio = find("node", "rtgate", "fanout", "embedded"), find("node", "socketio", "fanout", "embedded")
a, s = get(n_rt, "deliveries_per_s"), get(n_sio, "deliveries_per_s")
check("fanout ≥ 5× Socket.IO (same Node loadgen)", None if not (a and s) else a >= 5 * s,
      f"{fmt(a)} vs {fmt(s)} deliveries/s = {ratio(a, s)}× ({fmt(get(n_rt, 'receivers'))} receivers)")
c = get(find("rust", "rtgate", "connect", "redis-pg", "ws"), "connects_per_s")
check("connect ≥ 5,000/s WS with Redis+Postgres", None if c is None else c >= 5000, f"{fmt(c)}/s")
c = get(find("rust", "rtgate", "connect", "embedded", "wt") or find("rust", "rtgate", "connect", "redis-pg", "wt"), "connects_per_s")
check("connect ≥ 1,000/s WT", None if c is None else c >= 1000, f"{fmt(c)}/s")
