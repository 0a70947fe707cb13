#!/usr/bin/env bash
# Iceberg tables against Parquet objects (BENCHMARKS.md, "Iceberg tables"): the same tansu topic
# (N `gen-events` records, 4 partitions) drained by the real binary (2 workers, a 256 MiB
# budget unless BUDGET_MIB says otherwise) into the crate's s3s-fs server, in turns, each drain
# with a fresh consumer group and server:
#   parquet-<f>   `batch.format = "parquet"` with examples/parquet.toml's destination (its
#                 columns, raw column and `kafka_metadata_field`), folders <f> (PARQUET_FOLDERS,
#                 default "hour day none"): hour is the preset's dt=/hr= template, day dt= only,
#                 none no folders;
#   table-<t>     the same columns as an `[destinations.iceberg]` table (no folder template),
#                 sqlite catalog in the results folder, warehouse s3://<bucket>/warehouse,
#                 partition_time <t> (TABLE_PARTITIONS, default "hour day none"), the default
#                 commit_interval_secs (60);
# ROUNDS times (default 3). Then paced drains of the hour table, each on a topic of its own
# produced at a steady rate while the connector runs:
#   commits          commit_interval_secs COMMIT_INTERVAL (default 1), COMMIT_RECORDS records
#                    (default 120,000) at COMMIT_RATE/s (default 1,500), files closed
#                    COMMIT_MAX_AGE seconds (default 2) after their first record or 1 s after
#                    their last, so that commits have files to take: commit latency, snapshots
#                    and metadata files per commit;
#   steady           commit_interval_secs STEADY_INTERVAL (default 10), STEADY_RECORDS records
#                    (default 135,000; 0 skips both) at STEADY_RATE/s (default 1,500), files
#                    closed STEADY_MAX_AGE seconds (default 30) after their first record
#                    (idle_secs the connector's 30): how often commits land under continuous
#                    traffic with file rotation longer than the interval;
#   steady-in-order  the same with `gen-events --late-pct 0` records (no late events).
# A sampler reads /metrics every second during each drain (NAME.samples): the longest time the
# records consumed stood still before all were in is reported as the longest intake pause.
#
# Prints, per drain: MB of input per connector CPU-second and its ratio to the Parquet-object
# preset drains of the same run (the issue's target: >= 0.9; PARQUET_FOLDERS must hold hour) and
# to the Parquet drains with the table's folders, drain seconds, the longest intake pause, peak
# RSS against the bound (budget + 48 MiB), data files (table) or objects (Parquet path); for the
# tables, the commits and their latency (p50 / p99 / max, from the connector's `table commit ...
# secs=` log lines), the snapshots and metadata files written, and a correctness check: the current
# snapshot's total-records equals the records the connector wrote to data files, and that plus
# the quarantined records equals N (from the connector's flush log lines). Last: snapshots and
# metadata files per hour at the default interval (per worker 3600 / 60 snapshots; metadata
# files per snapshot as measured in the paced drain). Not a test: no thresholds, but the exit
# status is 3 when a drain's counts are wrong.
#
#   bash bench/iceberg.sh          # N=500000, 3 rounds: about 11 minutes on 2 busy cores
#   N=200000 ROUNDS=1 TABLE_PARTITIONS=hour PARQUET_FOLDERS=hour STEADY_RECORDS=0 bash bench/iceberg.sh
#   KAFKA_S3_SINK_BIN=... KAFKA_S3_SINK_BENCH_BIN=... bash bench/iceberg.sh   # given binaries
#   BUDGET_MIB=32 bash bench/iceberg.sh   # another memory budget (default 256 MiB)
#
# KAFKA_S3_SINK_BIN / KAFKA_S3_SINK_BENCH_BIN: the connector and the benchmark binary (its
# `s3-server`); when both are set nothing is built, else `cargo build --release`. Results go to
# $BENCH_DIR/iceberg-$N/ (one JSON per drain with its log and config, table.md). Installs what
# is missing (tests/e2e/lib/common.sh); every process started is stopped by its PID; every wait
# has a deadline.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
E2E="$REPO/tests/e2e/e2e_helpers.py"
H="$REPO/bench/bench_helpers.py"
N=${N:-500000}
ROUNDS=${ROUNDS:-3}
PARTITIONS=4
WORKERS=2
BUDGET=$(( ${BUDGET_MIB:-256} * 1048576 ))
read -r -a TABLE_PARTITIONS <<<"${TABLE_PARTITIONS:-hour day none}"
read -r -a PARQUET_FOLDERS <<<"${PARQUET_FOLDERS:-hour day none}"
COMMIT_INTERVAL=${COMMIT_INTERVAL:-1}
COMMIT_RECORDS=${COMMIT_RECORDS:-120000}
COMMIT_RATE=${COMMIT_RATE:-1500}
COMMIT_MAX_AGE=${COMMIT_MAX_AGE:-2}
STEADY_RECORDS=${STEADY_RECORDS:-135000}
STEADY_RATE=${STEADY_RATE:-1500}
STEADY_INTERVAL=${STEADY_INTERVAL:-10}
STEADY_MAX_AGE=${STEADY_MAX_AGE:-30}
DIR=${BENCH_DIR:-$REPO/target/bench}
OUT="$DIR/iceberg-$N"
BUCKET=bench
for t in "${TABLE_PARTITIONS[@]}" "${PARQUET_FOLDERS[@]}"; do
  case "$t" in
    hour | day | none) ;;
    *) printf 'iceberg: unknown partition_time or folders %q; use hour, day or none\n' "$t" >&2
       exit 2 ;;
  esac
