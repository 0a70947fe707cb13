#!/usr/bin/env bash
# Compression codecs end to end (BENCHMARKS.md, "Codecs"): the same tansu topic drained by the
# real binary into the crate's s3s-fs server with each codec in turns (gzip level 6, the
# default; zstd level 3; Parquet with the columns of examples/parquet.toml, zstd-3 columns, once
# with its raw-JSON column and once without), a fresh consumer group and server each time, and
# the references
# `gzip -6` and `zstd -3` (the CLI tools, one core) on the same input file in the same run.
# Prints, per codec: input MB per CPU-second of the connector (mean of the rounds), the ratio
# to the gzip-6 drains, and the compression ratio of what reached S3 against `gzip -6`'s and
# `zstd -3`'s on the whole file. Not a test: no thresholds.
#
#   bash bench/codecs.sh                   # N=500000, 3 rounds
#   N=200000 ROUNDS=2 bash bench/codecs.sh
#   CODECS="gzip:6 parquet:raw" bash bench/codecs.sh   # some of them (the first is the base)
#
# Results go to $BENCH_DIR/codecs-$N/. Installs what is missing (tests/e2e/lib/common.sh, and
# Debian's zstd for the reference); every process started is stopped by its PID.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
E2E="$REPO/tests/e2e/e2e_helpers.py"
H="$REPO/bench/bench_helpers.py"
N=${N:-500000}
ROUNDS=${ROUNDS:-3}
DIR=${BENCH_DIR:-$REPO/target/bench}
OUT="$DIR/codecs-$N"
BIN="$REPO/target/release/kafka-s3-sink"
PARTITIONS=8
read -r -a CODECS <<<"${CODECS:-gzip:6 zstd:3 parquet:raw parquet:columns}"

log() { printf 'codecs: %s\n' "$*" >&2; }
fail() { log "FAIL: $*"; exit 1; }
e2e() { python3 "$E2E" "$@"; }
h() { python3 "$H" "$@"; }
STOP_WAIT_TENTHS=100
# shellcheck source=tests/e2e/lib/common.sh
. "$REPO/tests/e2e/lib/common.sh"
# shellcheck source=bench/lib/common.sh
. "$REPO/bench/lib/common.sh"

