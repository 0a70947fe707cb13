#!/usr/bin/env bash
# A/B of connector builds behind a real broker (BENCHMARKS.md, "How to run"): the same tansu topic
# drained by each binary in turns, each drain with a fresh consumer group and a fresh s3s-fs
# server process, while /healthz is probed every 20 ms. Prints, per drain, the connector's CPU
# seconds and the probe latencies, then each binary's mean. Not a test: no thresholds.
#
#   cp target/release/kafka-s3-sink /tmp/old   # (build the other version, then)
#   N=500000 ROUNDS=4 bash bench/ab.sh /tmp/old target/release/kafka-s3-sink
#
# Env: N (events, default 500000), ROUNDS (default 4), PROBE_SECS (how long each drain is
# probed from its start, default 4), BENCH_DIR (default target/bench; the input is generated
# once per N there). Installs what is missing (tests/e2e/lib/common.sh). Everything listens on
# 127.0.0.1; every process started is stopped by its PID; every wait has a deadline.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
E2E="$REPO/tests/e2e/e2e_helpers.py"
H="$REPO/bench/bench_helpers.py"
N=${N:-500000}
ROUNDS=${ROUNDS:-4}
PROBE_SECS=${PROBE_SECS:-4}
DIR=${BENCH_DIR:-$REPO/target/bench}
OUT="$DIR/ab-$N"
PARTITIONS=8
[ "$#" -ge 1 ] || { echo "usage: bash bench/ab.sh BINARY [BINARY ...]" >&2; exit 2; }
BINS=()
for b in "$@"; do
  [ -x "$b" ] || { echo "ab: $b is not an executable" >&2; exit 2; }
  BINS+=("$(cd "$(dirname "$b")" && pwd)/$(basename "$b")")
done

log() { printf 'ab: %s\n' "$*" >&2; }
fail() { log "FAIL: $*"; exit 1; }
e2e() { python3 "$E2E" "$@"; }
h() { python3 "$H" "$@"; }
STOP_WAIT_TENTHS=100 # a connector run's shutdown may take seconds
# shellcheck source=tests/e2e/lib/common.sh
. "$REPO/tests/e2e/lib/common.sh"
# shellcheck source=bench/lib/common.sh
. "$REPO/bench/lib/common.sh"

install_e2e_tools
mkdir -p "$DIR" "$OUT"
rm -f "$OUT"/drain-*.json
EVENTS=$(bench_input "$N" "$DIR")
(cd "$REPO" && cargo build --release --quiet --bin kafka-s3-sink-bench)
# A copy: rebuilding the tree during the run must not change the S3 server under the drains.
cp "$REPO/target/release/kafka-s3-sink-bench" "$OUT/s3-server-bin"
S3S_BIN="$OUT/s3-server-bin"

KAFKA_PORT=$(e2e port)
HTTP_PORT=$(e2e port)
TOPIC="ab-$(date +%s)-$$"
log "tansu broker, topic $TOPIC ($PARTITIONS partitions), producing $N events"
start_tansu "$KAFKA_PORT" "$OUT/tansu.log"
tansu_topic "$KAFKA_PORT" "$TOPIC" "$PARTITIONS" "$OUT/topic.log"
e2e produce "127.0.0.1:$KAFKA_PORT" "$TOPIC" "$EVENTS" "$PARTITIONS" "$OUT/produced.json" 0 "$N" >/dev/null

for r in $(seq "$ROUNDS"); do
  for i in "${!BINS[@]}"; do
    name="drain-r$r-b$i"
    start_s3s "$OUT/s3fs-$name" abtest
    drain_config "$OUT/$name.toml" "$TOPIC-$name" abtest
    log "round $r: ${BINS[$i]}"
    python3 "$H" probe "http://127.0.0.1:$HTTP_PORT/healthz" "$OUT/$name.probe" "$PROBE_SECS" &
    probe_pid=$!
    started "$probe_pid"
    h drain "${BINS[$i]}" "$OUT/$name.toml" "http://127.0.0.1:$HTTP_PORT/metrics" "$N" \
      "$OUT/$name.json" "$TANSU_PID" "$S3S_PID" >/dev/null
    wait "$probe_pid" || true
    forget "$probe_pid"
    python3 - "$OUT/$name.json" "$OUT/$name.probe" "${BINS[$i]}" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
d["probe"], d["binary"] = json.load(open(sys.argv[2])), sys.argv[3]
json.dump(d, open(sys.argv[1], "w"))
EOF
    stopped "$S3S_PID"
    rm -rf "$OUT/s3fs-$name"
  done
done
stopped "$TANSU_PID"
# shellcheck disable=SC2046
h ab-summary $(ls "$OUT"/drain-r*-b*.json | sort -V)
