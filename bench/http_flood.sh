#!/usr/bin/env bash
# HTTP flood (BENCHMARKS.md, "Memory"): the connector's metrics port under an HTTP/2 flood
# (cleartext, prior knowledge, initial window 0, H2_STREAMS streams per connection each asking
# for /metrics, H2_CONNS connections) and H1_CONNS HTTP/1 connections pipelining /metrics and
# never reading, all at once, while the connector drains a topic a producer keeps filling.
# Reports the connector's RSS before, at its peak during and after the flood against the bound
# (memory budget + 48 MiB), and the latency of /healthz probed every 20 ms over the flood. Real
# processes on loopback: tansu, the release binary, the crate's s3s-fs server. Not a test: the
# bounds are printed, and the exit status says whether they held (within bound, healthz max
# under 100 ms).
#
#   bash bench/http_flood.sh
#   PARTITIONS=300 H2_CONNS=16 bash bench/http_flood.sh
#
# Env: BUDGET (bytes, default 67108864), PARTITIONS (default 300: many series on /metrics),
# RATE (events/s produced during the run, default 5000), SECS (flood length, default 20),
# H2_CONNS (64), H2_STREAMS (200), H1_CONNS (1000), BIN (the connector binary, default the
# release build), BENCH_DIR. Installs what is missing (tests/e2e/lib/common.sh, and `h2` from
# PyPI). Every process started is stopped by its PID; every wait has a deadline.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
E2E="$REPO/tests/e2e/e2e_helpers.py"
H="$REPO/bench/bench_helpers.py"
BUDGET=${BUDGET:-67108864}
PARTITIONS=${PARTITIONS:-300}
RATE=${RATE:-5000}
SECS=${SECS:-20}
H2_CONNS=${H2_CONNS:-64}
H2_STREAMS=${H2_STREAMS:-200}
H1_CONNS=${H1_CONNS:-1000}
DIR=${BENCH_DIR:-$REPO/target/bench}
OUT="$DIR/http-flood"
BIN=${BIN:-$REPO/target/release/kafka-s3-sink}

log() { printf 'http-flood: %s\n' "$*" >&2; }
fail() { log "FAIL: $*"; show_logs "$OUT"; exit 1; }
e2e() { python3 "$E2E" "$@"; }
h() { python3 "$H" "$@"; }
STOP_WAIT_TENTHS=100
# shellcheck source=tests/e2e/lib/common.sh
. "$REPO/tests/e2e/lib/common.sh"
# shellcheck source=bench/lib/common.sh
. "$REPO/bench/lib/common.sh"

