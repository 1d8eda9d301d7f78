#!/usr/bin/env bash
# Benchmarks iotpipe beside RabbitMQ (MQTT in, a durable queue bound on amq.topic, AMQP 1.0 out),
# Mosquitto (MQTT pass-through) and nats-server (MQTT in, QoS 1 messages stored in JetStream with
# an fsync per write, QoS 1 MQTT subscribers out), all on loopback on this machine, in one run: every scenario
# runs against each system in turn, for several rounds, so that a noisy neighbour hits all of
# them alike. Writes docs/benchmarks.md (keeping its hand-written sections, between the markers
# "hand-written sections" and "end of hand-written sections") and docs/benchmarks.svg.
#
#   scripts/bench-peers.sh            # Debian/Ubuntu; installs rabbitmq-server and mosquitto;
#                                     # nats-server comes from scripts/test-deps.sh
#   QUICK=1 PROFILE=0 OUT=/tmp/b.md scripts/bench-peers.sh   # one short round: a check of the script
#
# Environment: ROUNDS (3), SECONDS_PER_RUN (8), WARMUP (2), DEVICES (20), CONSUMERS (2),
# STEADY_RATE (20000: the steady-rate scenario, msgs/s offered), IDLE_DEVICES (10000),
# IDLE_DEVICES_MAX (18000: iotpipe's idle run near the 20,000 open files a process may hold here),
# BACKLOG (100000), PROFILE (1: record a perf profile of iotpipe's rule path at full speed, if perf
# works), KEEP (1: keep the work directory with the raw results and logs), QUICK (1: one round of
# 3 s runs, 1,000 and 2,000 idle devices, a 20,000-message backlog), OUT (docs/benchmarks.md:
# where the report goes; its chart goes beside it as .svg), PEERS ("rabbitmq mosquitto nats": the
# peers measured beside iotpipe), IOTPIPE_OPTIONS (extra `iotpipe bench` options for the iotpipe
# it starts, e.g. "--early-delivery"; named in the report).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${QUICK:-0}" = 1 ]; then
  ROUNDS=${ROUNDS:-1} SECONDS_PER_RUN=${SECONDS_PER_RUN:-3} WARMUP=${WARMUP:-1}
  IDLE_DEVICES=${IDLE_DEVICES:-1000} IDLE_DEVICES_MAX=${IDLE_DEVICES_MAX:-2000} BACKLOG=${BACKLOG:-20000}
