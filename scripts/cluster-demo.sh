#!/usr/bin/env bash
# Three nats-server processes (one JetStream cluster, fsync on every write) and three iotpipe
# nodes on loopback, in one command. Prints the ports and demo credentials; Ctrl-C stops
# everything. docs/cluster.md explains what runs.
#
#   scripts/cluster-demo.sh                 # state in ./cluster-demo (kept between runs)
#   CLUSTER_DIR=/tmp/c scripts/cluster-demo.sh
#   IOTPIPE=target/release/iotpipe scripts/cluster-demo.sh   # an iotpipe already built
#
# Ports: NATS 4222-4224 (routes 6222-6224), MQTT 1883-1885, AMQP 5672-5674, HTTP 8080-8082.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
dir=$(realpath -m "${CLUSTER_DIR:-cluster-demo}")
name=iotpipe

# nats-server: the pinned wheel (version and sha256 in scripts/requirements/nats-server.txt).
if ! nats-server --version 2>/dev/null | grep -q 'v2.15.1'; then
  echo "== installing nats-server 2.15.1 (pinned wheel)"
  python3 -m pip install -q --require-hashes --only-binary :all: -r scripts/requirements/nats-server.txt
fi

if [[ -z "${IOTPIPE:-}" ]]; then
  echo "== cargo build --release"
  cargo build --release -q
  IOTPIPE=${CARGO_TARGET_DIR:-$root/target}/release/iotpipe
fi

mkdir -p "$dir"
pids=()
stop() {
  trap - INT TERM EXIT
  echo
  echo "== stopping"
  # iotpipe first (they drain to NATS), then the NATS servers.
  for pid in "${pids[@]:3}" ; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]:3}" ; do wait "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]:0:3}" ; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  echo "state kept in $dir (delete it for a fresh start)"
}
trap stop INT TERM EXIT

# The API token: random on the first run, the same for the three nodes, kept in the state dir.
if [[ ! -s "$dir/admin_token" ]]; then
  (umask 077; od -An -tx1 -N16 /dev/urandom | tr -d ' \n' > "$dir/admin_token")
fi
token=$(cat "$dir/admin_token")

routes='"nats-route://127.0.0.1:6222", "nats-route://127.0.0.1:6223", "nats-route://127.0.0.1:6224"'
for i in 1 2 3; do
  mkdir -p "$dir/nats-$i"
  cat > "$dir/nats-$i.conf" <<EOF
server_name: nats-$i
listen: 127.0.0.1:$((4221 + i))
jetstream { store_dir: "$dir/nats-$i", sync_interval: always }
cluster { name: $name, listen: 127.0.0.1:$((6221 + i)), routes: [$routes] }
EOF
  nats-server -c "$dir/nats-$i.conf" 2>> "$dir/nats-$i.log" &
  pids+=($!)
done

for i in 1 2 3; do
  mkdir -p "$dir/node-$i"
  # The embedded demo configuration with this node's ports, data directory and [cluster].
  sed -e "s|0.0.0.0:1883|127.0.0.1:$((1882 + i))|" \
      -e "s|0.0.0.0:5672|127.0.0.1:$((5671 + i))|" \
      -e "s|127.0.0.1:8080|127.0.0.1:$((8079 + i))\"\nadmin_token = \"$token|" \
      -e "s|^dir = \"data\"|dir = \"$dir/node-$i\"|" \
      -e "s|^rules_dir = \"rules\"|rules_dir = \"$root/rules\"|" \
      src/config/demo.toml > "$dir/node-$i.toml"
  cat >> "$dir/node-$i.toml" <<EOF

[cluster]
nats = ["nats://127.0.0.1:4222", "nats://127.0.0.1:4223", "nats://127.0.0.1:4224"]
name = "$name"
replicas = 3
node = "n$i"
EOF
done

for i in 1 2 3; do
  for _ in $(seq 100); do grep -q 'Server is ready' "$dir/nats-$i.log" 2>/dev/null && break; sleep 0.2; done
done
# The servers elect a JetStream meta leader within a few seconds; the nodes wait for it (up to
# 30 s), so they can start now.
for i in 1 2 3; do
  "$IOTPIPE" serve --config "$dir/node-$i.toml" > "$dir/node-$i.out" 2>> "$dir/node-$i.log" &
  pids+=($!)
done
for i in 1 2 3; do
  for _ in $(seq 100); do
    grep -q '^  HTTP' "$dir/node-$i.out" 2>/dev/null && break
    if ! kill -0 "${pids[$((2 + i))]}" 2>/dev/null; then
      echo "node $i did not start; its log ($dir/node-$i.log) ends:" >&2
      tail -5 "$dir/node-$i.log" >&2
      exit 1
    fi
    sleep 0.2
  done
done

cat <<EOF

iotpipe cluster on loopback: three NATS servers (replicas 3, sync_interval always), three nodes.
  node    MQTT             AMQP             HTTP API
EOF
for i in 1 2 3; do
  printf '  n%s      127.0.0.1:%s   127.0.0.1:%s   http://127.0.0.1:%s\n' "$i" $((1882 + i)) $((5671 + i)) $((8079 + i))
done
echo "  NATS    nats://127.0.0.1:4222,4223,4224 (stream ${name}_queues)"
echo "  API token $token (all nodes; kept in $dir/admin_token)"
echo "  AMQP access key: id LTAIdemo secret demo-secret"
for dev in dev1 dev2; do
  eval "$("$IOTPIPE" device sign --product-key a1demo --device-name "$dev" --device-secret "$dev-secret" --format env)"
  echo "  device a1demo/$dev on n1: mosquitto_pub -p 1883 -i '$MQTT_CLIENT_ID' -u '$MQTT_USERNAME' -P '$MQTT_PASSWORD' -q 1 -t '/a1demo/$dev/user/update' -m '{\"temperature\":40}'"
done
cat <<EOF
  consume from any node, e.g. n2: iotpipe amqp sign ... or any AMQP 1.0 client on 127.0.0.1:5673
  logs: $dir/node-N.log, $dir/nats-N.log
Ctrl-C stops everything.
EOF
wait -n "${pids[@]}" || true
echo "a process exited; see the logs in $dir" >&2
