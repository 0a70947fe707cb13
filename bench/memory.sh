#!/usr/bin/env bash
# Peak RSS against the memory budget (BENCHMARKS.md, "Memory"): the release binary drains the
# bench input (N `gen-events` records, 4 partitions) from a tansu broker into moto_server with
# gzip 6, once per budget, each drain with a fresh consumer group and bucket. Reports, per
# budget, the connector's peak RSS (VmHWM sampled every 100 ms, and wait4's maximum) against
# the bound, budget + 48 MiB. Not a test: the exit status says whether every drain stayed
# within the bound.
#
#   bash bench/memory.sh                         # N=1000000, budgets 32, 64, 256 MiB
#   N=200000 BUDGETS_MIB="32 64" bash bench/memory.sh
#
# Env: N, BUDGETS_MIB, PARTITIONS (default 4), S3 (moto or s3s, default moto), BIN (the
# connector binary; default the release build), EXTRA_ENV (e.g. "MALLOC_ARENA_MAX=1", set for
# the connector only), KAFKA_PROPERTIES (lines for [kafka.properties]), BENCH_DIR.
# Installs what is missing (tests/e2e/lib/common.sh). Everything listens on 127.0.0.1 on ports
# picked at run time; every process started is stopped by its PID; every wait has a deadline.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
E2E="$REPO/tests/e2e/e2e_helpers.py"
H="$REPO/bench/bench_helpers.py"
N=${N:-1000000}
BUDGETS_MIB=${BUDGETS_MIB:-32 64 256}
PARTITIONS=${PARTITIONS:-4}
S3=${S3:-moto}
DIR=${BENCH_DIR:-$REPO/target/bench}
OUT="$DIR/memory-$N"
BIN=${BIN:-$REPO/target/release/kafka-s3-sink}

log() { printf 'memory: %s\n' "$*" >&2; }
fail() { log "FAIL: $*"; show_logs "$OUT"; exit 1; }
e2e() { python3 "$E2E" "$@"; }
h() { python3 "$H" "$@"; }
STOP_WAIT_TENTHS=100
# shellcheck source=tests/e2e/lib/common.sh
. "$REPO/tests/e2e/lib/common.sh"
# shellcheck source=bench/lib/common.sh
. "$REPO/bench/lib/common.sh"

install_e2e_tools
mkdir -p "$DIR" "$OUT"
rm -f "$OUT"/drain-*.json
if [ -z "${SKIP_BUILD:-}" ]; then
  log "building (release)"
  (cd "$REPO" && cargo build --release --quiet --bin kafka-s3-sink --bin kafka-s3-sink-bench)
fi
EVENTS=$(bench_input "$N" "$DIR")

KAFKA_PORT=$(e2e port)
HTTP_PORT=$(e2e port)
TOPIC="memory-$(date +%s)-$$"
log "tansu broker, topic $TOPIC ($PARTITIONS partitions), producing $N events"
start_tansu "$KAFKA_PORT" "$OUT/tansu.log"
tansu_topic "$KAFKA_PORT" "$TOPIC" "$PARTITIONS" "$OUT/topic.log"
e2e produce "127.0.0.1:$KAFKA_PORT" "$TOPIC" "$EVENTS" "$PARTITIONS" "$OUT/produced.json" 0 "$N" >/dev/null
if [ "$S3" = moto ]; then
  MOTO_PORT=$(e2e port)
  start_moto "$MOTO_PORT" "$OUT/moto.log"
  wait_moto "$MOTO_PORT"
  S3S_URL="http://127.0.0.1:$MOTO_PORT"
  S3_PID=$MOTO_PID
fi

for mib in $BUDGETS_MIB; do
  name="drain-$mib"
  bucket="mem-$mib-$(date +%s)"
  if [ "$S3" = moto ]; then
    e2e create-bucket "$S3S_URL" "$bucket" >/dev/null
  else
    start_s3s "$OUT/s3fs-$name" "$bucket"
    S3_PID=$S3S_PID
  fi
  drain_config "$OUT/$name.toml" "$TOPIC-$name" "$bucket" "${KAFKA_PROPERTIES:-}"
  sed -i -e "s/^\[pipeline\]$/[pipeline]\nmemory_budget_bytes = $((mib * 1048576))/" "$OUT/$name.toml"
  log "budget $mib MiB: draining"
  # shellcheck disable=SC2086 # EXTRA_ENV is a list of NAME=VALUE words
  env ${EXTRA_ENV:-} python3 "$H" drain "$BIN" "$OUT/$name.toml" "http://127.0.0.1:$HTTP_PORT/metrics" "$N" \
    "$OUT/$name.json" "$TANSU_PID" "$S3_PID" >/dev/null
  python3 - "$OUT/$name.json" "$mib" "$name" <<'EOF'
import json, re, sys
d = json.load(open(sys.argv[1]))
d["budget_mib"] = int(sys.argv[2])
flushes = {}
for line in open(sys.argv[1] + ".log", errors="replace"):
    m = re.search(r'flush: flush .*reason="?([a-z_]+)"?', line)
    if m:
        flushes[m.group(1)] = flushes.get(m.group(1), 0) + 1
d["flushes"] = flushes
json.dump(d, open(sys.argv[1], "w"))
EOF
  if [ "$S3" != moto ]; then
    stopped "$S3S_PID"
    rm -rf "$OUT/s3fs-$name"
  fi
done
stopped "$TANSU_PID"

python3 - "$OUT" "$N" "$BUDGETS_MIB" <<'EOF'
import json, sys
out, n, budgets = sys.argv[1], int(sys.argv[2]), sys.argv[3].split()
print(f"| budget | records | peak RSS MiB | above the budget | bound (budget + 48) | within | CPU s | drain s | flushes |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
ok = True
for mib in budgets:
    d = json.load(open(f"{out}/drain-{mib}.json"))
    peak, b = d["connector_peak_rss_mib"], int(mib)
    within = peak <= b + 48
    ok &= within
    fl = ", ".join(f"{k} {v}" for k, v in sorted(d["flushes"].items()))
    print(f"| {b} MiB | {n:,} | {peak} | {peak - b:.1f} | {b + 48} | {'yes' if within else '**no**'} | "
          f"{d['connector_cpu_secs']} | {d['drain_secs']} | {fl} |")
sys.exit(0 if ok else 3)
EOF