fi
ROUNDS=${ROUNDS:-3}
SECS=${SECONDS_PER_RUN:-8}
WARMUP=${WARMUP:-2}
DEVICES=${DEVICES:-20}
CONSUMERS=${CONSUMERS:-2}
STEADY_RATE=${STEADY_RATE:-20000}
IDLE_DEVICES=${IDLE_DEVICES:-10000}
IDLE_DEVICES_MAX=${IDLE_DEVICES_MAX:-18000}
BACKLOG=${BACKLOG:-100000}
PROFILE=${PROFILE:-1}
OUT=${OUT:-docs/benchmarks.md}
PEERS=${PEERS:-rabbitmq mosquitto nats}
peer() { case " $PEERS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
# Loopback ports of our own broker instances, away from the defaults so that a broker already
# running on this machine is left alone.
RABBIT_AMQP=5673
RABBIT_MQTT=1884
MOSQUITTO_MQTT=1885
NATS_CLIENT=4223
NATS_MQTT=1886

say() { printf '== %s\n' "$*" >&2; }

# The broker's data sits on the same disk as iotpipe's, so fsync costs them the same.
work=$(mktemp -d "${TMPDIR:-/var/tmp}/iotpipe-bench.XXXXXX")
results=$work/results.jsonl
commands=$work/commands.txt
: >"$results"
: >"$commands"

# ---------------------------------------------------------------------------------------------
say "installing the peers (rabbitmq-server, mosquitto) where missing"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
need=()
peer rabbitmq && { [ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || need+=(rabbitmq-server); }
peer mosquitto && { command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto); }
if [ "$PROFILE" = 1 ] && ! command -v perf >/dev/null 2>&1; then need+=(linux-perf); fi
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  # A policy-rc.d or a missing init system may refuse to start the packaged services: fine, we
  # start our own instances below.
  $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
fi
MOSQUITTO_BIN=$(command -v mosquitto || echo /usr/sbin/mosquitto)
NATS_BIN=$(command -v nats-server || true)
if peer nats && [ -z "$NATS_BIN" ]; then
  say "nats-server is missing: installing its pinned wheel (as scripts/test-deps.sh does)"
  python3 -m pip install -q --require-hashes --only-binary :all: -r scripts/requirements/nats-server.txt >&2
  NATS_BIN=$(command -v nats-server)
fi

# Many idle connections need many descriptors, in the brokers as in the load tool.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
[ "$(ulimit -n)" -ge $((IDLE_DEVICES_MAX + 1024)) ] ||
  say "warning: open-file limit $(ulimit -n) is below the idle scenario's $IDLE_DEVICES_MAX connections"

say "building iotpipe (release) and the report generator"
cargo build --release --quiet --bin iotpipe
cargo build --release --quiet --example bench_report
TARGET=${CARGO_TARGET_DIR:-target}
IOTPIPE=$TARGET/release/iotpipe

# ---------------------------------------------------------------------------------------------
# RabbitMQ: a node of our own under $work, as the invoking user, on loopback ports.
rabbit_version=$(dpkg-query -W -f '${Version}' rabbitmq-server 2>/dev/null | sed 's/-.*//')
rabbit_major=${rabbit_version%%.*}
rdir=$work/rabbitmq
mkdir -p "$rdir"
if [ "${rabbit_major:-0}" -ge 4 ]; then
  # AMQP 1.0 is built in since 4.0; queues are addressed as /queues/NAME.
  echo '[rabbitmq_mqtt].' >"$rdir/enabled_plugins"
  RABBIT_SOURCE=/queues/bench
else
  echo '[rabbitmq_mqtt,rabbitmq_amqp1_0].' >"$rdir/enabled_plugins"
  RABBIT_SOURCE=/amq/queue/bench
fi
cat >"$rdir/rabbitmq.conf" <<EOF
listeners.tcp.default = 127.0.0.1:$RABBIT_AMQP
mqtt.listeners.tcp.default = 127.0.0.1:$RABBIT_MQTT
mqtt.allow_anonymous = false
mqtt.vhost = /
mqtt.exchange = amq.topic
log.file.level = warning
log.console = false
EOF
# The queue the devices' messages go to: durable, bound on amq.topic with the devices' topic
# pattern (/a1bench/+/user/update arrives as routing key .a1bench.DEVICE.user.update).
cat >"$rdir/definitions.json" <<'EOF'
{"queues": [{"name": "bench", "vhost": "/", "durable": true, "auto_delete": false, "arguments": {}}],
 "bindings": [{"source": "amq.topic", "vhost": "/", "destination": "bench", "destination_type": "queue",
               "routing_key": ".a1bench.*.user.update", "arguments": {}}]}
EOF
rabbit_env() {
  export RABBITMQ_NODENAME=iotpipe_bench@localhost RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
  export RABBITMQ_NODE_PORT=$RABBIT_AMQP RABBITMQ_DIST_PORT=$((RABBIT_AMQP + 20000))
  export RABBITMQ_MNESIA_BASE=$rdir/mnesia RABBITMQ_LOG_BASE=$rdir/log
  export RABBITMQ_CONFIG_FILE=$rdir/rabbitmq.conf RABBITMQ_ENABLED_PLUGINS_FILE=$rdir/enabled_plugins
  export RABBITMQ_PLUGINS_EXPAND_DIR=$rdir/plugins-expand RABBITMQ_PID_FILE=$rdir/rabbitmq.pid
  export RABBITMQ_ADVANCED_CONFIG_FILE=$rdir/advanced.config
  export HOME=$rdir # the Erlang cookie of this node and of rabbitmqctl
}
rmqctl() { (rabbit_env && /usr/lib/rabbitmq/bin/rabbitmqctl -q "$@"); }

cat >"$work/mosquitto.conf" <<EOF
listener $MOSQUITTO_MQTT 127.0.0.1
allow_anonymous true
persistence false
# A subscriber may have 1,000 QoS 1 messages in flight (like iotpipe's AMQP credit) and nothing
# is dropped while it falls behind: no queue limit.
max_inflight_messages 1000
max_queued_messages 0
log_dest stderr
log_type error
log_type warning
EOF

# nats-server: MQTT needs JetStream and a server name; every write to a stream is fsynced
# (sync_interval: always), as iotpipe commits before its PUBACK. MQTT QoS 1 messages go to the
# $MQTT_msgs stream and reach the QoS 1 subscribers through JetStream consumers.
ndir=$work/nats
cat >"$work/nats.conf" <<EOF
server_name: iotpipe_bench
listen: 127.0.0.1:$NATS_CLIENT
jetstream {
  store_dir: "$ndir"
  sync_interval: always
}
mqtt {
  listen: 127.0.0.1:$NATS_MQTT
  max_ack_pending: 1000
}
EOF

RABBIT_SHELL="" RABBIT_PID="" MOSQUITTO_PID="" NATS_PID=""
# A fresh RabbitMQ node (empty database), with the bench queue and its binding.
start_rabbit() {
  rm -rf "$rdir/mnesia"
  (rabbit_env && exec /usr/lib/rabbitmq/bin/rabbitmq-server) >>"$rdir/server.log" 2>&1 &
  RABBIT_SHELL=$!
  # await_startup needs the node to exist already: poll until it answers, then wait for the boot.
  for i in $(seq 120); do
    rmqctl await_startup --timeout 120 >/dev/null 2>&1 && break
    if [ "$i" = 120 ] || ! kill -0 "$RABBIT_SHELL" 2>/dev/null; then
      say "RabbitMQ did not start; its log:"
      tail -30 "$rdir/server.log" >&2
      exit 1
    fi
    sleep 1
  done
  rmqctl import_definitions "$rdir/definitions.json" >/dev/null
  RABBIT_PID=$(rmqctl eval 'list_to_integer(os:getpid()).')
}
stop_rabbit() {
  [ -n "$RABBIT_SHELL" ] || return 0
  rmqctl stop >/dev/null 2>&1 || kill "$RABBIT_SHELL" 2>/dev/null || true
  wait "$RABBIT_SHELL" 2>/dev/null || true
  RABBIT_SHELL=""
}
start_mosquitto() {
  "$MOSQUITTO_BIN" -c "$work/mosquitto.conf" 2>>"$work/mosquitto.log" &
  MOSQUITTO_PID=$!
  for _ in $(seq 50); do
    (exec 3<>"/dev/tcp/127.0.0.1/$MOSQUITTO_MQTT") 2>/dev/null && return
    sleep 0.1
  done
  say "Mosquitto did not start: $(tail -3 "$work/mosquitto.log")"
  exit 1
}
stop_mosquitto() {
  [ -n "$MOSQUITTO_PID" ] || return 0
  kill "$MOSQUITTO_PID" 2>/dev/null || true
  wait "$MOSQUITTO_PID" 2>/dev/null || true
  MOSQUITTO_PID=""
}
# A fresh nats-server (empty JetStream directory).
start_nats() {
  rm -rf "$ndir"
  "$NATS_BIN" -c "$work/nats.conf" >>"$work/nats.log" 2>&1 &
  NATS_PID=$!
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$NATS_MQTT") 2>/dev/null && return
    sleep 0.1
  done
  say "nats-server did not start: $(tail -3 "$work/nats.log")"
  exit 1
}
stop_nats() {
  [ -n "$NATS_PID" ] || return 0
  kill "$NATS_PID" 2>/dev/null || true
  wait "$NATS_PID" 2>/dev/null || true
  NATS_PID=""
}
cleanup() {
  set +e
  stop_rabbit
  stop_mosquitto
  stop_nats
  if [ "${KEEP:-0}" = 1 ]; then say "raw results and logs kept in $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

if peer rabbitmq; then
  say "starting RabbitMQ $rabbit_version on 127.0.0.1 (MQTT $RABBIT_MQTT, AMQP $RABBIT_AMQP)"
  start_rabbit
fi
mosquitto_version="" nats_version=""
if peer mosquitto; then
  mosquitto_version=$("$MOSQUITTO_BIN" -h 2>/dev/null | head -1 | awk '{print $3}' || true)
  say "starting Mosquitto $mosquitto_version on 127.0.0.1:$MOSQUITTO_MQTT"
  start_mosquitto
fi
if peer nats; then
  nats_version=$("$NATS_BIN" --version 2>/dev/null | awk '{print $2}' | sed 's/^v//' || true)
  say "starting nats-server $nats_version on 127.0.0.1 (MQTT $NATS_MQTT, JetStream in $ndir)"
  start_nats
fi

# ---------------------------------------------------------------------------------------------
# One run: SYSTEM SCENARIO [extra bench options]; the JSON line goes to $results.
common=(--consumers "$CONSUMERS" --seconds "$SECS" --warmup "$WARMUP" --backlog "$BACKLOG" --json)
run() {
  local system=$1 scenario=$2
  shift 2
  local args=(bench --scenario "$scenario" "${common[@]}")
  # The idle runs give their own --devices (connections); the others publish from $DEVICES.
  case " $* " in *" --devices "*) ;; *) args+=(--devices "$DEVICES") ;; esac
  case $system in
    iotpipe)
      case " $* " in *" --label "*) ;; *) args+=(--label iotpipe) ;; esac
      args+=(--data-dir "$work")
      # shellcheck disable=SC2206 # options are words
      args+=(${IOTPIPE_OPTIONS:-})
      ;;
    rabbitmq)
      rmqctl purge_queue bench >/dev/null
      args+=(--target rabbitmq --label rabbitmq --mqtt "127.0.0.1:$RABBIT_MQTT" --amqp "127.0.0.1:$RABBIT_AMQP"
        --source "$RABBIT_SOURCE" --server-pid "$RABBIT_PID")
      ;;
    mosquitto)
      args+=(--target mosquitto --label mosquitto --mqtt "127.0.0.1:$MOSQUITTO_MQTT" --server-pid "$MOSQUITTO_PID")
      ;;
    nats)
      args+=(--target nats --label nats --mqtt "127.0.0.1:$NATS_MQTT" --server-pid "$NATS_PID")
      ;;
  esac
  args+=("$@")
  echo "iotpipe ${args[*]}" | sed -e "s#$work#\$WORK#g" -e 's#--server-pid [0-9]*#--server-pid $PID#' >>"$commands"
  say "round $round: $system $scenario $*"
  local line
  if line=$("$IOTPIPE" "${args[@]}"); then
    echo "$line" | sed "s/^{/{\"round\":$round,/" >>"$results"
  else
    say "FAILED: $system $scenario (round $round); the report shows the gap"
  fi
  sleep 1
}

