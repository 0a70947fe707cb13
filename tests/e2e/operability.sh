#!/usr/bin/env bash
# End-to-end operability with real outside processes: a tansu broker (Kafka protocol), a moto S3
# server and tests/e2e/fault_proxy.py in front of it, all on 127.0.0.1 at ports picked at run time.
#
#   1. rollout: replica A joins the group of a 1-partition topic and turns ready (/readyz 200);
#      replica B joins the same group with nothing to own and must turn ready too (before, it
#      waited for an upload that never came), with its start-up bucket check counted in
#      kafka_s3_sink_s3_requests_total; A then gets SIGTERM and must exit 0.
#   2. wrong settings: a bucket that does not exist stops `run` at start-up with exit 2 and one
#      line naming the fix, in at most a handful of lines; `check-config --connect` says the same.
#   3. log volume: every S3 request through the proxy answers 503 SlowDown while a replica holds
#      records for OPS_FAIL_SECS (default 60); its log must stay within OPS_MAX_LINES_PER_MIN
#      (default 20) lines per minute, with each S3 failure on one line (operation, bucket, key,
#      status, code, request id). Then SIGTERM: the shutdown deadline cancels the uploads, so
#      it must exit 3 and say how many records stay uncommitted (not "stopped cleanly").
# Last line on stdout:
#   operability: ready_idle_s=N log_lines=N fail_secs=N uncommitted=N
#
# Installs what is missing (tests/e2e/lib/common.sh). Every wait has a deadline; every process
# started is stopped by its PID on exit.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HELPERS="$REPO/tests/e2e/e2e_helpers.py"
PROXY="$REPO/tests/e2e/fault_proxy.py"
BIN=${KAFKA_S3_SINK_BIN:-$REPO/target/debug/kafka-s3-sink}
FAIL_SECS=${OPS_FAIL_SECS:-60}
MAX_PER_MIN=${OPS_MAX_LINES_PER_MIN:-20}
READY_SECS=60   # join (tansu answers after session.timeout/2) + bucket check

log() { printf 'e2e operability: %s\n' "$*" >&2; }
fail() { log "FAIL: $*"; exit 1; }
h() { python3 "$HELPERS" "$@"; }
# shellcheck source=tests/e2e/lib/common.sh
. "$REPO/tests/e2e/lib/common.sh"

install_e2e_tools
if [ ! -x "$BIN" ]; then
  log "building $BIN"
  (cd "$REPO" && cargo build --quiet)
fi
[ -x "$BIN" ] || fail "connector binary not found at $BIN"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/e2e-operability.XXXXXX")
trap 'e2e_exit "$TMP" "${OPS_KEEP_DIR:-}"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

KAFKA_PORT=$(h port)
S3_PORT=$(h port)
PROXY_PORT=$(h port)
CONTROL_PORT=$(h port)
RUN_ID="$(date +%s)-$$"
TOPIC="ops-$RUN_ID"
BUCKET="e2e-ops-$$"
BROKER="127.0.0.1:$KAFKA_PORT"
S3_URL="http://127.0.0.1:$S3_PORT"
PROXY_URL="http://127.0.0.1:$PROXY_PORT"
CONTROL="http://127.0.0.1:$CONTROL_PORT"

start_tansu "$KAFKA_PORT" "$TMP/tansu.log"
start_moto "$S3_PORT" "$TMP/moto.log"
python3 "$PROXY" --port "$PROXY_PORT" --control-port "$CONTROL_PORT" --upstream "127.0.0.1:$S3_PORT" \
  --error-rate 0 --weights error503=1 --max-lifetime-secs 1800 >"$TMP/proxy.log" 2>&1 &
PROXY_PID=$!
started "$PROXY_PID"
wait_moto "$S3_PORT"
h wait-http "$CONTROL/healthz" 15 || { alive "$PROXY_PID" fault_proxy; fail "fault proxy not ready"; }
h create-bucket "$S3_URL" "$BUCKET"
tansu_topic "$KAFKA_PORT" "$TOPIC" 1 "$TMP/topic.log"

# metrics_url CONFIG: the /metrics base URL of a config written by connector_config
base_url() { echo "http://$(sed -n 's/^listen = "\(.*\)"/\1/p' "$1")"; }
# wait_ready CONFIG PID WHAT: waits (READY_SECS) for /readyz 200; sets READY_AFTER (seconds)
wait_ready() {
  local url t0=$SECONDS
  url="$(base_url "$1")/readyz"
  while ! h http GET "$url" >/dev/null 2>&1; do
    alive "$2" "$3"
    [ $((SECONDS - t0)) -lt "$READY_SECS" ] ||
      fail "$3 not ready after ${READY_SECS}s: $(h http GET "$url" 2>&1 | tail -1)"
    sleep 0.5
  done
  READY_AFTER=$((SECONDS - t0))
}