done

log() { printf 'iceberg: %s\n' "$*" >&2; }
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
rm -f "$OUT"/*.json "$OUT"/*.log "$OUT"/*.metrics "$OUT"/*.samples "$OUT"/*.toml "$OUT"/*.db "$OUT"/*.stop
if [ -n "${KAFKA_S3_SINK_BIN:-}" ] && [ -n "${KAFKA_S3_SINK_BENCH_BIN:-}" ]; then
  BIN=$KAFKA_S3_SINK_BIN
  BENCH_BIN=$KAFKA_S3_SINK_BENCH_BIN
else
  log "building (release)"
  (cd "$REPO" && cargo build --release --quiet --bin kafka-s3-sink --bin kafka-s3-sink-bench)
  BIN=${KAFKA_S3_SINK_BIN:-$REPO/target/release/kafka-s3-sink}
  BENCH_BIN=${KAFKA_S3_SINK_BENCH_BIN:-$REPO/target/release/kafka-s3-sink-bench}
fi
export KAFKA_S3_SINK_BIN=$BIN # bench_input's generator
cp "$BENCH_BIN" "$OUT/s3-server-bin"
S3S_BIN="$OUT/s3-server-bin"
EVENTS=$(bench_input "$N" "$DIR")
SIZE=$(stat -c %s "$EVENTS")

KAFKA_PORT=$(e2e port)
HTTP_PORT=$(e2e port)
TOPIC="iceberg-$(date +%s)-$$"
start_tansu "$KAFKA_PORT" "$OUT/tansu.log"
tansu_topic "$KAFKA_PORT" "$TOPIC" "$PARTITIONS" "$OUT/topic.log"
log "producing $N events into $TOPIC ($PARTITIONS partitions)"
e2e produce "127.0.0.1:$KAFKA_PORT" "$TOPIC" "$EVENTS" "$PARTITIONS" "$OUT/produced.json" 0 "$N" >/dev/null

# config NAME KIND [INTERVAL]: $OUT/NAME.toml draining TOPIC into the s3s-fs server at $S3S_URL;
# KIND is parquet:<folders> (examples/parquet.toml's destination; folders hour: its dt=/hr=
# template, day: dt= only, none: no folders) or table:<partition_time> (the same columns as an
# Iceberg table, catalog at $OUT/NAME.db, commit_interval_secs INTERVAL when given)
config() {
  local name=$1 kind=$2 interval=${3:-} f="$OUT/$1.toml"
  drain_config "$f" "$TOPIC-$name" "$BUCKET"
  sed -i -e "s/^\[pipeline\]$/[pipeline]\nmemory_budget_bytes = $BUDGET\nworkers = $WORKERS/" \
    -e 's/^force_path_style = true$/force_path_style = true\nkafka_metadata_field = "_kafka"/' "$f"
  # The preset's routing (less its folder template for a table), batch and parquet tables.
  printf '\n' >>"$f"
  sed -n '/^\[destinations.routing\]/,$p' "$REPO/examples/parquet.toml" |
    case "$kind" in
      parquet:hour) cat ;;
      parquet:day) sed 's|^folder_template = .*|folder_template = "dt=%Y-%m-%d/"|' ;;
      parquet:none) sed 's|^folder_template = .*|folder_template = ""|' ;;
      *) grep -v '^folder_template' ;;
    esac >>"$f"
  grep -q '^kafka_metadata_field = "_kafka"$' "$REPO/examples/parquet.toml" ||
    fail "examples/parquet.toml no longer sets kafka_metadata_field = \"_kafka\""
  if [ "${kind%%:*}" = parquet ]; then
    grep -q '^folder_template = ' "$f" || fail "examples/parquet.toml has no folder_template"
    sed -i 's/^bucket = .*/&\nprefix = "events"/' "$f"
    return
  fi
  cat >>"$f" <<CONF