install_e2e_tools
if ! command -v zstd >/dev/null; then
  log "installing zstd (apt)"
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq zstd >/dev/null
fi
mkdir -p "$DIR" "$OUT"
rm -f "$OUT"/*.json
log "building (release)"
(cd "$REPO" && cargo build --release --quiet)
cp "$REPO/target/release/kafka-s3-sink-bench" "$OUT/s3-server-bin"
S3S_BIN="$OUT/s3-server-bin"
EVENTS=$(bench_input "$N" "$DIR")
SIZE=$(stat -c %s "$EVENTS")

log "references: gzip -6 and zstd -3 on the whole file, one core"
h timed "$OUT/ref-gzip.json" -- sh -c "gzip -6 -c '$EVENTS' > '$OUT/ref.gz'"
h timed "$OUT/ref-zstd.json" -- sh -c "zstd -3 -q -c -T1 '$EVENTS' > '$OUT/ref.zst'"
GZ_BYTES=$(stat -c %s "$OUT/ref.gz")
ZST_BYTES=$(stat -c %s "$OUT/ref.zst")
rm -f "$OUT/ref.gz" "$OUT/ref.zst"

KAFKA_PORT=$(e2e port)
HTTP_PORT=$(e2e port)
TOPIC="codecs-$(date +%s)-$$"
start_tansu "$KAFKA_PORT" "$OUT/tansu.log"
tansu_topic "$KAFKA_PORT" "$TOPIC" "$PARTITIONS" "$OUT/topic.log"
log "producing $N events into $TOPIC ($PARTITIONS partitions)"
e2e produce "127.0.0.1:$KAFKA_PORT" "$TOPIC" "$EVENTS" "$PARTITIONS" "$OUT/produced.json" 0 "$N" >/dev/null

for r in $(seq "$ROUNDS"); do
  for codec in "${CODECS[@]}"; do
    name="drain-r$r-${codec/:/-}"
    start_s3s "$OUT/s3fs-$name" codecs
    drain_config "$OUT/$name.toml" "$TOPIC-$name" codecs
    case "$codec" in
      parquet:*)
        # The preset's [destinations.parquet] table (to the end of the file), raw column or not.
        printf '\n[destinations.batch]\nformat = "parquet"\n\n' >>"$OUT/$name.toml"
        sed -n '/^\[destinations.parquet\]/,$p' "$REPO/examples/parquet.toml" |
          if [ "$codec" = parquet:columns ]; then grep -v '^raw_column'; else cat; fi >>"$OUT/$name.toml"
        ;;
      *)
        printf '\n[destinations.batch]\ncompression = "%s"\ncompression_level = %s\n' \
          "${codec%%:*}" "${codec##*:}" >>"$OUT/$name.toml"
        ;;
    esac
    log "round $r: $codec"
    h drain "$BIN" "$OUT/$name.toml" "http://127.0.0.1:$HTTP_PORT/metrics" "$N" \
      "$OUT/$name.json" "$TANSU_PID" "$S3S_PID" >/dev/null
    stored=$(find "$OUT/s3fs-$name/codecs" -type f ! -name '.*' -printf '%s\n' | awk '{s+=$1} END {print s+0}')
    python3 - "$OUT/$name.json" "$codec" "$stored" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
d["codec"], d["stored_bytes"] = sys.argv[2], int(sys.argv[3])
json.dump(d, open(sys.argv[1], "w"))
EOF
    stopped "$S3S_PID"
    rm -rf "$OUT/s3fs-$name"
  done
done
stopped "$TANSU_PID"

python3 - "$OUT" "$SIZE" "$GZ_BYTES" "$ZST_BYTES" "${CODECS[@]}" <<'EOF'
import glob, json, statistics, sys
out, size, gz_bytes, zst_bytes = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
codecs = sys.argv[5:]
ref = {k: json.load(open(f"{out}/ref-{k}.json")) for k in ("gzip", "zstd")}
runs = {c: [json.load(open(f)) for f in sorted(glob.glob(f"{out}/drain-r*-{c.replace(':', '-')}.json"))] for c in codecs}
rate = {c: statistics.mean(size / 1e6 / r["connector_cpu_secs"] for r in rs) for c, rs in runs.items()}
base = rate[codecs[0]]
print(f"Input {size / 1e6:,.1f} MB; references on the whole file, one core: `gzip -6` "
      f"{size / 1e6 / ref['gzip']['cpu_secs']:,.1f} MB per CPU-s, ratio {size / gz_bytes:.2f}; "
      f"`zstd -3` {size / 1e6 / ref['zstd']['cpu_secs']:,.1f} MB per CPU-s, ratio {size / zst_bytes:.2f}.")
print()
print("| codec | drains | MB per CPU-s (mean; each) | ÷ gzip-6 drains | compression ratio | ÷ `gzip -6`'s ratio | stored ÷ gzip-6 drains' |")
print("| --- | ---: | --- | ---: | ---: | ---: | ---: |")
stored_base = statistics.mean(r["stored_bytes"] for r in runs[codecs[0]])
summary = {}
for c, rs in runs.items():
    each = ", ".join(f"{size / 1e6 / r['connector_cpu_secs']:,.1f}" for r in rs)
    ratio = statistics.mean(size / r["stored_bytes"] for r in rs)
    summary[c] = {"mb_per_cpu_sec": rate[c], "vs_gzip6_drains": rate[c] / base,
                  "compression_ratio": ratio, "vs_gzip6_cli_ratio": ratio / (size / gz_bytes)}
    stored = statistics.mean(r["stored_bytes"] for r in rs)
    summary[c]["stored_vs_gzip6_drains"] = stored / stored_base
    print(f"| {c} | {len(rs)} | {rate[c]:,.1f} ({each}) | {rate[c] / base:.2f} | {ratio:.2f} | "
          f"{ratio / (size / gz_bytes):.2f} | {stored / stored_base:.2f} |")
json.dump(summary, open(f"{out}/summary.json", "w"))
EOF
