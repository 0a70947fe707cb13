#!/usr/bin/env bash
# Folder cardinality (BENCHMARKS.md, "Folder cardinality"): records each in an hour of their
# own, spread over more than 20 years (a backfill), through one worker with a 64 MiB memory
# budget, against the same number of ordinary events (three days) through the same setup in the
# same run. Real processes on loopback: a tansu broker (1 partition), the release binary
# (`run`, then `verify`) and the crate's s3s-fs server. Not a test: no thresholds.
#
#   bash bench/cardinality.sh              # N=200000
#   N=20000 bash bench/cardinality.sh      # quick
#   INPUTS=spread bash bench/cardinality.sh  # the spread drain alone
#
# Prints, per input: records, objects written, flushes by reason, the connector's CPU seconds
# and CPU per record, its peak RSS, an independent count of every record in S3 (every object
# read, each input event's messageId found once) and verify's verdict (up to
# VERIFY_MAX_OBJECTS objects, default 50,000: beyond it the s3s-fs test server's listing takes
# hours); then the same objects, read back from the server's folder, sent again to the same
# server under baseline/ with a bare aws-sdk-s3 PutObject each (`kafka-s3-sink-bench
# put-baseline`, as many in flight as the connector's [upload] concurrency) and that process's
# CPU per object. Last: the ratio of CPU per record, spread over ordinary, and for each input
# peak RSS against budget + 48 MiB and connector CPU per object against the baseline's
# (target <= 2x). Results go to $BENCH_DIR/cardinality-$N/.
# Installs what is missing (tests/e2e/lib/common.sh); every process started is stopped by its
# PID; every wait has a deadline.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
E2E="$REPO/tests/e2e/e2e_helpers.py"
H="$REPO/bench/bench_helpers.py"
N=${N:-200000}
BUDGET=${BUDGET:-67108864}
VERIFY_MAX_OBJECTS=${VERIFY_MAX_OBJECTS:-50000}
# The connector's [upload] concurrency (its default; drain_config leaves it unset).
CONCURRENCY=8
DIR=${BENCH_DIR:-$REPO/target/bench}
OUT="$DIR/cardinality-$N"
BIN="$REPO/target/release/kafka-s3-sink"

log() { printf 'cardinality: %s\n' "$*" >&2; }
fail() { log "FAIL: $*"; show_logs "$OUT"; exit 1; }
e2e() { python3 "$E2E" "$@"; }
h() { python3 "$H" "$@"; }
STOP_WAIT_TENTHS=100
# shellcheck source=tests/e2e/lib/common.sh
. "$REPO/tests/e2e/lib/common.sh"
# shellcheck source=bench/lib/common.sh
. "$REPO/bench/lib/common.sh"

install_e2e_tools
mkdir -p "$OUT"
rm -f "$OUT"/*.json
log "building (release)"
(cd "$REPO" && cargo build --release --quiet)
cp "$REPO/target/release/kafka-s3-sink-bench" "$OUT/s3-server-bin"
S3S_BIN="$OUT/s3-server-bin"

# One event per hour: N events over N hours (late_pct 0, so each keeps its place), from 2004.
DAYS=$(python3 -c "print($N / 24)")
"$BIN" gen-events --count "$N" --seed 42 --start 2004-01-01T00:00:00Z --days "$DAYS" \
  --late-pct 0 --out "$OUT/spread.ndjson"
"$BIN" gen-events --count "$N" --seed 42 --out "$OUT/ordinary.ndjson"
python3 - "$OUT/spread.ndjson" <<'EOF'
import json, sys
hours = {json.loads(l)["timestamp"][:13] for l in open(sys.argv[1])}
first, last = min(hours), max(hours)
print(f"cardinality: spread input: {len(hours)} distinct hours from {first} to {last}", file=sys.stderr)
EOF

KAFKA_PORT=$(e2e port)
HTTP_PORT=$(e2e port)
start_tansu "$KAFKA_PORT" "$OUT/tansu.log"

INPUTS=${INPUTS:-ordinary spread}
for input in $INPUTS; do
  TOPIC="card-$input-$(date +%s)-$$"
  tansu_topic "$KAFKA_PORT" "$TOPIC" 1 "$OUT/topic-$input.log"
  log "$input: producing $N events into $TOPIC"
  e2e produce "127.0.0.1:$KAFKA_PORT" "$TOPIC" "$OUT/$input.ndjson" 1 "$OUT/produced-$input.json" 0 "$N" >/dev/null
  start_s3s "$OUT/s3fs-$input" card
  drain_config "$OUT/$input.toml" "$TOPIC-g" card
  # One worker with the budget; time enough to upload every file still open at SIGTERM.
  sed -i -e "s/^\[pipeline\]$/[pipeline]\nmemory_budget_bytes = $BUDGET\nworkers = 1/" \
    -e 's/^shutdown_deadline_secs = .*/shutdown_deadline_secs = 900/' "$OUT/$input.toml"
  log "$input: draining with a $BUDGET-byte budget, one worker"
  h drain "$BIN" "$OUT/$input.toml" "http://127.0.0.1:$HTTP_PORT/metrics" "$N" \
    "$OUT/drain-$input.json" "$TANSU_PID" "$S3S_PID" >/dev/null
  objects=$(find "$OUT/s3fs-$input/card" -type f ! -name '.*' | wc -l)
  vrc=0
  if [ "$objects" -le "$VERIFY_MAX_OBJECTS" ]; then
    log "$input: verify ($objects objects)"
    "$BIN" verify --config "$OUT/$input.toml" --json >"$OUT/verify-$input.json" 2>"$OUT/verify-$input.log" || vrc=$?
  else
    # The s3s-fs test server walks every file for each 1,000-key page of a listing: verify
    # over 200,000 objects takes hours there (not against S3). The independent count below
    # still checks every record.
    log "$input: verify skipped ($objects objects > VERIFY_MAX_OBJECTS=$VERIFY_MAX_OBJECTS)"
    vrc=-1
  fi
  [ -s "$OUT/verify-$input.json" ] || echo '{}' >"$OUT/verify-$input.json"
  # An independent count (tansu's high watermark can lag its log, which bounds verify's range):
  # every object gunzipped, every input event's messageId found exactly once.
  python3 - "$OUT/$input.ndjson" "$OUT/s3fs-$input/card" "$OUT/count-$input.json" <<'EOF2'