[destinations.iceberg]
namespace = "analytics"
table = "events"
partition_time = "${kind#table:}"
${interval:+commit_interval_secs = $interval}

[destinations.iceberg.catalog]
kind = "sql"
uri = "sqlite://$OUT/$name.db?mode=rwc"
warehouse = "s3://$BUCKET/warehouse"
CONF
}

# analyse NAME KIND RECORDS INPUT_BYTES: adds to $OUT/NAME.json what the server's folder, the
# catalog and the connector's log say about the drain
analyse() {
  python3 - "$OUT" "$1" "$2" "$3" "$4" "$OUT/s3fs-$1/$BUCKET" "$BUCKET" <<'EOF'
import datetime, json, os, re, sqlite3, sys
out, name, kind, records, size, root, bucket = sys.argv[1:8]
records, size = int(records), int(size)
d = json.load(open(f"{out}/{name}.json"))
d.update(name=name, kind=kind, records=records, input_bytes=size,
         mb_per_cpu_sec=size / 1e6 / d["connector_cpu_secs"])
written = quarantined = 0
flushes = {}
commits = []
outcomes = {}
warnings = errors = 0
for line in open(f"{out}/{name}.json.log", errors="replace"):
    if " WARN " in line:
        warnings += 1
    if " ERROR " in line:
        errors += 1
    m = re.search(r'\bflush\b.*\breason="?([a-z_]+)"?.*\bkey=(\S+).*\brecords=(\d+)', line)
    if m:
        n = int(m.group(3))
        if "_errors/" in m.group(2):
            quarantined += n
        else:
            written += n
            flushes[m.group(1)] = flushes.get(m.group(1), 0) + 1
        continue
    if "table commit" in line and "refused" not in line:
        secs = re.search(r'\bsecs=([0-9.e-]+)', line)
        files = re.search(r'\bfiles=(\d+)', line)
        outcome = re.search(r'\boutcome="?([a-z_]+)', line)
        if secs and files:
            at = datetime.datetime.fromisoformat(line.split()[0].replace("Z", "+00:00")).timestamp()
            commits.append((float(secs.group(1)), int(files.group(1)), at))
            o = outcome.group(1) if outcome else "?"
            outcomes[o] = outcomes.get(o, 0) + 1
d.update(records_written=written, records_quarantined=quarantined, flushes=flushes,
         log_warnings=warnings, log_errors=errors)
metrics = {}
try:
    for line in open(f"{out}/{name}.json.metrics"):
        if line.startswith("kafka_s3_sink_table_commit") or line.startswith("kafka_s3_sink_records_"):
            head, _, v = line.rpartition(" ")
            metrics[head] = float(v)
except OSError:
    pass
d["metrics_before_sigterm"] = metrics
# The longest time the records consumed stood still before all were in (sampled every second).
pause = 0.0
try:
    samples = [json.loads(l) for l in open(f"{out}/{name}.samples")]
    since = None
    for smp in samples:
        c = smp.get("kafka_s3_sink_records_consumed_total", 0)
        if c <= 0 or c >= records:
            since = None
            continue
        if since is None or c != since[1]:
            since = (smp["t"], c)
        pause = max(pause, smp["t"] - since[0])
except OSError:
    pass
d["longest_intake_pause_secs"] = round(pause, 1)
objects = []
for dirpath, _, files in os.walk(root):
    for f in files:
        if not f.startswith("."):
            path = os.path.join(dirpath, f)
            objects.append((os.path.relpath(path, root), os.path.getsize(path)))
if kind.startswith("parquet"):
    data = [o for o in objects if o[0].endswith(".parquet") and "/_errors/" not in "/" + o[0]]
    d.update(data_files=len(data), data_bytes=sum(s for _, s in data),
             correct=written + quarantined == records)
else:
    db = sqlite3.connect(f"{out}/{name}.db")
    (loc,) = db.execute("SELECT metadata_location FROM iceberg_tables").fetchone()
    db.close()
    prefix = f"s3://{bucket}/"
    assert loc.startswith(prefix), loc
    meta_key = loc[len(prefix):]
    table_dir = meta_key.rsplit("/metadata/", 1)[0]
    meta = json.load(open(os.path.join(root, meta_key)))
    cur = next(s for s in meta["snapshots"] if s["snapshot-id"] == meta["current-snapshot-id"])
    summ = cur["summary"]
    in_meta = [o for o in objects if o[0].startswith(table_dir + "/metadata/")]
    in_data = [o for o in objects if o[0].startswith(table_dir + "/data/")]
    secs = sorted(c[0] for c in commits)
    q = lambda p: secs[min(len(secs) - 1, int(p * len(secs)))] if secs else None
    total = int(summ.get("total-records", -1))
    # A commit retried after a concurrent one (or a failed swap) leaves the manifest list and
    # metadata.json of its lost attempt behind: files no snapshot or metadata log references.
    lists = {os.path.basename(s["manifest-list"]) for s in meta["snapshots"]}
    logged = {os.path.basename(e["metadata-file"]) for e in meta.get("metadata-log", [])}
    logged.add(os.path.basename(meta_key))
    d.update(
        snapshots=len(meta["snapshots"]),
        metadata_files=len(in_meta),
        metadata_json_files=sum(1 for k, _ in in_meta if k.endswith(".metadata.json")),
        manifest_lists=sum(1 for k, _ in in_meta if os.path.basename(k).startswith("snap-")),
        manifests=sum(1 for k, _ in in_meta if k.endswith(".avro") and not os.path.basename(k).startswith("snap-")),
        metadata_bytes=sum(s for _, s in in_meta),
        unreferenced_manifest_lists=sum(1 for k, _ in in_meta if os.path.basename(k).startswith("snap-")
                                        and os.path.basename(k) not in lists),
        unreferenced_metadata_json=sum(1 for k, _ in in_meta if k.endswith(".metadata.json")
                                       and os.path.basename(k) not in logged),
        last_metadata_json_bytes=os.path.getsize(os.path.join(root, meta_key)),
        data_files=int(summ.get("total-data-files", -1)),
        data_files_in_s3=len(in_data),
        data_bytes=sum(s for _, s in in_data),
        total_records=total,
        commits=len(commits), commit_outcomes=outcomes,
        commit_files=sum(c[1] for c in commits),
        commit_p50_secs=q(0.5), commit_p99_secs=q(0.99), commit_max_secs=secs[-1] if secs else None,
        commit_mean_secs=sum(secs) / len(secs) if secs else None,
        longest_without_commit_secs=max((b[2] - a[2] for a, b in zip(commits, commits[1:])), default=None),
        correct=(total == written and written + quarantined == records
                 and int(summ.get("total-data-files", -1)) == len(in_data)),
    )
json.dump(d, open(f"{out}/{name}.json", "w"))
print(f"iceberg: {name}: {d['mb_per_cpu_sec']:.1f} MB/CPU-s, drain {d['drain_secs']} s, "
      f"peak RSS {d['connector_peak_rss_mib']} MiB, files {d['data_files']}, "
      f"written {written} + quarantined {quarantined} of {records}"
      + (f", table total-records {d['total_records']}, {d['commits']} commits, "
         f"{d['snapshots']} snapshots, {d['metadata_files']} metadata files" if not kind.startswith("parquet") else "")
      + f", correct {d['correct']}", file=sys.stderr)
EOF
}

