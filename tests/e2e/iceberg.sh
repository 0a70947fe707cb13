#!/usr/bin/env bash
# End-to-end: the Iceberg table destination with real clients. A tansu broker and moto_server on
# loopback ports picked at run time; the connector appends Parquet files to an Iceberg table
# (catalog `sql` on a sqlite file in the work dir, warehouse s3://<bucket>/warehouse on moto)
# partitioned by the hour of `ts` and by `type`; then the table is read by pyiceberg and by
# DuckDB's iceberg_scan (tests/e2e/iceberg_read.py), never by the connector's own code.
#
#   0. check-config accepts the config and redacts the catalog URI (nor does any run log it).
#   1. ICEBERG_EVENTS `gen-events` records plus 3 bad ones (2 not JSON, 1 without the required
#      messageId) into a 3-partition topic; one run until Kafka's committed offsets equal the
#      end offsets, SIGTERM (exit 0). pyiceberg: rows == distinct (_kafka_partition,
#      _kafka_offset) == good records; the table's rows and the `_errors/` lines together are
#      every offset once; each data file, read on its own, holds only rows of its partition
#      (hour of `ts`, `type`), and its bounds and record counts agree; the snapshot
#      summaries' offset keys equal Kafka's end offsets. DuckDB: the same count and distinct count.
#   2. ICEBERG_KILL_CYCLES cycles: the connector starts and gets its partitions; a producer
#      then adds ICEBERG_CYCLE_RECORDS records over 4 s; the connector gets SIGKILL a seeded
#      random 1-4 s after its assignment; then a last run drains to the end offsets and stops
#      with SIGTERM. pyiceberg: the same checks over every record, i.e. 0 missing and 0
#      duplicated; DuckDB agrees.
# Last line on stdout:
#   iceberg: cycles=N produced=N good=N rows=N duplicates=N missing=N snapshots=N data_files=N orphan_files=N table_ahead_of_kafka=N elapsed_s=N
# orphan_files: data objects no snapshot references (uploaded, then the kill came before the
# table commit; never read, left for an orphan-file sweep).
# table_ahead_of_kafka: (restart, partition) pairs whose offset in the table was past Kafka's
# committed one when the connector started, i.e. a kill landed between the two commits.
#
# Env: KAFKA_S3_SINK_BIN (default target/debug/kafka-s3-sink, built with `cargo build` if
# missing), ICEBERG_EVENTS (20000), ICEBERG_KILL_CYCLES (10), ICEBERG_CYCLE_RECORDS (2000),
# ICEBERG_SEED (42), ICEBERG_KEEP_DIR (copy the logs and configs there at the end).
# Installs (idempotent, PyPI only): the tools of lib/common.sh in the system Python; pyiceberg
# and DuckDB each in a venv of their own under target/e2e/iceberg/ (DuckDB 1.5.5 with the
# extension packages duckdb-extension-{iceberg,avro,httpfs} 1.5.5, which carry the extension
# binaries: nothing is downloaded at run time, and httpfs reads s3:// from moto directly).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BIN=${KAFKA_S3_SINK_BIN:-$REPO/target/debug/kafka-s3-sink}
HELPERS="$REPO/tests/e2e/e2e_helpers.py"
READ="$REPO/tests/e2e/iceberg_read.py"
EVENTS=${ICEBERG_EVENTS:-20000}
CYCLES=${ICEBERG_KILL_CYCLES:-10}
CYCLE_RECORDS=${ICEBERG_CYCLE_RECORDS:-2000}
SEED=${ICEBERG_SEED:-42}
PARTITIONS=3
BAD=3
START=$SECONDS
log() { printf 'iceberg: %s\n' "$*" >&2; }
fail() { log "FAIL: $*"; exit 1; }
t() { printf '%3ds' $((SECONDS - START)); }
# shellcheck source=tests/e2e/lib/common.sh
. "$REPO/tests/e2e/lib/common.sh"
h() { python3 "$HELPERS" "$@"; }

# ------------------------------------------------------------------ 1. tools
# shellcheck source=tests/e2e/lib/iceberg_readers.sh
. "$REPO/tests/e2e/lib/iceberg_readers.sh"
install_e2e_tools
install_pyiceberg
install_duckdb
if [ ! -x "$BIN" ]; then
  log "building $BIN"
  (cd "$REPO" && cargo build --quiet)
