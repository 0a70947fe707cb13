#!/usr/bin/env bash
# Schema Registry input against JSON input (BENCHMARKS.md, "Schema Registry input"): N
# `gen-events` records (4 partitions) on one tansu topic as JSON text, and the same events as
# Avro in the registry's wire format on another (bench/avro_input.py: one schema, fastavro), the
# schema on the test-only registry (`kafka-s3-sink-bench registry-server`). The release binary
# (2 workers, a 256 MiB budget unless BUDGET_MIB says otherwise) drains each topic into the
# crate's s3s-fs server, in turns, each drain with a fresh consumer group and server:
#   json-ndjson / avro-ndjson    gzip 6 NDJSON (the default destination), hour folders on the
#                                event's `timestamp`;
#   json-parquet / avro-parquet  examples/parquet.toml's destination (its columns, raw column and
#                                Kafka metadata), dt=/hr= folders;
# ROUNDS times (default 3). The Avro drains read with value_format = "avro".
#
# Prints, per drain: MB of input per connector CPU-second (JSON: the NDJSON file's bytes; Avro:
# the framed values' bytes) and, per output, the Avro drains' ratio to the JSON drains of the
# same run (the issue's target for Parquet: >= 1); records written and quarantined; peak RSS;
# the Schema Registry requests the connector made (one per schema id is the claim). Not a test:
# no thresholds; exit status 3 when a drain's counts are wrong.
#
#   bash bench/registry.sh                      # N=500000, 3 rounds
#   N=100000 ROUNDS=1 bash bench/registry.sh
#   KAFKA_S3_SINK_BIN=... KAFKA_S3_SINK_BENCH_BIN=... bash bench/registry.sh   # given binaries
#   BUDGET_MIB=32 bash bench/registry.sh        # another memory budget (default 256 MiB;
#                                                 peak RSS against its bound, budget + 48 MiB)
#
# Results go to $BENCH_DIR/registry-$N/ (one JSON per drain with its log and config, table.md).
# Installs what is missing (tests/e2e/lib/common.sh, fastavro); every process started is stopped
# by its PID; every wait has a deadline.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
E2E="$REPO/tests/e2e/e2e_helpers.py"
H="$REPO/bench/bench_helpers.py"
N=${N:-500000}
ROUNDS=${ROUNDS:-3}
PARTITIONS=4
WORKERS=2
BUDGET=$(( ${BUDGET_MIB:-256} * 1048576 ))
DIR=${BENCH_DIR:-$REPO/target/bench}
OUT="$DIR/registry-$N"
BUCKET=bench

log() { printf 'registry: %s\n' "$*" >&2; }
fail() { log "FAIL: $*"; show_logs "$OUT"; exit 1; }
e2e() { python3 "$E2E" "$@"; }
h() { python3 "$H" "$@"; }
STOP_WAIT_TENTHS=100
# shellcheck source=tests/e2e/lib/common.sh
. "$REPO/tests/e2e/lib/common.sh"
# shellcheck source=bench/lib/common.sh
. "$REPO/bench/lib/common.sh"