# Systems take turns: each round starts with a different one.
systems=(iotpipe)
for p in rabbitmq mosquitto nats; do peer "$p" && systems+=("$p"); done
for round in $(seq "$ROUNDS"); do
  k=$(((round - 1) % ${#systems[@]}))
  order=("${systems[@]:$k}" "${systems[@]:0:$k}")
  for s in "${order[@]}"; do
    case $s in
      iotpipe) for sc in subscription rule both rules-1000; do run iotpipe $sc; done ;;
      *) run "$s" subscription ;;
    esac
  done
  for s in "${order[@]}"; do
    case $s in
      iotpipe) for sc in subscription rule; do run iotpipe $sc --rate 5000; done ;;
      *) run "$s" subscription --rate 5000 ;;
    esac
  done
  # The steady rate: below every stored path's ceiling, so that each message is stored,
  # delivered and settled once and the CPU per message compares like for like.
  for s in "${order[@]}"; do
    case $s in
      iotpipe) run iotpipe rule --rate "$STEADY_RATE" ;;
      *) run "$s" subscription --rate "$STEADY_RATE" ;;
    esac
  done
  # Over MQTT, Mosquitto and nats-server keep nothing for consumers that are not there.
  for s in "${order[@]}"; do
    case $s in mosquitto | nats) ;; *) run "$s" backlog ;; esac
  done
