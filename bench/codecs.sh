#!/usr/bin/env bash
# Compression codecs and levels end to end (BENCHMARKS.md, "Codecs"): the same tansu topic
# drained by the real binary into the crate's s3s-fs server with each codec in turn, a fresh
# consumer group and server each time, every codec once per round; and the references
# `gzip -6`, `zstd -1` and `zstd -3` (the CLI tools, one core) on the same input file in the same
# run. Prints, per codec: input MB per CPU-second of the connector (mean of the rounds, and each),
# the ratio to the gzip-6 drains, the stored ratio (input bytes ÷ bytes that reached S3) and
# that ratio against `gzip -6`'s on the whole file. Not a test: no thresholds.
#
# Codecs (CODECS, space-separated; the gzip-6 drains are the base when listed, else the first):
#   gzip:L              NDJSON, compression = "gzip", compression_level = L
#   zstd:L              NDJSON, compression = "zstd", compression_level = L
#   parquet:L           Parquet with examples/parquet.toml's [destinations.parquet] (12 columns
#                       and the raw-JSON column), zstd level L columns
#   parquet-columns:L   the same without the raw-JSON column
# The default is every level a user is likely to pick:
#   gzip:1 gzip:3 gzip:5 gzip:6 gzip:9 zstd:1 zstd:2 zstd:3 zstd:6 parquet:1 parquet:3
#
#   bash bench/codecs.sh                   # N=500000, 3 rounds, the default codecs
#   N=200000 ROUNDS=2 bash bench/codecs.sh
#   CODECS="gzip:6 zstd:1 parquet-columns:1" bash bench/codecs.sh   # some of them
#
# Results go to $BENCH_DIR/codecs-$N/ (one JSON per drain, summary.json, table.md). Installs what
# is missing (tests/e2e/lib/common.sh, and Debian's zstd for the reference); every process
# started is stopped by its PID.
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
read -r -a CODECS <<<"${CODECS:-gzip:1 gzip:3 gzip:5 gzip:6 gzip:9 zstd:1 zstd:2 zstd:3 zstd:6 parquet:1 parquet:3}"
for codec in "${CODECS[@]}"; do
  case "$codec" in
    gzip:[0-9] | zstd:[1-9] | zstd:1[0-9] | parquet:[1-9] | parquet:1[0-9] | parquet:2[0-2] | \
      parquet-columns:[1-9] | parquet-columns:1[0-9] | parquet-columns:2[0-2]) ;;
    *) printf 'codecs: unknown codec %q; use gzip:0-9, zstd:1-19, parquet:1-22 or parquet-columns:1-22\n' "$codec" >&2
       exit 2 ;;
  esac
done

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

log "references: gzip -6, zstd -1 and zstd -3 on the whole file, one core"
h timed "$OUT/ref-gzip6.json" -- sh -c "gzip -6 -c '$EVENTS' > '$OUT/ref.gz'"
h timed "$OUT/ref-zstd1.json" -- sh -c "zstd -1 -q -c -T1 '$EVENTS' > '$OUT/ref1.zst'"
h timed "$OUT/ref-zstd3.json" -- sh -c "zstd -3 -q -c -T1 '$EVENTS' > '$OUT/ref3.zst'"
REF_BYTES="$(stat -c %s "$OUT/ref.gz") $(stat -c %s "$OUT/ref1.zst") $(stat -c %s "$OUT/ref3.zst")"
rm -f "$OUT/ref.gz" "$OUT/ref1.zst" "$OUT/ref3.zst"

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
      parquet*)
        # The preset's [destinations.parquet] table (to the end of the file) at the codec's
        # level, raw column or not.
        printf '\n[destinations.batch]\nformat = "parquet"\n\n' >>"$OUT/$name.toml"
        sed -n '/^\[destinations.parquet\]/,$p' "$REPO/examples/parquet.toml" |
          sed "s/^compression_level = .*/compression_level = ${codec##*:}/" |
          if [ "${codec%%:*}" = parquet-columns ]; then grep -v '^raw_column'; else cat; fi \
            >>"$OUT/$name.toml"
        grep -q "^compression_level = ${codec##*:}\$" "$OUT/$name.toml" ||
          fail "examples/parquet.toml has no compression_level line to set"
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

python3 - "$OUT" "$SIZE" $REF_BYTES "${CODECS[@]}" <<'EOF' | tee "$OUT/table.md"
import glob, json, statistics, sys
out, size = sys.argv[1], int(sys.argv[2])
ref_bytes = dict(zip(("gzip6", "zstd1", "zstd3"), map(int, sys.argv[3:6])))
codecs = sys.argv[6:]
ref = {k: json.load(open(f"{out}/ref-{k}.json")) for k in ref_bytes}
runs = {c: [json.load(open(f)) for f in sorted(glob.glob(f"{out}/drain-r*-{c.replace(':', '-')}.json"))] for c in codecs}
rate = {c: statistics.mean(size / 1e6 / r["connector_cpu_secs"] for r in rs) for c, rs in runs.items()}
base_codec = "gzip:6" if "gzip:6" in codecs else codecs[0]
base = rate[base_codec]
stored_base = statistics.mean(r["stored_bytes"] for r in runs[base_codec])
gz6_ratio = size / ref_bytes["gzip6"]
print(f"Input {size / 1e6:,.1f} MB. References on the whole file, one core: " + "; ".join(
    f"`{cmd}` {size / 1e6 / ref[k]['cpu_secs']:,.1f} MB per CPU-s, ratio {size / ref_bytes[k]:.2f}"
    for k, cmd in (("gzip6", "gzip -6"), ("zstd1", "zstd -1 -T1"), ("zstd3", "zstd -3 -T1"))) + ".")
print()
print(f"| codec | drains | MB of input per CPU-s (mean; each) | CPU-s per GB | ÷ {base_codec} drains | stored ratio | ÷ `gzip -6`'s ratio | stored ÷ {base_codec} drains' |")
print("| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: |")
summary = {"input_bytes": size, "base": base_codec, "references": {
    k: {"mb_per_cpu_sec": size / 1e6 / ref[k]["cpu_secs"], "ratio": size / ref_bytes[k]} for k in ref_bytes}, "codecs": {}}
for c, rs in runs.items():
    each = ", ".join(f"{size / 1e6 / r['connector_cpu_secs']:,.1f}" for r in rs)
    stored = statistics.mean(r["stored_bytes"] for r in rs)
    ratio = size / stored
    summary["codecs"][c] = {"mb_per_cpu_sec": rate[c], "each": [size / 1e6 / r["connector_cpu_secs"] for r in rs],
                            "vs_base_drains": rate[c] / base, "stored_ratio": ratio,
                            "vs_gzip6_cli_ratio": ratio / gz6_ratio, "stored_vs_base_drains": stored / stored_base}
    print(f"| {c} | {len(rs)} | {rate[c]:,.1f} ({each}) | {1000 / rate[c]:.1f} | {rate[c] / base:.2f} | "
          f"{ratio:.2f} | {ratio / gz6_ratio:.2f} | {stored / stored_base:.2f} |")
json.dump(summary, open(f"{out}/summary.json", "w"), indent=1)
EOF