fi

# ------------------------------------------------------------------ 2. servers, topic, events
mkdir -p "$REPO/target/e2e"
TMP=$(mktemp -d "$REPO/target/e2e/iceberg-run.XXXXXX")
trap 'e2e_exit "$TMP" "${ICEBERG_KEEP_DIR:-}"' EXIT
KAFKA_PORT=$(h port)
S3_PORT=$(h port)
HTTP_PORT=$(h port)
RUN_ID="$(date +%s)-$$"
TOPIC="ice-events-$RUN_ID"
GROUP="iceberg-$RUN_ID"
BUCKET="e2e-iceberg-$$"
DEST=lake
S3_URL="http://127.0.0.1:$S3_PORT"
BROKER="127.0.0.1:$KAFKA_PORT"
STATE="$TMP/produced.json"
start_tansu "$KAFKA_PORT" "$TMP/tansu.log"
start_moto "$S3_PORT" "$TMP/moto.log"

TOTAL_GOOD=$((EVENTS + CYCLES * CYCLE_RECORDS))
log "generating $TOTAL_GOOD events"
"$BIN" gen-events --count "$TOTAL_GOOD" --seed "$SEED" --days 1 --out "$TMP/gen.ndjson"
# Phase 1's lines: the first EVENTS events and the bad records; phase 2's: the rest.
{
  head -n "$EVENTS" "$TMP/gen.ndjson"
  echo 'not json'
  echo '{"type": "track", "timestamp": "2026-11-01T10:00:00Z", "event": "no messageId"}'
  echo '{"messageId": "truncated'
  tail -n +$((EVENTS + 1)) "$TMP/gen.ndjson"
} >"$TMP/events.ndjson"
PHASE1=$((EVENTS + BAD))

wait_moto "$S3_PORT"
h create-bucket "$S3_URL" "$BUCKET"
tansu_topic "$KAFKA_PORT" "$TOPIC" "$PARTITIONS" "$TMP/topic.log"

# ------------------------------------------------------------------ 3. the connector's config
cat >"$TMP/sink.toml" <<EOF
[kafka]
brokers = "$BROKER"
group_id = "$GROUP"
topics = ["$TOPIC"]
# A short session: after each SIGKILL the group waits this long for the dead member.
session_timeout_ms = 3000

[kafka.properties]
"heartbeat.interval.ms" = "500"

[http]
listen = "127.0.0.1:$HTTP_PORT"

[pipeline]
drain_deadline_secs = 2
shutdown_deadline_secs = 30

[upload]
retry_initial_backoff_ms = 100
retry_max_backoff_ms = 1000

[[destinations]]
name = "$DEST"
bucket = "$BUCKET"
region = "us-east-1"
endpoint = "$S3_URL"
force_path_style = true
kafka_metadata_field = "_kafka"

[destinations.credentials]
access_key_id = "testing"
secret_access_key = "testing"

[destinations.routing]
time_source = "event_time"
time_field = "timestamp"

[destinations.batch]
max_records = 5000
max_age_secs = 60
idle_secs = 1
EOF
table_columns >>"$TMP/sink.toml"
cat >>"$TMP/sink.toml" <<EOF
[destinations.iceberg]
namespace = "analytics"
table = "events"
partition_time = "hour"
partition_fields = ["type"]
commit_interval_secs = 2

[destinations.iceberg.catalog]
kind = "sql"
uri = "sqlite://$TMP/catalog.db?mode=rwc"
warehouse = "s3://$BUCKET/warehouse"
EOF
"$BIN" check-config --config "$TMP/sink.toml" >"$TMP/check-config.out" 2>&1 ||
  fail "check-config: $(cat "$TMP/check-config.out")"
# The catalog URI is a secret (a sqlite path here, a database URL with a password elsewhere).
grep -q 'catalog.db' "$TMP/check-config.out" && fail "check-config prints the catalog URI"
grep -q '^uri = "<redacted>"' "$TMP/check-config.out" || fail "check-config: no redacted catalog uri"
log "check-config accepts the table destination (catalog uri redacted)"