done
# The idle runs come last, so that the memory of 10,000 connections does not show in the peak RSS
# of the other runs.
for round in $(seq "$ROUNDS"); do
  k=$(((round - 1) % ${#systems[@]}))
  order=("${systems[@]:$k}" "${systems[@]:0:$k}")
  for s in "${order[@]}"; do
    # A broker keeps the memory of closed connections (and of earlier runs) allocated, and a new
    # connection reuses it: each idle run gets a freshly started broker.
    case $s in
      rabbitmq) stop_rabbit && start_rabbit ;;
      mosquitto) stop_mosquitto && start_mosquitto ;;
      nats) stop_nats && start_nats ;;
    esac
    run "$s" idle --devices "$IDLE_DEVICES"
    # iotpipe again near the open-file limit: the cost per connection must stay flat.
    if [ "$s" = iotpipe ]; then run iotpipe idle --devices "$IDLE_DEVICES_MAX" --label iotpipe-max; fi
  done
done

# ---------------------------------------------------------------------------------------------
# Where iotpipe's time goes: the server on the rule path at a steady 20,000 msgs/s (below its
# ceiling, so every message is stored, delivered and settled once): a CPU profile and its system
# calls. Both need perf and permission to observe the process (root, or perf_event_paranoid <= 1).
profile=$work/profile.txt
: >"$profile"
PROFILE_RATE=20000
if [ "$PROFILE" = 1 ] && command -v perf >/dev/null 2>&1; then
  say "profiling iotpipe's rule path at $PROFILE_RATE msgs/s (perf record, perf stat)"
  # shellcheck disable=SC2086 # options are words
  "$IOTPIPE" bench ${IOTPIPE_OPTIONS:-} --scenario rule --rate "$PROFILE_RATE" --devices "$DEVICES" --consumers "$CONSUMERS" \
    --warmup 3 --seconds 12 --data-dir "$work" --json >"$work/profile-run.json" &
  bench=$!
  echo "iotpipe bench ${IOTPIPE_OPTIONS:+$IOTPIPE_OPTIONS }--scenario rule --rate $PROFILE_RATE --devices $DEVICES --consumers $CONSUMERS --warmup 3 --seconds 12 --data-dir \$WORK --json   # profiled" >>"$commands"
  pid=""
  for _ in $(seq 100); do
    pid=$(pgrep -n -f "$work/iotpipe-bench-.*/bench.toml" || true)
    [ -n "$pid" ] && break
    sleep 0.1
  done
  if [ -n "$pid" ]; then
    sleep 3
    perf record -q -F 999 -e cpu-clock -g -p "$pid" -o "$work/perf.data" -- sleep 6 >/dev/null 2>&1 || true
    perf stat -x, -e 'syscalls:sys_enter_writev,syscalls:sys_enter_sendto,syscalls:sys_enter_recvfrom,syscalls:sys_enter_pwrite64,syscalls:sys_enter_fdatasync,syscalls:sys_enter_futex,syscalls:sys_enter_epoll_wait' \
      -p "$pid" -o "$work/syscalls.csv" -- sleep 4 >/dev/null 2>&1 || true
  fi
  wait "$bench" || true
  if [ -s "$work/perf.data" ]; then
    {
      echo "# CPU samples by binary"
      perf report -q -i "$work/perf.data" --no-children --stdio --sort dso -g none 2>/dev/null |
        sed 's/[[:space:]-]*$//' | grep -v '^$' | head -8
      echo
      echo "# Functions above 0.8 % of the samples"
      perf report -q -i "$work/perf.data" --no-children --stdio --sort dso,symbol -g none --percent-limit 0.8 \
        2>/dev/null | sed 's/[[:space:]-]*$//' | grep -v '^$' | head -30
      if [ -s "$work/syscalls.csv" ]; then
        echo
        echo "# System calls in 4 s at $PROFILE_RATE msgs/s, and per message"
        grep -v '^#' "$work/syscalls.csv" | grep -v '^$' |
          awk -F, -v n=$((PROFILE_RATE * 4)) '$1 ~ /^[0-9]+$/ {sub("syscalls:sys_enter_", "", $3); printf "%10d  %-12s %.2f per message\n", $1, $3, $1 / n}'
      fi
    } >"$profile"
  fi
