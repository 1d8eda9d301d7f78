#!/usr/bin/env bash
# Fault tests with figures (issue 17), against the release binary: the tests in tests/faults.rs,
# tests/disk_full.rs and tests/scale_process.rs run in release mode with their long settings, and
# each prints one `FAULTS <name> <json>` line, collected here into one JSON-lines file.
#
#   scripts/faults.sh                 # everything, defaults below
#   PARTS="kill9 outage" scripts/faults.sh
#
# Parts (PARTS, all by default):
#   kill9      CYCLES (50) cycles of: three devices publish QoS 1, SIGKILL at a random moment,
#              restart on the same data directory; then everything is consumed and accounted for
#              (acknowledged, lost: must be 0, duplicated, delivered without PUBACK).
#   outage     OUTAGE_MESSAGES (1,000,000) messages with no consumer, then a drain; the server's
#              VmRSS every second.
#   diskfull   the data directory on a 32 MiB tmpfs that fills up, then space is freed (needs root
#              for mount; the test says so and passes as skipped without it).
#   slow       a slow consumer (50 ms per message) beside two fast ones, SLOW_RATE msgs/s (3,000)
#              for SLOW_SECONDS (10) per phase.
#   devices    DEVICES (10,000) devices that connect and SUBSCRIBE to a server in its own process.
#
# Environment: OUT (faults-results.jsonl in the work directory, printed at the end),
# IOTPIPE_FAULT_SEED (replays the kill moments). Builds into CARGO_TARGET_DIR as cargo does.
set -euo pipefail
cd "$(dirname "$0")/.."

PARTS=${PARTS:-"kill9 outage diskfull slow devices"}
CYCLES=${CYCLES:-50}
OUTAGE_MESSAGES=${OUTAGE_MESSAGES:-1000000}
SLOW_RATE=${SLOW_RATE:-3000}
SLOW_SECONDS=${SLOW_SECONDS:-10}
DEVICES=${DEVICES:-10000}

say() { printf '== %s\n' "$*" >&2; }

work=$(mktemp -d "${TMPDIR:-/var/tmp}/iotpipe-faults.XXXXXX")
OUT=${OUT:-$work/faults-results.jsonl}
: >"$OUT"

say "building the fault tests (release)"
cargo test --release --locked --no-run -q --test faults --test disk_full --test scale_process

# run NAME TEST-FILE TEST-NAME [ENV=VALUE...]: one test, its output kept in the work directory
# and its FAULTS line appended to $OUT.
run() {
    local name=$1 file=$2 test=$3
    shift 3
    local log=$work/$name.log
    say "$name ($file::$test)"
    local status=0
    env "$@" cargo test --release --locked -q --test "$file" -- --exact "$test" --include-ignored \
        --nocapture --test-threads=1 >"$log" 2>&1 || status=$?
    grep '^FAULTS ' "$log" | sed 's/^FAULTS //' >>"$OUT" || true
    grep -E '^FAULTS |^SKIPPED|panicked|^test result' "$log" >&2 || true
    if [ "$status" -ne 0 ]; then
        say "$name failed (exit $status): see $log"
        failed=1
    fi
}

failed=0
for part in $PARTS; do
    case $part in
        kill9) run kill9 faults kill_9_cycles_lose_nothing_acknowledged IOTPIPE_FAULT_CYCLES="$CYCLES" ;;
        outage) run outage faults consumer_outage_memory_stays_bounded IOTPIPE_OUTAGE_MESSAGES="$OUTAGE_MESSAGES" ;;
        diskfull) run diskfull disk_full a_full_disk_refuses_publishes_and_recovers_when_space_is_freed ;;
        slow) run slow faults slow_consumer_beside_fast_ones IOTPIPE_SLOW_RATE="$SLOW_RATE" IOTPIPE_SLOW_SECONDS="$SLOW_SECONDS" ;;
        devices) run devices scale_process ten_thousand_subscribed_devices IOTPIPE_DEVICES="$DEVICES" ;;
        *) say "unknown part $part (kill9 outage diskfull slow devices)"; exit 2 ;;
    esac
done

say "results ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores): $OUT"
cat "$OUT"
exit "$failed"