# ------------------------------------------------------------------ the connector's runs
CONNECTOR_PID=
RUNS=0
start_connector() {
  RUNS=$((RUNS + 1))
  committed >"$TMP/kafka-before-run-$RUNS.json"
  echo "=== iceberg.sh: run $RUNS at $(t)" >>"$TMP/connector.log"
  NO_COLOR=1 "$BIN" run --config "$TMP/sink.toml" >>"$TMP/connector.log" 2>&1 &
  CONNECTOR_PID=$!
  started "$CONNECTOR_PID"
}
committed() { h committed "$BROKER" "$GROUP" "$TOPIC" "$PARTITIONS"; }
all_committed() { h offsets-equal "$STATE" "$(committed)"; }
owns_all() { [ "$(h owned "http://127.0.0.1:$HTTP_PORT/metrics")" = "$PARTITIONS" ]; }
# await SECS WHAT CMD...: polls CMD every 0.5 s until it succeeds; the connector must stay up
await() {
  local secs=$1 what=$2 deadline=$((SECONDS + $1))
  shift 2
  while ! "$@"; do
    alive "$CONNECTOR_PID" "the connector"
    [ "$SECONDS" -lt "$deadline" ] || fail "$what: not reached within ${secs}s (committed $(committed | tr -d ' '))"
    sleep 0.5
  done
}
# term_connector: SIGTERM; it must drain and exit 0 within 60 s
term_connector() {
  local pid=$CONNECTOR_PID rc deadline=$((SECONDS + 60))
  echo "=== iceberg.sh: SIGTERM at $(t)" >>"$TMP/connector.log"
  kill -TERM "$pid"
  while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.2; done
  kill -0 "$pid" 2>/dev/null && fail "the connector (pid $pid) still runs 60 s after SIGTERM"
  rc=0
  wait "$pid" || rc=$?
  forget "$pid"
  [ "$rc" -eq 0 ] || fail "the connector exited $rc after SIGTERM (must drain and exit 0)"
}
kill9_connector() {
  kill -KILL "$CONNECTOR_PID" 2>/dev/null || true
  wait "$CONNECTOR_PID" 2>/dev/null || true
  forget "$CONNECTOR_PID"
  echo "=== iceberg.sh: SIGKILL at $(t)" >>"$TMP/connector.log"
}
# f FIELD: FIELD of the last pyiceberg read's figures (JSON file $PYI)
f() { python3 -c 'import json,sys;print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$PYI" "$1"; }
# check WHAT GOOD: pyiceberg then DuckDB read the table; fails unless the table holds exactly
# GOOD rows, every offset once in the table or in `_errors/` (BAD lines), rows in their own
# partitions, and the snapshots' offsets equal the end offsets. Sets PYI.
check() {
  local what=$1 good=$2 rows distinct engine t0=$SECONDS
  PYI="$TMP/pyiceberg-$what.json"
  timeout 300 "$ICEBERG_VENVS/pyiceberg/bin/python" "$READ" pyiceberg "$TMP/catalog.db" "$DEST" "$S3_URL" "$BUCKET" \
    analytics.events "$GROUP" "$TOPIC" "$STATE" >"$PYI" 2>"$TMP/pyiceberg-$what.log" ||
    fail "$what: pyiceberg could not read the table: $(tail -n 5 "$TMP/pyiceberg-$what.log")"
  log "$what: pyiceberg: $(f rows) rows, $(f distinct) distinct (partition, offset), $(f duplicates) duplicated," \
    "$(f missing) missing, $(f unexpected) unexpected, $(f in_both) both in the table and in _errors/;" \
    "_errors/: $(f errors) lines in $(f error_objects) objects; $(f misplaced) rows outside their partition" \
    "($(f partitions) partitions by $(f partition_fields); $(f rows_read_by_file) rows read file by file from $(f files_read) files);" \
    "$(f snapshots) snapshots, $(f data_files) data files, $(f orphan_files) unreferenced data objects;" \
    "table offsets $(f table_offsets), Kafka end offsets $(f kafka_end_offsets)"
  [ "$(f rows)" -eq "$good" ] || fail "$what: $(f rows) rows in the table, $good good records produced"
  [ "$(f distinct)" -eq "$good" ] || fail "$what: $(f distinct) distinct coordinates, $good good records"
  [ "$(f duplicates)" -eq 0 ] || fail "$what: $(f duplicates) duplicated rows"
  [ "$(f missing)" -eq 0 ] || fail "$what: $(f missing) records neither in the table nor in _errors/"
  [ "$(f unexpected)" -eq 0 ] || fail "$what: $(f unexpected) rows or errors at coordinates never produced"
  [ "$(f in_both)" -eq 0 ] || fail "$what: $(f in_both) records both in the table and in _errors/"
  [ "$(f errors)" -eq "$BAD" ] || fail "$what: $(f errors) lines in _errors/, $BAD bad records produced"
  [ "$(f misplaced)" -eq 0 ] || fail "$what: $(f misplaced) rows outside the partition of their hour and type"
  [ "$(f referenced_not_in_s3)" -eq 0 ] || fail "$what: $(f referenced_not_in_s3) data files of the table are not in S3"
  [ "$(f offsets_ok)" = True ] ||
    fail "$what: the snapshots' offsets $(f table_offsets) are not past the last rows and at most Kafka's end offsets $(f kafka_end_offsets)"
  timeout 300 "$ICEBERG_VENVS/duckdb/bin/python" "$READ" duckdb "$S3_URL" "$(f metadata_location)" >"$TMP/duckdb-$what.json" \
    2>"$TMP/duckdb-$what.log" || fail "$what: DuckDB could not read the table: $(tail -n 5 "$TMP/duckdb-$what.log")"
  read -r rows distinct engine < <(python3 -c 'import json,sys
d = json.load(open(sys.argv[1])); print(d["rows"], d["distinct"], d["engine"])' "$TMP/duckdb-$what.json")
  log "$what: $engine iceberg_scan: $rows rows, $distinct distinct (partition, offset); both reads took $((SECONDS - t0))s"
  { [ "$rows" -eq "$good" ] && [ "$distinct" -eq "$good" ]; } ||
    fail "$what: DuckDB counts $rows rows and $distinct distinct coordinates, $good good records"
  # The connector's own audit agrees: every record up to the committed offsets once, in the
  # table's current snapshot or in _errors/.
  local vrc=0
  timeout 300 "$BIN" verify --config "$TMP/sink.toml" --json >"$TMP/verify-$what.json" \
    2>"$TMP/verify-$what.log" || vrc=$?
  read -r vfound vmissing vdup < <(python3 -c 'import json,sys
d = json.load(open(sys.argv[1])); print(d["found"], d["missing"], d["duplicated"])' "$TMP/verify-$what.json" 2>/dev/null || echo "? ? ?")
  log "$what: verify: found $vfound, missing $vmissing, duplicated $vdup (exit $vrc)"
  { [ "$vrc" -eq 0 ] && [ "$vmissing" = 0 ] && [ "$vdup" = 0 ]; } ||
    fail "$what: verify found $vmissing missing and $vdup duplicated (exit $vrc; see $TMP/verify-$what.log)"
}

# ------------------------------------------------------------------ 4. phase 1: one run
log "$(t) producing $EVENTS events and $BAD bad records into $PARTITIONS partitions"
timeout 120 python3 "$HELPERS" produce "$BROKER" "$TOPIC" "$TMP/events.ndjson" "$PARTITIONS" "$STATE" 0 "$PHASE1" >"$TMP/produce-1.log" 2>&1 ||
  fail "producer: $(tail -n 3 "$TMP/produce-1.log")"
start_connector
await 180 "every offset committed to Kafka" all_committed
term_connector
log "$(t) phase 1: committed $(committed | tr -d ' '); the connector drained and exited 0 after SIGTERM"
check phase1 "$EVENTS"

# ------------------------------------------------------------------ 5. phase 2: kill -9 loop
mapfile -t DELAYS < <(h delays "$SEED" "$CYCLES" 1 4)
# Each cycle's records are produced at a pace that spreads them over PRODUCE_SECS from the
# moment the connector has its partitions, so the kill lands while records still arrive, are
# written and committed. produce-steady counts from 0 in its own state file: add it to STATE.
PRODUCE_SECS=4
add_state() {
  python3 - "$STATE" "$1" <<'PY'
import json, sys
with open(sys.argv[1]) as f:
    st = json.load(f)
with open(sys.argv[2]) as f:
    add = json.load(f)
st["total"] += add["total"]
for k, v in add["per_partition"].items():
    st["per_partition"][k] = st["per_partition"].get(k, 0) + v
for k, v in add["next_offset"].items():
    st["next_offset"][k] = max(st["next_offset"].get(k, 0), v)
with open(sys.argv[1], "w") as f:
    json.dump(st, f)
PY
}
FIRST=$PHASE1
for ((c = 0; c < CYCLES; c++)); do
  END=$((FIRST + CYCLE_RECORDS))
  sed -n "$((FIRST + 1)),${END}p" "$TMP/events.ndjson" >"$TMP/cycle.ndjson"
  rm -f "$TMP/cycle.json"
  start_connector
  await 60 "run $RUNS gets its partitions" owns_all
  h produce-steady "$BROKER" "$TOPIC" "$TMP/cycle.ndjson" "$PARTITIONS" "$TMP/cycle.json" \
    $((CYCLE_RECORDS / PRODUCE_SECS)) "$TMP/no-stop-file" 60 >"$TMP/produce-cycle.log" 2>&1 &
  PRODUCER_PID=$!
  started "$PRODUCER_PID"
  sleep "${DELAYS[c]}" # the kill moment: a seeded delay after the assignment, not a wait for anything
  alive "$CONNECTOR_PID" "the connector"
  kill9_connector
  deadline=$((SECONDS + 70))
  while kill -0 "$PRODUCER_PID" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.2; done
  kill -0 "$PRODUCER_PID" 2>/dev/null && fail "the producer still runs 70 s after it started"
  rc=0
  wait "$PRODUCER_PID" || rc=$?
  forget "$PRODUCER_PID"
  [ "$rc" -eq 0 ] || fail "producer: $(tail -n 3 "$TMP/produce-cycle.log")"
  grep -q "$CYCLE_RECORDS delivered" "$TMP/produce-cycle.log" || fail "producer: $(tail -n 1 "$TMP/produce-cycle.log")"
  add_state "$TMP/cycle.json"
  FIRST=$END
  log "$(t) SIGKILL $((c + 1))/$CYCLES ${DELAYS[c]}s after the assignment; committed $(committed | tr -d ' ')"
done
start_connector
await 180 "every offset committed to Kafka after the SIGKILLs" all_committed
term_connector
log "$(t) phase 2: the last run drained to the end offsets and exited 0 after SIGTERM"
check final "$TOTAL_GOOD"

# The crash window between the table commit and the Kafka commit: restarts where a partition's
# offset in the table (the connector logs it at the assignment: `below=`) was past Kafka's
# committed offset at that start. Reported, not required (the kill moments are random).
AHEAD=$(python3 - "$TMP" <<'PY'
import json, re, sys
runs, run = {}, None
for line in open(f"{sys.argv[1]}/connector.log"):
    m = re.match(r"=== iceberg.sh: run (\d+) ", line)
    if m:
        run = int(m.group(1))
    m = re.search(r"tp=.*\[(\d+)\] below=(\d+)", line)
    if m and run:
        runs.setdefault(run, {})[m.group(1)] = int(m.group(2))
ahead = 0
for run, below in runs.items():
    kafka = json.load(open(f"{sys.argv[1]}/kafka-before-run-{run}.json"))
    ahead += sum(1 for p, o in below.items() if o > kafka.get(p, -1))
print(ahead)
PY
)
log "restarts x partitions whose table offset was past Kafka's committed offset (a kill between the two commits): $AHEAD"
grep -q 'catalog.db' "$TMP/connector.log" && fail "the connector's log shows the catalog URI"
PANICS=$(grep -c 'panicked' "$TMP/connector.log" || true)
[ "$PANICS" -eq 0 ] || fail "a connector run panicked (see its log)"
echo "iceberg: cycles=$CYCLES produced=$((TOTAL_GOOD + BAD)) good=$TOTAL_GOOD rows=$(f rows)" \
  "duplicates=$(f duplicates) missing=$(f missing) snapshots=$(f snapshots) data_files=$(f data_files)" \
  "orphan_files=$(f orphan_files) table_ahead_of_kafka=$AHEAD elapsed_s=$((SECONDS - START))"
log "ok in $((SECONDS - START))s"