install_e2e_tools
python3 -c 'import h2' 2>/dev/null || { log "installing h2"; python3 -m pip install -q "h2==4.3.0"; }
mkdir -p "$OUT"
rm -f "$OUT"/*.json
if [ -z "${SKIP_BUILD:-}" ]; then
  log "building (release)"
  (cd "$REPO" && cargo build --release --quiet --bin kafka-s3-sink --bin kafka-s3-sink-bench)
fi
EVENTS="$OUT/events.ndjson"
COUNT=$((RATE * (SECS + 60)))
"$REPO/target/release/kafka-s3-sink" gen-events --count "$COUNT" --seed 42 --out "$EVENTS"

KAFKA_PORT=$(e2e port)
HTTP_PORT=$(e2e port)
TOPIC="flood-$(date +%s)-$$"
start_tansu "$KAFKA_PORT" "$OUT/tansu.log"
tansu_topic "$KAFKA_PORT" "$TOPIC" "$PARTITIONS" "$OUT/topic.log"
start_s3s "$OUT/s3fs" flood
drain_config "$OUT/sink.toml" "$TOPIC-g" flood
sed -i -e "s/^\[pipeline\]$/[pipeline]\nmemory_budget_bytes = $BUDGET/" "$OUT/sink.toml"

# The producer keeps the topic filling for the whole run (it stops at SIGTERM).
python3 "$E2E" produce-steady "127.0.0.1:$KAFKA_PORT" "$TOPIC" "$EVENTS" "$PARTITIONS" \
  "$OUT/produced.json" "$RATE" "$OUT/stop-producer" $((SECS + 120)) >"$OUT/producer.log" 2>&1 &
PRODUCER_PID=$!
started "$PRODUCER_PID"

NO_COLOR=1 "$BIN" run --config "$OUT/sink.toml" >"$OUT/connector.log" 2>&1 &
SINK_PID=$!
started "$SINK_PID"
log "connector $SINK_PID draining $TOPIC ($PARTITIONS partitions, budget $BUDGET bytes); waiting for records"
consumed() {
  local v
  v=$(python3 "$E2E" metric "http://127.0.0.1:$HTTP_PORT/metrics" kafka_s3_sink_records_consumed_total)
  [ "$v" = none ] && v=0
  echo "$v"
}
for _ in $(seq 600); do
  alive "$SINK_PID" connector
  [ "$(consumed)" -gt 0 ] && break
  sleep 0.1
done
[ "$(consumed)" -gt 0 ] || fail "the connector consumed nothing within 60 s"
sleep 3 # a few seconds of steady draining before the flood
hwm_before=$(awk '/^VmHWM:/{printf "%.1f", $2/1024}' "/proc/$SINK_PID/status")
consumed_before=$(consumed)

log "flood: $H2_CONNS HTTP/2 connections x $H2_STREAMS streams (window 0), $H1_CONNS HTTP/1 connections, $SECS s"
h probe "http://127.0.0.1:$HTTP_PORT/healthz" "$OUT/probe.json" "$SECS" &
PROBE_PID=$!
started "$PROBE_PID"
python3 "$REPO/bench/http_flood.py" 127.0.0.1 "$HTTP_PORT" "$SINK_PID" "$OUT/flood.json" \
  --h2-conns "$H2_CONNS" --h2-streams "$H2_STREAMS" --h1-conns "$H1_CONNS" --secs "$SECS" >/dev/null
wait "$PROBE_PID" || true
forget "$PROBE_PID"
alive "$SINK_PID" connector
consumed_after=$(consumed)
hwm_after=$(awk '/^VmHWM:/{printf "%.1f", $2/1024}' "/proc/$SINK_PID/status")
stopped "$PRODUCER_PID"
stopped "$SINK_PID"

python3 - "$OUT" "$BUDGET" "$hwm_before" "$hwm_after" "$consumed_before" "$consumed_after" "$PARTITIONS" <<'EOF'
import json, sys
out, budget = sys.argv[1], int(sys.argv[2])
hwm_before, hwm_after = float(sys.argv[3]), float(sys.argv[4])
c0, c1, parts = int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7])
f = json.load(open(f"{out}/flood.json"))
p = json.load(open(f"{out}/probe.json"))
bound = budget / 2**20 + 48
res = {**f, "partitions": parts, "budget_mib": budget / 2**20, "bound_mib": bound,
       "peak_rss_before_flood_mib": hwm_before, "peak_rss_whole_run_mib": hwm_after,
       "records_consumed_during_flood": c1 - c0, "healthz": p,
       "within_bound": hwm_after <= bound,
       "healthz_under_100ms": p["max_ms"] is not None and p["max_ms"] < 100 and p["failed"] == 0}
json.dump(res, open(f"{out}/result.json", "w"))
print("| budget | partitions | flood | records consumed during it | RSS before → peak → after MiB | process peak MiB (bound) | /healthz p50 / p99 / max ms (failed) |")
print("| --- | --- | --- | --- | --- | --- | --- |")
print(f"| {budget / 2**20:.0f} MiB | {parts} | HTTP/2 {f['h2_conns']} conn x {f['h2_streams']} streams "
      f"({f['h2_connections']} opened, {f['h2_responses']} answers), HTTP/1 {f['h1_conns']} conn "
      f"({f['h1_connections']} opened, {f['h1_requests']} requests sent), {f['flood_secs']} s | {c1 - c0} | "
      f"{f['rss_before_mib']} → {f['rss_peak_mib']} → {f['rss_after_mib']} | {hwm_after} ({bound:.0f}) | "
      f"{p['p50_ms']} / {p['p99_ms']} / {p['max_ms']} ({p['failed']}) |")
sys.exit(0 if res["within_bound"] and res["healthz_under_100ms"] else 3)
EOF