# sample NAME: samples the connector's /metrics every second into $OUT/NAME.samples (one JSON
# line each: records consumed, buffered bytes, open files, table commits) until stopped (or an
# hour); sets SAMPLER_PID
sample() {
  python3 - "http://127.0.0.1:$HTTP_PORT/metrics" "$OUT/$1.samples" <<'EOF' &
import json, signal, sys, time, urllib.request
url, out = sys.argv[1:3]
stop = []
signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
keep = ("kafka_s3_sink_records_consumed_total", "kafka_s3_sink_buffered_bytes",
        "kafka_s3_sink_open_files", "kafka_s3_sink_table_commits_total")
end = time.monotonic() + 3600
with open(out, "w") as f:
    while not stop and time.monotonic() < end:
        t = time.time()
        try:
            text = urllib.request.urlopen(url, timeout=2).read().decode()
        except OSError:
            text = ""
        vals = {}
        for line in text.splitlines():
            name = line.split("{")[0].split(" ")[0]
            if name in keep:
                vals[name] = vals.get(name, 0) + float(line.rsplit(" ", 1)[1])
        if vals:
            f.write(json.dumps({"t": t, **vals}) + "\n")
            f.flush()
        time.sleep(max(0.0, 1 - (time.time() - t)))
EOF
  SAMPLER_PID=$!
  started "$SAMPLER_PID"
}

