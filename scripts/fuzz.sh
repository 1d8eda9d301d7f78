#!/usr/bin/env bash
# Runs every fuzz target (tests/fuzz.rs and tests/rules_fuzz.rs) in release mode, one after the
# other, SECONDS in all shared evenly between the eight targets, and prints per target the
# executions and crashes found.
#   scripts/fuzz.sh 480                       # one minute per target
#   scripts/fuzz.sh 4800                      # the long run: ten minutes per target
#   IOTPIPE_FUZZ_SEED=42 scripts/fuzz.sh 600  # another seed
# A crash fails its target with the first failing input in the output; it then becomes a
# regression test at the end of tests/fuzz.rs.
set -uo pipefail
cd "$(dirname "$0")/.."
total="${1:?usage: scripts/fuzz.sh SECONDS (in all, shared by the eight targets)}"
seconds=$(( total / 8 ))
[ "$seconds" -ge 1 ] || seconds=1
log="$(mktemp)"
trap 'rm -f "$log"' EXIT

echo "== building the fuzz targets (release)"
cargo test --release --locked --no-run --test fuzz --test rules_fuzz -q || exit 1

status=0
for target in fuzz_mqtt_codec fuzz_mqtt_sessions fuzz_amqp_connections fuzz_amqp_username fuzz_config_loader fuzz_api_bodies fuzz_thing_bodies; do
    echo "== $target (${seconds} s)"
    IOTPIPE_FUZZ_SECONDS="$seconds" cargo test --release --locked -q --test fuzz -- \
        --exact "$target" --nocapture --test-threads=1 >"$log" 2>&1 || status=1
    grep -E '^fuzz target|panicked|first failing|first bad' "$log" || { cat "$log"; status=1; }
done
echo "== rules_sql (${seconds} s)"
IOTPIPE_FUZZ_SECONDS="$seconds" cargo test --release --locked -q --test rules_fuzz -- \
    --exact parse_compile_evaluate_never_panics_or_hangs --nocapture --test-threads=1 >"$log" 2>&1 || status=1
grep -E '^fuzz target|panicked' "$log" || { cat "$log"; status=1; }

if [ "$status" -ne 0 ]; then
    echo "== a target failed: see its output above"
fi
exit "$status"