import collections, gzip, json, os, sys
events, root, out = sys.argv[1:4]
want = collections.Counter(json.loads(l)["messageId"] for l in open(events))
got = collections.Counter()
for d, _, files in os.walk(root):
    for f in files:
        if f.startswith("."):
            continue
        data = open(os.path.join(d, f), "rb").read()
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
        for line in data.splitlines():
            if line.strip():
                got[json.loads(line).get("messageId")] += 1
res = {"events": sum(want.values()), "in_s3": sum(got.values()),
       "missing": sum((want - got).values()), "duplicated": sum((got - want).values())}
json.dump(res, open(out, "w"))
print("cardinality: independent count:", json.dumps(res), file=sys.stderr)
EOF2
  # After the count, so it does not see the copies.
  log "$input: bare PutObject baseline ($objects objects, $CONCURRENCY in flight)"
  "$S3S_BIN" put-baseline --dir "$OUT/s3fs-$input/card" --endpoint "$S3S_URL" --bucket card \
    --prefix baseline/ --concurrency "$CONCURRENCY" >"$OUT/baseline-$input.json" 2>"$OUT/baseline-$input.log" ||
    fail "put-baseline failed (see $OUT/baseline-$input.log)"
  python3 - "$OUT" "$input" "$N" "$objects" "$vrc" <<'EOF'
import json, re, sys
out, name, n, objects, vrc = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
d = json.load(open(f"{out}/drain-{name}.json"))
flushes = {}
for line in open(f"{out}/drain-{name}.json.log", errors="replace"):
    m = re.search(r'flush: flush .*reason="?([a-z_]+)"?', line)
    if m:
        flushes[m.group(1)] = flushes.get(m.group(1), 0) + 1
v = json.load(open(f"{out}/verify-{name}.json"))
c = json.load(open(f"{out}/count-{name}.json"))
b = json.load(open(f"{out}/baseline-{name}.json"))
d.update({"input": name, "records": n, "objects": objects, "flushes": flushes, "baseline": b,
          "cpu_us_per_object": round(d["connector_cpu_secs"] / objects * 1e6, 1),
          "cpu_us_per_record": round(d["connector_cpu_secs"] / n * 1e6, 2),
          "count": c, "verify_exit": vrc, "verify": {k: v.get(k) for k in ("records", "expected", "found", "missing", "duplicated", "objects")} if v else None})
json.dump(d, open(f"{out}/result-{name}.json", "w"))
print(json.dumps(d))
EOF
  stopped "$S3S_PID"
  rm -rf "$OUT/s3fs-$input"
done
stopped "$TANSU_PID"

python3 - "$OUT" "$BUDGET" $INPUTS <<'EOF'
import json, sys
out, budget = sys.argv[1], int(sys.argv[2])
r = {n: json.load(open(f"{out}/result-{n}.json")) for n in sys.argv[3:]}
print("| input | records | objects | flushes by reason | CPU s | CPU µs / record | peak RSS MiB | in S3 (independent count) | verify |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for n, d in r.items():
    fl = ", ".join(f"{k} {v}" for k, v in sorted(d["flushes"].items()))
    v = d["verify"]
    vtext = (f"found {v['found']} of {v['expected']}, missing {v['missing']}, duplicated "
             f"{v['duplicated']} (exit {d['verify_exit']})" if v else "skipped")
    print(f"| {n} | {d['records']} | {d['objects']} | {fl} | {d['connector_cpu_secs']} | "
          f"{d['cpu_us_per_record']} | {d['connector_peak_rss_mib']} | "
          f"{d['count']['in_s3']} lines, missing {d['count']['missing']}, duplicated {d['count']['duplicated']} | {vtext} |")
if "spread" in r and "ordinary" in r:
    ratio = r["spread"]["cpu_us_per_record"] / r["ordinary"]["cpu_us_per_record"]
    print(f"\nCPU per record, spread ÷ ordinary: {ratio:.2f}")
print("\n| input | objects | peak RSS MiB | bound (budget + 48) MiB | within | connector CPU µs / object | bare PutObject CPU µs / object | ratio | within 2x |")
print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
for n, d in r.items():
    bound = budget / 2**20 + 48
    rss = d["connector_peak_rss_mib"]
    base = d["baseline"]["cpu_us_per_object"]
    x = d["cpu_us_per_object"] / base if base else float("inf")
    print(f"| {n} | {d['objects']} | {rss} | {bound:g} | {'yes' if rss <= bound else 'no'} | "
          f"{d['cpu_us_per_object']} | {base} ({d['baseline']['cpu_secs']} s) | {x:.2f} | "
          f"{'yes' if x <= 2 else 'no'} |")
EOF