# drain NAME KIND [INTERVAL]: one drain of the whole topic
drain() {
  local name=$1 kind=$2
  start_s3s "$OUT/s3fs-$name" "$BUCKET"
  config "$name" "$kind" "${3:-}"
  log "$name: draining ($kind)"
  sample "$name"
  h drain "$BIN" "$OUT/$name.toml" "http://127.0.0.1:$HTTP_PORT/metrics" "$N" \
    "$OUT/$name.json" "$TANSU_PID" "$S3S_PID" >/dev/null || fail "$name: drain failed (see $OUT/$name.json.log)"
  stopped "$SAMPLER_PID"
  analyse "$name" "$kind" "$N" "$SIZE"
  stopped "$S3S_PID"
  rm -rf "$OUT/s3fs-$name"
}

for r in $(seq "$ROUNDS"); do
  for t in "${PARQUET_FOLDERS[@]}"; do
    drain "r$r-parquet-$t" "parquet:$t"
  done
  for t in "${TABLE_PARTITIONS[@]}"; do
    drain "r$r-table-$t" "table:$t"
  done
done

# paced NAME RECORDS RATE INTERVAL MAX_AGE IDLE [LATE_PCT]: a drain of the hour table on a topic
# of its own, RECORDS records produced at RATE/s while the connector runs, committing every
# INTERVAL seconds, files closed MAX_AGE seconds after their first record (and IDLE after their
# last; "-": the connector's 30). The records are the first of the bench input, or with LATE_PCT
# those of `gen-events --late-pct LATE_PCT` (same seed, over the span of event time the first
# RECORDS of the bench input cover).
paced() {
  local name=$1 records=$2 rate=$3 interval=$4 max_age=$5 idle=${6#-} late=${7:-}
  local topic="$TOPIC-$1" input="$OUT/$1.ndjson" deadline
  if [ -n "$late" ]; then
    # The span of event time the same number of records of the bench input covers.
    "$BIN" gen-events --count "$records" --seed 42 --late-pct "$late" \
      --days "$(python3 -c "print(3 * $records / $N)")" --out "$input"
  else
    head -n "$records" "$EVENTS" >"$input"
  fi
  [ "$(wc -l <"$input")" -eq "$records" ] || fail "$name: the input has fewer than $records lines"
  tansu_topic "$KAFKA_PORT" "$topic" "$PARTITIONS" "$OUT/topic-$name.log"
  start_s3s "$OUT/s3fs-$name" "$BUCKET"
  TOPIC=$topic config "$name" table:hour "$interval"
  sed -i -e "s/^max_age_secs = .*/max_age_secs = $max_age${idle:+\\nidle_secs = $idle}/" "$OUT/$name.toml"
  grep -q "^max_age_secs = $max_age\$" "$OUT/$name.toml" || fail "examples/parquet.toml has no max_age_secs line to set"
  log "$name: $records records at $rate/s, commit_interval_secs = $interval, max_age_secs = $max_age, idle_secs = ${idle:-30}"
  # The producer starts once the connector owns every partition (or after 120 s), so the drain
  # lasts about RECORDS / RATE seconds.
  (
    deadline=$((SECONDS + 120))
    until [ "$(e2e owned "http://127.0.0.1:$HTTP_PORT/metrics" 2>/dev/null)" = "$PARTITIONS" ]; do
      [ "$SECONDS" -lt "$deadline" ] || break
      sleep 0.5
    done
    exec python3 "$E2E" produce-steady "127.0.0.1:$KAFKA_PORT" "$topic" "$input" "$PARTITIONS" \
      "$OUT/produced-$name.json" "$rate" "$OUT/$name.stop" "$((records / rate + 120))" 2>"$OUT/producer-$name.log"
  ) &
  PRODUCER_PID=$!
  started "$PRODUCER_PID"
  sample "$name"
  h drain "$BIN" "$OUT/$name.toml" "http://127.0.0.1:$HTTP_PORT/metrics" "$records" \
    "$OUT/$name.json" "$TANSU_PID" "$S3S_PID" >/dev/null || fail "$name: drain failed (see $OUT/$name.json.log)"
  stopped "$SAMPLER_PID"
  deadline=$((SECONDS + 90))
  while kill -0 "$PRODUCER_PID" 2>/dev/null; do
    [ "$SECONDS" -lt "$deadline" ] || fail "$name: the paced producer did not stop"
    sleep 0.5
  done
  wait "$PRODUCER_PID" || fail "$name: the paced producer failed (see $OUT/producer-$name.log)"
  forget "$PRODUCER_PID"
  analyse "$name" table:hour "$records" "$(stat -c %s "$input")"
  python3 - "$OUT/$name.json" "$rate" "$interval" "$max_age" "${idle:-30}" "${late:-2}" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
d.update(rate=int(sys.argv[2]), interval=int(sys.argv[3]), max_age=int(sys.argv[4]), idle=int(sys.argv[5]),
         late_pct=float(sys.argv[6]))
json.dump(d, open(sys.argv[1], "w"))
EOF
  stopped "$S3S_PID"
  rm -rf "$OUT/s3fs-$name" "$input"
}

paced commits "$COMMIT_RECORDS" "$COMMIT_RATE" "$COMMIT_INTERVAL" "$COMMIT_MAX_AGE" 1
if [ "$STEADY_RECORDS" -gt 0 ]; then
  paced steady "$STEADY_RECORDS" "$STEADY_RATE" "$STEADY_INTERVAL" "$STEADY_MAX_AGE" -
  paced steady-in-order "$STEADY_RECORDS" "$STEADY_RATE" "$STEADY_INTERVAL" "$STEADY_MAX_AGE" - 0
fi
stopped "$TANSU_PID"

python3 - "$OUT" "$N" "$BUDGET" "$WORKERS" <<'EOF' | tee "$OUT/table.md"
import glob, json, os, statistics, sys
out, n, budget, workers = sys.argv[1:5]
n, budget, workers = int(n), int(budget), int(workers)
bound = budget / 2**20 + 48
runs = [json.load(open(f)) for f in sorted(glob.glob(f"{out}/r*-*.json"))]
order = {"hour": 0, "day": 1, "none": 2}
kinds = sorted(dict.fromkeys(r["kind"] for r in runs),
               key=lambda k: (order[k.split(":")[1]], k.startswith("table")))
rate_of = lambda k: statistics.mean(r["mb_per_cpu_sec"] for r in runs if r["kind"] == k)
base = rate_of("parquet:hour")
size = runs[0]["input_bytes"]
ms = lambda s: "–" if s is None else f"{s * 1000:,.0f}"
yes = lambda b: "yes" if b else "**no**"
print(f"Input: {n:,} `gen-events` records, {size / 1e6:,.1f} MB, 4 partitions; {workers} workers, "
      f"{budget / 2**20:g} MiB budget (bound {bound:g} MiB).")
print()
print("| drain | rounds | MB of input per CPU-s (mean; each) | ÷ Parquet objects (preset) | ÷ Parquet objects, same folders | drain s (each) | "
      "longest intake pause s (each) | peak RSS MiB (max) | within bound | data files / objects (each) | "
      "commits (each) | commit p50 / p99 ms (each) | snapshots (each) | metadata files (each) | correct |")
print("| --- | ---: | --- | ---: | ---: | --- | --- | ---: | --- | --- | --- | --- | --- | --- | --- |")
summary = {"input_bytes": size, "records": n, "parquet_mb_per_cpu_sec": base, "drains": {}}
for k in kinds:
    rs = [r for r in runs if r["kind"] == k]
    rate_k = statistics.mean(r["mb_per_cpu_sec"] for r in rs)
    peak = max(r["connector_peak_rss_mib"] for r in rs)
    what, part = k.split(":")
    tab = what == "table"
    folders = {"hour": "dt=/hr= folders (examples/parquet.toml)", "day": "dt= folders", "none": "no folders"}
    label = (f"Iceberg table, partition_time {part}, commit every 60 s" if tab
             else f"Parquet objects, {folders[part]}")
    same = f"parquet:{part}"
    vs_same = f"{rate_k / rate_of(same):.2f}" if tab and same in kinds else "–"
    each = ", ".join(f"{r['mb_per_cpu_sec']:,.1f}" for r in rs)
    drains = ", ".join(f"{r['drain_secs']:.1f}" for r in rs)
    pauses = ", ".join(f"{r['longest_intake_pause_secs']:.0f}" for r in rs)
    files = "/".join(str(r["data_files"]) for r in rs)
    commits = "/".join(str(r["commits"]) for r in rs) if tab else "–"
    lat = "; ".join(f"{ms(r['commit_p50_secs'])} / {ms(r['commit_p99_secs'])}" for r in rs) if tab else "–"
    snaps = "/".join(str(r["snapshots"]) for r in rs) if tab else "–"
    metas = "/".join(str(r["metadata_files"]) for r in rs) if tab else "–"
    ok = ", ".join(yes(r["correct"]) for r in rs)
    print(f"| {label} | {len(rs)} | {rate_k:,.1f} ({each}) | {rate_k / base:.2f} | {vs_same} | {drains} | {pauses} | "
          f"{peak} | {yes(peak <= bound)} | {files} | {commits} | {lat} | {snaps} | {metas} | {ok} |")
    summary["drains"][k] = {"mb_per_cpu_sec": rate_k, "vs_parquet": rate_k / base, "runs": rs}
paced = [json.load(open(f"{out}/{p}.json")) for p in ("commits", "steady", "steady-in-order")
         if os.path.exists(f"{out}/{p}.json")]
summary["paced"] = paced
print()
print("**Paced drains** of the hour table (records produced at a steady rate while the connector "
      "runs; files closed max_age s after their first record or idle s after their last):")
print()
print("| drain | commit interval s | commits | longest without a commit s | data files per commit | "
      "commit p50 / p99 / max ms | snapshots | metadata files (metadata.json / manifest lists / "
      "manifests) | of them unreferenced (lost attempts) | per snapshot | last metadata.json | "
      "longest intake pause s | drain s | peak RSS MiB | correct |")
print("| --- | ---: | ---: | ---: | ---: | --- | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | --- |")
for c in paced:
    # The table's creation writes one metadata.json; every commit after it a manifest, a
    # manifest list and a metadata.json (and again for each lost attempt).
    c["metadata_files_per_snapshot"] = (c["metadata_files"] - 1) / c["snapshots"]
    gap = c.get("longest_without_commit_secs")
    print(f"| {c['name']}: {c['records']:,} records ({c['late_pct']:g} % late) at {c['rate']:,}/s, max_age {c['max_age']} s, idle {c['idle']} s "
          f"| {c['interval']} | {c['commits']} ({', '.join(f'{k} {v}' for k, v in c['commit_outcomes'].items())}) | "
          f"{'–' if gap is None else f'{gap:.1f}'} | {c['commit_files'] / max(c['commits'], 1):.1f} | "
          f"{ms(c['commit_p50_secs'])} / {ms(c['commit_p99_secs'])} / {ms(c['commit_max_secs'])} | "
          f"{c['snapshots']} | {c['metadata_files']} ({c['metadata_json_files']} / {c['manifest_lists']} / "
          f"{c['manifests']}) | {c['unreferenced_manifest_lists']} manifest lists, "
          f"{c['unreferenced_metadata_json']} metadata.json | {c['metadata_files_per_snapshot']:.2f} | "
          f"{c['last_metadata_json_bytes'] / 1024:,.0f} KiB for {c['snapshots']} snapshots | "
          f"{c['longest_intake_pause_secs']:.0f} | {c['drain_secs']:.1f} | {c['connector_peak_rss_mib']} | "
          f"{yes(c['correct'])} |")
if paced:
    c = paced[0]
    per_snap = c["metadata_files_per_snapshot"]
    snaps_h = workers * 3600 / 60
    print()
    print(f"At the default commit_interval_secs = 60, a worker with files to commit at every "
          f"interval: {workers} workers × 60 = {snaps_h:g} snapshots per hour per table, × "
          f"{per_snap:.2f} metadata files each ({c['name']} drain) = {snaps_h * per_snap:,.0f} "
          f"metadata files per hour (the metadata.json, rewritten by every commit, grows by about "
          f"{c['last_metadata_json_bytes'] / c['snapshots']:,.0f} bytes per snapshot kept).")
    summary["per_hour_default"] = {"snapshots": snaps_h, "metadata_files": snaps_h * per_snap}
json.dump(summary, open(f"{out}/summary.json", "w"), indent=1)
wrong = [r["name"] for r in runs + paced if not r["correct"]]
if wrong:
    print(f"\nWrong counts in: {', '.join(wrong)}", file=sys.stderr)
sys.exit(3 if wrong else 0)
EOF
