#!/usr/bin/env bash
# Where the connector's CPU goes (BENCHMARKS.md, "Profile"): perf samples (cpu-clock, so it works
# in VMs without hardware counters) of
#   1. the replay run (2 workers, null sink, 8 partitions interleaved record by record),
#   2. the same with 64 partitions (many encoders in turn: cache misses in the match finder),
#   3. the deflate-only reference (the floor),
# each summarised by category (deflate, crc32, JSON scan, allocation, …) and top functions, plus
# the inclusive time of the pipeline's own functions (DWARF call graphs) for run 1.
#
#   bash bench/profile.sh                  # 300,000 events of the cached input
#   PROFILE_EVENTS=100000 bash bench/profile.sh
#
# Output: Markdown on stdout and $BENCH_DIR/profile/*.txt (raw perf reports).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
H="$REPO/bench/bench_helpers.py"
DIR=${BENCH_DIR:-$REPO/target/bench}
EVENTS_N=${PROFILE_EVENTS:-300000}
OUT="$DIR/profile"
# The `profiling` profile: release code with line tables (Cargo.toml); release binaries ship
# without debug info.
BENCH="$REPO/target/profiling/kafka-s3-sink-bench"

log() { printf 'profile: %s\n' "$*" >&2; }
if ! command -v perf >/dev/null; then
  log "installing linux-perf (apt)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq linux-perf >/dev/null
fi
mkdir -p "$OUT"
(cd "$REPO" && cargo build --profile profiling --quiet)
EVENTS="$DIR/gen-events-$EVENTS_N.ndjson"
if [ ! -s "$EVENTS" ]; then
  "$REPO/target/profiling/kafka-s3-sink" gen-events --count "$EVENTS_N" --seed 42 --out "$EVENTS.tmp"
  mv "$EVENTS.tmp" "$EVENTS"
fi

# flat NAME COMM -- CMD...: perf record CMD, report self time of threads named COMM
flat() {
  local name=$1 comm=$2
  shift 3
  perf record -q -e cpu-clock -F 1999 -o "$OUT/$name.data" -- "$@" >"$OUT/$name.json" 2>"$OUT/$name.err"
  perf report -i "$OUT/$name.data" --no-children --comm "$comm" --sort symbol --stdio 2>/dev/null \
    >"$OUT/$name.txt"
  echo "#### $name ($(head -c 200 "$OUT/$name.json" | tr -d '\n' | cut -c1-160)…)"
  echo
  python3 "$H" perf-summary "$OUT/$name.txt"
  echo
}

log "replay, 8 partitions"
flat replay-8p kss-worker-0,kss-worker-1 -- "$BENCH" replay --input "$EVENTS" --partitions 8 --workers 2
log "replay, 64 partitions"
flat replay-64p kss-worker-0,kss-worker-1 -- "$BENCH" replay --input "$EVENTS" --partitions 64 --workers 2
log "deflate only"
flat deflate-only tokio-rt-worker -- "$BENCH" deflate --input "$EVENTS" --level 6

log "replay, 8 partitions, call graphs"
perf record -q -e cpu-clock -F 499 --call-graph dwarf,32768 -o "$OUT/replay-8p-graph.data" -- \
  "$BENCH" replay --input "$EVENTS" --partitions 8 --workers 2 >/dev/null 2>&1
perf report -i "$OUT/replay-8p-graph.data" --children --comm kss-worker-0,kss-worker-1 --sort symbol \
  --stdio -g none 2>/dev/null >"$OUT/replay-8p-children.txt"
echo "#### replay-8p: inclusive time of the pipeline's functions (share of worker-thread samples)"
echo
echo "| function (inclusive) | share |"
echo "| --- | ---: |"
grep -E '^ +[0-9]' "$OUT/replay-8p-children.txt" | sed -E 's/ +- +- *$//' |
  grep -E 'kafka_s3_sink::(pipeline|batch|router|scan|metrics|offsets)::[A-Za-z_:<>]+$|flate2::crc::Crc::update$|GzEncoder<W> as std::io::Write>::write|__GI___libc_free' |
  awk '{pct=$1; sub(/^ *[0-9.]+% +[0-9.]+% +\[\.\] +/, ""); if (!seen[$0]++) printf "| `%s` | %s |\n", $0, pct}' |
  head -16