install_e2e_tools
python3 -c 'import fastavro' 2>/dev/null || { log "installing fastavro (pip)"; python3 -m pip install -q "fastavro==1.12.1"; }
mkdir -p "$DIR" "$OUT"
rm -f "$OUT"/*.json "$OUT"/*.log "$OUT"/*.metrics "$OUT"/*.toml
if [ -n "${KAFKA_S3_SINK_BIN:-}" ] && [ -n "${KAFKA_S3_SINK_BENCH_BIN:-}" ]; then
  BIN=$KAFKA_S3_SINK_BIN
  BENCH_BIN=$KAFKA_S3_SINK_BENCH_BIN
else
  log "building (release)"
  (cd "$REPO" && cargo build --release --quiet --bin kafka-s3-sink --bin kafka-s3-sink-bench)
  BIN=$REPO/target/release/kafka-s3-sink
  BENCH_BIN=$REPO/target/release/kafka-s3-sink-bench
fi
export KAFKA_S3_SINK_BIN=$BIN # bench_input's generator
cp "$BENCH_BIN" "$OUT/s3-server-bin"
S3S_BIN="$OUT/s3-server-bin"
EVENTS=$(bench_input "$N" "$DIR")
JSON_BYTES=$(stat -c %s "$EVENTS")

KAFKA_PORT=$(e2e port)
HTTP_PORT=$(e2e port)
BASE="registry-$(date +%s)-$$"
start_tansu "$KAFKA_PORT" "$OUT/tansu.log"
"$BENCH_BIN" registry-server >"$OUT/registry.hello" 2>"$OUT/registry.log" &
REGISTRY_PID=$!
started "$REGISTRY_PID"
for _ in $(seq 100); do [ -s "$OUT/registry.hello" ] && break; sleep 0.1; done
[ -s "$OUT/registry.hello" ] || fail "registry-server did not start (see $OUT/registry.log)"
REGISTRY_URL=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["url"])' "$OUT/registry.hello")
for f in json avro; do tansu_topic "$KAFKA_PORT" "$BASE-$f" "$PARTITIONS" "$OUT/topic-$f.log"; done
log "producing $N events as JSON into $BASE-json"
e2e produce "127.0.0.1:$KAFKA_PORT" "$BASE-json" "$EVENTS" "$PARTITIONS" "$OUT/produced-json.json" 0 "$N" >/dev/null
log "producing $N events as Avro into $BASE-avro"
python3 "$REPO/bench/avro_input.py" "127.0.0.1:$KAFKA_PORT" "$BASE-avro" "$PARTITIONS" "$EVENTS" \
  "$REGISTRY_URL" "$OUT/produced-avro.json" 2>"$OUT/avro_input.log" || fail "producing Avro failed (see $OUT/avro_input.log)"
AVRO_BYTES=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["avro_bytes"])' "$OUT/produced-avro.json")
log "input: $JSON_BYTES bytes of JSON, $AVRO_BYTES bytes of Avro"

# config NAME INPUT OUTPUT: $OUT/NAME.toml draining topic $BASE-INPUT into $S3S_URL
config() {
  local name=$1 input=$2 output=$3 f="$OUT/$1.toml"
  TOPIC="$BASE-$input" drain_config "$f" "$BASE-$name" "$BUCKET"
  sed -i -e "s/^\[pipeline\]$/[pipeline]\nmemory_budget_bytes = $BUDGET\nworkers = $WORKERS/" "$f"
  if [ "$input" = avro ]; then
    sed -i -e "s|^\[kafka.properties\]$|[kafka.schema_registry]\nurl = \"$REGISTRY_URL\"\n\n&|" \
      -e 's/^force_path_style = true$/&\nvalue_format = "avro"/' "$f"
  fi
  if [ "$output" = parquet ]; then
    sed -i 's/^force_path_style = true$/&\nkafka_metadata_field = "_kafka"/' "$f"
    printf '\n' >>"$f"
    sed -n '/^\[destinations.routing\]/,$p' "$REPO/examples/parquet.toml" >>"$f"
  else
    cat >>"$f" <<CONF

[destinations.routing]
time_source = "event_time"
time_field = "timestamp"
CONF
  fi
}

# drain NAME INPUT OUTPUT: one drain of the whole topic
drain() {
  local name=$1 input=$2 output=$3
  start_s3s "$OUT/s3fs-$name" "$BUCKET"
  config "$name" "$input" "$output"
  log "$name: draining"
  h drain "$BIN" "$OUT/$name.toml" "http://127.0.0.1:$HTTP_PORT/metrics" "$N" \
    "$OUT/$name.json" "$TANSU_PID" "$S3S_PID" >/dev/null || fail "$name: drain failed (see $OUT/$name.json.log)"
  python3 - "$OUT" "$name" "$input" "$output" "$JSON_BYTES" "$AVRO_BYTES" <<'EOF'
import json, re, sys
out, name, inp, output, json_bytes, avro_bytes = sys.argv[1:7]
d = json.load(open(f"{out}/{name}.json"))
size = int(avro_bytes if inp == "avro" else json_bytes)
written = quarantined = 0
for line in open(f"{out}/{name}.json.log", errors="replace"):
    m = re.search(r'\bflush\b.*\bkey=(\S+).*\brecords=(\d+)', line)
    if m:
        if "_errors/" in m.group(1):
            quarantined += int(m.group(2))
        else:
            written += int(m.group(2))
requests = 0
try:
    for line in open(f"{out}/{name}.json.metrics"):
        if line.startswith("kafka_s3_sink_schema_registry_requests_total"):
            requests += int(float(line.rsplit(" ", 1)[1]))
except OSError:
    pass
d.update(name=name, input=inp, output=output, input_bytes=size, records_written=written,
         records_quarantined=quarantined, registry_requests=requests,
         mb_per_cpu_sec=size / 1e6 / d["connector_cpu_secs"])
json.dump(d, open(f"{out}/{name}.json", "w"))
print(f"registry: {name}: {d['mb_per_cpu_sec']:.1f} MB/CPU-s, drain {d['drain_secs']} s, "
      f"peak RSS {d['connector_peak_rss_mib']} MiB, written {written} + quarantined {quarantined}, "
      f"registry requests {requests}", file=sys.stderr)
EOF
  stopped "$S3S_PID"
  rm -rf "$OUT/s3fs-$name"
}

for r in $(seq "$ROUNDS"); do
  for output in ndjson parquet; do
    for input in json avro; do
      drain "r$r-$input-$output" "$input" "$output"
    done
  done
done
stopped "$TANSU_PID"
stopped "$REGISTRY_PID"

python3 - "$OUT" "$N" <<'EOF' | tee "$OUT/table.md"
import glob, json, statistics, sys
out, n = sys.argv[1], int(sys.argv[2])
runs = [json.load(open(f)) for f in sorted(glob.glob(f"{out}/r*-*.json"))]
bad = [r["name"] for r in runs if r["records_written"] + r["records_quarantined"] != n]
mean = lambda xs: statistics.mean(xs) if xs else float("nan")
print("| output | input | MB of input per CPU-s (mean; each) | Avro ÷ JSON | records written + quarantined | peak RSS MiB (max) | registry requests (each) |")
print("| --- | --- | --- | ---: | --- | ---: | --- |")
for output in ("ndjson", "parquet"):
    base = mean([r["mb_per_cpu_sec"] for r in runs if r["output"] == output and r["input"] == "json"])
    for inp in ("json", "avro"):
        rs = [r for r in runs if r["output"] == output and r["input"] == inp]
        if not rs:
            continue
        m = mean([r["mb_per_cpu_sec"] for r in rs])
        each = ", ".join(f"{r['mb_per_cpu_sec']:.1f}" for r in rs)
        counts = ", ".join(f"{r['records_written']} + {r['records_quarantined']}" for r in rs)
        reqs = ", ".join(str(r["registry_requests"]) for r in rs)
        print(f"| {output} | {inp} | {m:.1f} ({each}) | {m / base:.2f} | {counts} | "
              f"{max(r['connector_peak_rss_mib'] for r in rs):.1f} | {reqs} |")
if bad:
    print(f"\nwrong counts in: {', '.join(bad)}")
    sys.exit(3)
EOF