# ------------------------------------------------------------------ 1. rollout
GROUP="ops-$RUN_ID"
connector_config "$TMP/a.toml" "$BROKER" "$GROUP" "$TOPIC" "$S3_URL" "$BUCKET"
connector_config "$TMP/b.toml" "$BROKER" "$GROUP" "$TOPIC" "$S3_URL" "$BUCKET"
NO_COLOR=1 "$BIN" run --config "$TMP/a.toml" >"$TMP/a.log" 2>&1 &
A_PID=$!
started "$A_PID"
wait_ready "$TMP/a.toml" "$A_PID" "replica A"
log "replica A ready after ${READY_AFTER}s"
NO_COLOR=1 "$BIN" run --config "$TMP/b.toml" >"$TMP/b.log" 2>&1 &
B_PID=$!
started "$B_PID"
wait_ready "$TMP/b.toml" "$B_PID" "replica B (nothing to own)"
READY_IDLE=$READY_AFTER
B_URL="$(base_url "$TMP/b.toml")/metrics"
requests=$(h metric "$B_URL" kafka_s3_sink_s3_requests_total)
[ "$requests" != none ] && [ "$requests" -ge 1 ] || fail "replica B counted no S3 request ($requests)"
log "replica B (no partitions) ready after ${READY_IDLE}s, $requests S3 request(s) counted"
kill -TERM "$A_PID"
rc=0
wait "$A_PID" || rc=$?
forget "$A_PID"
[ "$rc" -eq 0 ] || fail "replica A exited $rc on SIGTERM"
stopped "$B_PID"

# ------------------------------------------------------------------ 2. wrong settings
connector_config "$TMP/nobucket.toml" "$BROKER" "ops-nb-$RUN_ID" "$TOPIC" "$S3_URL" "no-such-bucket-$$"
rc=0
NO_COLOR=1 timeout 60 "$BIN" run --config "$TMP/nobucket.toml" >"$TMP/nobucket.log" 2>&1 || rc=$?
[ "$rc" -eq 2 ] || fail "a missing bucket: exit $rc, not 2"
grep -q "bucket \`no-such-bucket-$$\` does not exist" "$TMP/nobucket.log" ||
  fail "a missing bucket: the log does not name it: $(tail -2 "$TMP/nobucket.log")"
n=$(wc -l <"$TMP/nobucket.log")
[ "$n" -le 6 ] || fail "a missing bucket: $n log lines, not a handful"
rc=0
"$BIN" check-config --connect --config "$TMP/nobucket.toml" >/dev/null 2>"$TMP/connect.log" || rc=$?
[ "$rc" -eq 2 ] || fail "check-config --connect with a missing bucket: exit $rc, not 2"
grep -q "does not exist" "$TMP/connect.log" || fail "check-config --connect: $(cat "$TMP/connect.log")"
"$BIN" check-config --connect --config "$TMP/a.toml" >/dev/null 2>"$TMP/connect-ok.log" ||
  fail "check-config --connect on a good config: $(cat "$TMP/connect-ok.log")"
log "a missing bucket: exit 2 in $n lines; check-config --connect agrees"

# ------------------------------------------------------------------ 3. log volume while S3 answers 503
"$BIN" gen-events --count 2000 --seed 7 --out "$TMP/events.ndjson"
h produce "$BROKER" "$TOPIC" "$TMP/events.ndjson" 1 "$TMP/produced.json" 0 2000 >/dev/null
connector_config "$TMP/c.toml" "$BROKER" "ops-c-$RUN_ID" "$TOPIC" "$PROXY_URL" "$BUCKET"
sed -i 's/^shutdown_deadline_secs = .*/shutdown_deadline_secs = 3/; s/^drain_deadline_secs = .*/drain_deadline_secs = 2/' "$TMP/c.toml"
h http POST "$CONTROL/rate?error=1" >/dev/null
NO_COLOR=1 "$BIN" run --config "$TMP/c.toml" >"$TMP/c.log" 2>&1 &
C_PID=$!
started "$C_PID"
# flushed: records in the files replica C closed so far (one `flush` line each)
flushed() { sed -n 's/.*flush destination.* records=\([0-9]*\) .*/\1/p' "$TMP/c.log" | awk '{s += $1} END {print s + 0}'; }
deadline=$((SECONDS + 90))
until grep -q "S3 request failed" "$TMP/c.log" && [ "$(flushed)" -ge 2000 ]; do
  alive "$C_PID" "replica C"
  [ "$SECONDS" -lt "$deadline" ] || fail "replica C: no S3 failure, or not every record in a closed file, in 90 s"
  sleep 0.5
done
from=$(wc -l <"$TMP/c.log")   # the window starts once every file is closed and failing
sleep "$FAIL_SECS"   # the window measured: S3 keeps failing, the connector keeps retrying
alive "$C_PID" "replica C"
lines=$(($(wc -l <"$TMP/c.log") - from))
limit=$((MAX_PER_MIN * FAIL_SECS / 60 + 1))
[ "$lines" -le "$limit" ] || fail "$lines log lines in ${FAIL_SECS}s while S3 answers 503 (limit $limit): $(tail -5 "$TMP/c.log")"
line=$(grep -m1 "S3 request failed; retrying" "$TMP/c.log")
for part in "PutObject s3://$BUCKET/" "HTTP 503 SlowDown" "request id FAULT"; do
  case "$line" in *"$part"*) ;; *) fail "the S3 failure line lacks '$part': $line" ;; esac
done
kill -TERM "$C_PID"
rc=0
wait "$C_PID" || rc=$?
forget "$C_PID"
[ "$rc" -eq 3 ] || fail "a shutdown that cancelled uploads exited $rc, not 3"
grep -q "stopped cleanly" "$TMP/c.log" && fail "a cancelled shutdown said 'stopped cleanly'"
uncommitted=$(sed -n 's/.*stopped with \([0-9]*\) records uncommitted.*/\1/p' "$TMP/c.log")
[ "${uncommitted:-0}" -eq 2000 ] || fail "uncommitted=${uncommitted:-none}, not 2000"
log "S3 answering 503: $lines log lines in ${FAIL_SECS}s; SIGTERM: exit 3, $uncommitted uncommitted"
echo "operability: ready_idle_s=$READY_IDLE log_lines=$lines fail_secs=$FAIL_SECS uncommitted=$uncommitted"