fi

# ---------------------------------------------------------------------------------------------
say "writing docs/benchmarks.md and docs/benchmarks.svg"
cat >"$work/meta.json" <<EOF
{"date": "$(date -u +%Y-%m-%dT%H:%MZ)",
 "iotpipe_options": "${IOTPIPE_OPTIONS:-}",
 "rounds": $ROUNDS, "seconds": $SECS, "warmup": $WARMUP, "devices": $DEVICES, "consumers": $CONSUMERS,
 "iotpipe": "$("$IOTPIPE" --version | awk '{print $2}') ($(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ', uncommitted changes'))",
 "rabbitmq": "$rabbit_version", "rabbitmq_source": "$RABBIT_SOURCE",
 "mosquitto": "$mosquitto_version",
 "nats": "$nats_version",
 "nproc": $(nproc),
 "cpu": "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')",
 "memory": "$(free -h | awk '/^Mem:/{print $2}')",
 "kernel": "$(uname -sr)",
 "os": "$(. /etc/os-release && echo "$PRETTY_NAME")"}
EOF
cp "$rdir/rabbitmq.conf" "$work/rabbitmq.conf"
cp "$rdir/definitions.json" "$work/definitions.json"
"$TARGET/release/examples/bench_report" "$work" "$OUT" "${OUT%.md}.svg"
say "done: $OUT"
