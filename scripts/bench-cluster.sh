#!/usr/bin/env bash
# The cluster figures of docs/cluster.md: `iotpipe bench` against
#   1. one node on the embedded store,
#   2. one node on one JetStream server (replicas 1),
#   3. three nodes on three JetStream servers (replicas 3),
# each at full speed (throughput) and at a fixed rate (PUBACK and consumer latency); then
#   4. the failover gap: three nodes at the fixed rate while the queue stream's leader is killed
#      (SIGKILL) and restarted; the longest PUBACK wait and the consumer latency's tail show it.
# Every nats-server runs with `sync_interval: always` (each PubAck after an fsync on a quorum).
#
#   scripts/bench-cluster.sh                   # prints a markdown table
#   SECONDS_EACH=20 RATE=2000 OUT=/tmp/cluster.md scripts/bench-cluster.sh
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${SECONDS_EACH:-15}
rate=${RATE:-1000}
devices=${DEVICES:-20}
consumers=${CONSUMERS:-3}
scenario=${SCENARIO:-subscription}
out=${OUT:-/dev/stdout}

nats-server --version 2>/dev/null | grep -q 'v2.15.1' ||
  python3 -m pip install -q --require-hashes --only-binary :all: -r scripts/requirements/nats-server.txt
cargo build --release -q
bin=${CARGO_TARGET_DIR:-$PWD/target}/release/iotpipe
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# free_port: a port nothing listens on now.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# nats_start N: N servers in one JetStream cluster (or one alone); sets urls and monitors.
nats_start() {
  local n=$1 i routes=() ports=() rports=() mports=()
  for ((i = 0; i < n; i++)); do ports+=("$(free_port)"); rports+=("$(free_port)"); mports+=("$(free_port)"); done
  for ((i = 0; i < n; i++)); do routes+=("\"nats-route://127.0.0.1:${rports[$i]}\""); done
  urls="" monitors=()
  for ((i = 0; i < n; i++)); do
    local d="$work/nats-$n-$i"
    mkdir -p "$d"
    {
      echo "server_name: s$i"
      echo "listen: 127.0.0.1:${ports[$i]}"
      echo "http: 127.0.0.1:${mports[$i]}"
      echo "jetstream { store_dir: \"$d\", sync_interval: always }"
      if ((n > 1)); then
        echo "cluster { name: bench, listen: 127.0.0.1:${rports[$i]}, routes: [$(IFS=,; echo "${routes[*]}")] }"
      fi
    } > "$d.conf"
    nats-server -c "$d.conf" 2> "$d.log" &
    pids+=($!)
    nats_pid[$i]=$!
    nats_conf[$i]="$d.conf"
    urls+="${urls:+,}nats://127.0.0.1:${ports[$i]}"
    monitors+=("127.0.0.1:${mports[$i]}")
  done
  for m in "${monitors[@]}"; do
    for _ in $(seq 100); do curl -sf "http://$m/healthz?js-enabled-only=true" > /dev/null && break; sleep 0.2; done
  done
}

nats_stop() {
  for p in "${nats_pid[@]}"; do kill -TERM "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  nats_pid=()
}

# The server name of the queue stream's leader, from any server's monitoring port.
stream_leader() {
  for m in "${monitors[@]}"; do
    curl -sf "http://$m/jsz?accounts=true&streams=true" 2>/dev/null | python3 -c '
import json, sys
d = json.load(sys.stdin)
for a in d.get("account_details", []):
    for s in a.get("stream_detail", []):
        if s["name"].endswith("_queues") and s.get("cluster", {}).get("leader"):
            print(s["cluster"]["leader"]); sys.exit(0)
sys.exit(1)' && return 0
  done
  return 1
}

bench() { "$bin" bench --scenario "$scenario" --devices "$devices" --consumers "$consumers" --warmup 3 --json "$@"; }

row() { # label, json
  python3 - "$1" "$2" <<'EOF'
import json, sys
label, r = sys.argv[1], json.loads(sys.argv[2])
lat, pub, srv = r.get("latency") or {}, r.get("puback_latency") or {}, r.get("server") or {}
f = lambda d, k: "%.2f" % d[k] if k in d else "-"
rate = "full speed" if not r["offered_rate"] else "%d/s" % r["offered_rate"]
print("| %s | %s | %d | %d | %s / %s / %s | %s / %s / %s | %s |" % (
    label, rate, r["published_per_sec"], r["consumed_per_sec"],
    f(pub, "p50_ms"), f(pub, "p99_ms"), f(pub, "max_ms"),
    f(lat, "p50_ms"), f(lat, "p99_ms"), f(lat, "max_ms"),
    "%.1f" % srv["cpu_us_per_msg"] if srv else "-"))
EOF
}

{
  echo "| setup | offered | PUBACKed msgs/s | consumed msgs/s | PUBACK p50 / p99 / max ms | consumer p50 / p99 / max ms | iotpipe CPU µs/msg |"
  echo "|---|---|---|---|---|---|---|"
} > "$work/table"

for r in 0 "$rate"; do
  row "1 node, embedded store" "$(bench --rate "$r" --seconds "$seconds")" >> "$work/table"
done

nats_start 1
for r in 0 "$rate"; do
  row "1 node, 1 JetStream server (R1)" \
    "$(bench --rate "$r" --seconds "$seconds" --cluster-nats "$urls" --nodes 1 --replicas 1)" >> "$work/table"
done
nats_stop

nats_start 3
for r in 0 "$rate"; do
  row "3 nodes, 3 JetStream servers (R3)" \
    "$(bench --rate "$r" --seconds "$seconds" --cluster-nats "$urls" --nodes 3 --replicas 3)" >> "$work/table"
done

# Failover: kill the stream leader a third of the way into a fixed-rate run, restart it 5 s later.
long=$((seconds * 2))
bench --rate "$rate" --seconds "$long" --cluster-nats "$urls" --nodes 3 --replicas 3 > "$work/failover.json" &
bench_pid=$!
sleep $((3 + long / 3))
leader=$(stream_leader || echo "")
if [[ -n "$leader" ]]; then
  i=${leader#s}
  kill -9 "${nats_pid[$i]}"
  killed_at=$(date +%s.%N)
  sleep 5
  nats-server -c "${nats_conf[$i]}" 2>> "$work/restart.log" &
  pids+=($!)
  nats_pid[$i]=$!
  echo "failover: killed stream leader $leader, restarted after 5 s" >&2
else
  echo "failover: no stream leader found; nothing killed" >&2
fi
wait "$bench_pid"
row "3 nodes R3, stream leader killed" "$(cat "$work/failover.json")" >> "$work/table"
nats_stop

{
  echo "Cluster figures: $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $(git rev-parse --short HEAD), scenario $scenario,"
  echo "$devices devices, $consumers consumers, $seconds s measured each (failover run $long s)."
  echo
  cat "$work/table"
} > "$out"
