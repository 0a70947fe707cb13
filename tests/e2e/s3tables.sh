#!/usr/bin/env bash
# End-to-end: an Iceberg destination with the `s3tables` catalog (iceberg-catalog-s3tables, the
# AWS SDK for S3 Tables) against moto's S3 Tables control plane, with real outside processes on
# loopback ports picked at run time: a tansu broker, moto_server (S3 and S3 Tables), and
# tests/e2e/s3tables_shim.py in front of moto's control plane (moto answers two operations with
# shapes aws-sdk-s3tables refuses; the shim rewrites only those members, see its docstring, and
# logs every exchange). Both real clients go through the shim: boto3's s3tables client (the
# harness) and the connector (aws-sdk-s3tables).
#
#   1. boto3 creates a table bucket (through the shim) and a regular bucket for the destination;
#   2. S3T_EVENTS `gen-events` records and 2 records that are not JSON go into a 2-partition
#      topic; `check-config` accepts the config (parquet columns, `[destinations.iceberg]`
#      analytics.events by day, catalog kind = "s3tables" at the shim); `run` creates the
#      namespace and table and runs until the group's committed offsets equal the end offsets,
#      then gets SIGTERM (must exit 0);
#   3. read back: boto3 get_table (through the shim) gives the metadata location, pyiceberg's
#      StaticTable reads it from moto's S3: the schema (typed columns, _kafka_*) and day(ts)
#      partitioning, each data file's ts bounds within its day, its data files in the table
#      bucket; rows == the good records, one per (partition, offset), their messageIds those
#      produced; the 2 bad records are in the destination bucket's `_errors/` (and that bucket
#      holds nothing else), not in the table; the snapshot summaries carry
#      kafka-s3-sink.offset.<group>.<topic>.<partition> = Kafka's end offsets; DuckDB's
#      iceberg_scan of the same metadata counts the same rows, each (partition, offset) once;
#   4. 1,000 more records, the connector restarted: the table then holds every good record
#      once, the new ones included.
# Last line on stdout:
#   s3tables: rows=N errors=2 snapshots=N shim_exchanges=N shim_rewrites=N conflicts=N elapsed_s=N
# conflicts = table commits moto refused for a stale versionToken (two workers committing at
# once; the iceberg crate retries them on the refreshed table), informational.
#
#   bash tests/e2e/s3tables.sh
#
# Env: KAFKA_S3_SINK_BIN (default target/debug/kafka-s3-sink, built if missing), S3T_EVENTS
# (5000), S3T_KEEP_DIR (copy the logs and configs there on exit). Installs what is missing:
# tests/e2e/lib/common.sh's tools, and pyiceberg 0.12.0 (extras pyiceberg-core, sql-sqlite,
# pyarrow) in the venv target/e2e/iceberg/pyiceberg that tests/e2e/iceberg.sh also uses. Only
# loopback; every wait has a deadline; every process started is stopped by its PID.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HELPERS="$REPO/tests/e2e/e2e_helpers.py"
SHIM="$REPO/tests/e2e/s3tables_shim.py"
BIN=${KAFKA_S3_SINK_BIN:-$REPO/target/debug/kafka-s3-sink}
EVENTS=${S3T_EVENTS:-5000}
MORE=1000
PARTITIONS=2
BAD=2
VENV="$REPO/target/e2e/iceberg/pyiceberg"
TMP=$(mktemp -d "${TMPDIR:-/tmp}/kss-s3tables.XXXXXX")
START=$SECONDS
log() { printf 's3tables: %s\n' "$*" >&2; }
fail() {
  log "FAIL: $*"
  exit 1
}
# shellcheck source=tests/e2e/lib/common.sh
. "$REPO/tests/e2e/lib/common.sh"
trap 'e2e_exit "$TMP" "${S3T_KEEP_DIR:-}"' EXIT
h() { python3 "$HELPERS" "$@"; }

# ------------------------------------------------------------------ 1. install what is missing
install_e2e_tools
# shellcheck source=tests/e2e/lib/iceberg_readers.sh
. "$REPO/tests/e2e/lib/iceberg_readers.sh"
install_pyiceberg
install_duckdb
if [ ! -x "$BIN" ]; then
  log "building $BIN"
  (cd "$REPO" && cargo build --quiet)
fi
[ -x "$BIN" ] || fail "connector binary not found at $BIN"

# ------------------------------------------------------------------ 2. servers, buckets, topic
KAFKA_PORT=$(h port)
S3_PORT=$(h port)
SHIM_PORT=$(h port)
BROKER="127.0.0.1:$KAFKA_PORT"
S3_URL="http://127.0.0.1:$S3_PORT"     # moto's S3: data and table files, the error folder
SHIM_URL="http://127.0.0.1:$SHIM_PORT" # the S3 Tables control plane, through the shim
RUN_ID="$(date +%s)-$$"
TOPIC="s3t-events-$RUN_ID"
GROUP="s3t-$RUN_ID"
BUCKET="e2e-s3t-dest-$$"
TABLE_BUCKET="e2e-s3t-tables-$$"
NAMESPACE=analytics
TABLE=events

start_tansu "$KAFKA_PORT" "$TMP/tansu.log"
start_moto "$S3_PORT" "$TMP/moto.log"
# Safety net only: the shim stops itself if this script somehow outlives every deadline.
python3 "$SHIM" "$SHIM_PORT" "$S3_PORT" 900 >"$TMP/shim.log" 2>&1 &
SHIM_PID=$!
started "$SHIM_PID"

# The events: lines 0..EVENTS-1 good, then BAD lines that are not JSON, then MORE good ones.
"$BIN" gen-events --count $((EVENTS + MORE)) --seed 42 --out "$TMP/gen.ndjson"
{
  head -n "$EVENTS" "$TMP/gen.ndjson"
  printf 'not json at all\n{"messageId": "cut short\n'
  tail -n +$((EVENTS + 1)) "$TMP/gen.ndjson"
} >"$TMP/events.ndjson"
rm "$TMP/gen.ndjson"
FIRST_END=$((EVENTS + BAD))
ALL_END=$((EVENTS + BAD + MORE))

wait_moto "$S3_PORT"
h wait-tcp 127.0.0.1 "$SHIM_PORT" 15 || { alive "$SHIM_PID" s3tables_shim; fail "shim not listening"; }
h create-bucket "$S3_URL" "$BUCKET"
TABLE_BUCKET_ARN=$(python3 - "$SHIM_URL" "$TABLE_BUCKET" <<'EOF'
import sys
import boto3

s3t = boto3.client("s3tables", endpoint_url=sys.argv[1], region_name="us-east-1",
                   aws_access_key_id="testing", aws_secret_access_key="testing")
print(s3t.create_table_bucket(name=sys.argv[2])["arn"])
EOF
) || fail "boto3 create_table_bucket through the shim failed"
log "table bucket $TABLE_BUCKET_ARN (boto3 through the shim)"
tansu_topic "$KAFKA_PORT" "$TOPIC" "$PARTITIONS" "$TMP/topic.log"

# ------------------------------------------------------------------ 3. config, check-config
CONFIG="$TMP/s3tables.toml"
connector_config "$CONFIG" "$BROKER" "$GROUP" "$TOPIC" "$S3_URL" "$BUCKET" "" 'kafka_metadata_field = "_kafka"'
table_columns >>"$CONFIG"
cat >>"$CONFIG" <<EOF
[destinations.iceberg]
namespace = "$NAMESPACE"
table = "$TABLE"
partition_time = "day"
commit_interval_secs = 2

[destinations.iceberg.catalog]
kind = "s3tables"
table_bucket_arn = "$TABLE_BUCKET_ARN"
endpoint = "$SHIM_URL"
region = "us-east-1"
EOF
# The S3 Tables client takes the AWS default credential chain: static keys in the environment,
# nothing from the host's AWS files (empty ones here) or instance metadata.
: >"$TMP/aws-config"
: >"$TMP/aws-credentials"
AWS_ENV=(AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1
  AWS_EC2_METADATA_DISABLED=true AWS_CONFIG_FILE="$TMP/aws-config"
  AWS_SHARED_CREDENTIALS_FILE="$TMP/aws-credentials")
env "${AWS_ENV[@]}" NO_COLOR=1 "$BIN" check-config --config "$CONFIG" >"$TMP/check-config.log" 2>&1 ||
  fail "check-config refused the config: $(tail -5 "$TMP/check-config.log")"
log "check-config accepts the s3tables config"

# ------------------------------------------------------------------ connector runs

# read_back GOOD_LINES: the checks of step 3, GOOD_LINES = how many lines of events.ndjson were
# produced; prints one JSON line of figures
read_back() {
  "$VENV/bin/python" - "$SHIM_URL" "$S3_URL" "$TABLE_BUCKET_ARN" "$NAMESPACE" "$TABLE" "$GROUP" \
    "$TOPIC" "$TMP/state.json" "$BUCKET" "$TMP/events.ndjson" "$1" <<'EOF'
import base64, gzip, json, sys
import boto3
from botocore.config import Config
from pyiceberg.table import StaticTable

(shim, s3_url, arn, ns, name, group, topic, state, bucket, events, produced) = sys.argv[1:]
produced = int(produced)
keys = dict(aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1")
s3t = boto3.client("s3tables", endpoint_url=shim, **keys)
s3 = boto3.client("s3", endpoint_url=s3_url, config=Config(s3={"addressing_style": "path"}), **keys)

with open(state) as f:
    end = {int(p): int(o) for p, o in json.load(f)["next_offset"].items()}
lines = open(events, "rb").read().split(b"\n")[:produced]
good, bad = {}, []
for i, line in enumerate(lines):
    try:
        good[json.loads(line)["messageId"]] = i
    except ValueError:
        bad.append(line)

meta = s3t.get_table(tableBucketARN=arn, namespace=ns, name=name)
loc = meta["metadataLocation"]
warehouse = meta["warehouseLocation"]
assert loc.startswith(warehouse + "/"), (loc, warehouse)
table = StaticTable.from_metadata(loc, properties={
    "s3.endpoint": s3_url, "s3.access-key-id": "testing", "s3.secret-access-key": "testing",
    "s3.region": "us-east-1"})
# The schema and partitioning the connector derived: typed columns, then _kafka_*; day(ts).
fields = {f.name: (str(f.field_type), f.required) for f in table.schema().fields}
want = {"message_id": ("string", True), "event_type": ("string", False),
        "ts": ("timestamptz", True), "_kafka_partition": ("int", True), "_kafka_offset": ("long", True)}
assert all(fields.get(k) == v for k, v in want.items()), fields
spec = [(f.name, str(f.transform), table.schema().find_column_name(f.source_id)) for f in table.spec().fields]
assert spec == [("ts_day", "day", "ts")], spec
# Each data file's rows lie in its partition's day (the column bounds of ts in the manifest).
import datetime
epoch = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
inspected = table.inspect.files().to_pylist()
for f in inspected:
    day = f["partition"]["ts_day"]
    day = (day - epoch.date()).days if isinstance(day, datetime.date) else day
    lo, hi = (f["readable_metrics"]["ts"][k] for k in ("lower_bound", "upper_bound"))
    assert (lo - epoch).days == (hi - epoch).days == day, (f["file_path"], day, lo, hi)
rows = table.scan(selected_fields=("message_id", "_kafka_partition", "_kafka_offset")).to_arrow()
ids = rows.column("message_id").to_pylist()
coords = list(zip(rows.column("_kafka_partition").to_pylist(), rows.column("_kafka_offset").to_pylist()))
assert len(rows) == len(good), f"{len(rows)} rows, {len(good)} good records produced"
assert len(set(coords)) == len(rows), f"{len(rows) - len(set(coords))} duplicated (partition, offset)"
assert set(ids) == set(good), f"{len(set(good) - set(ids))} messageIds missing, {len(set(ids) - set(good))} unexpected"
for p, o in coords:
    assert 0 <= o < end[p], f"row at {p}/{o} beyond the end offset {end[p]}"

# The destination bucket: only the error folder, holding exactly the bad records.
errors, err_coords, err_keys, other = [], set(), [], []
for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
    for obj in page.get("Contents", []):
        if not obj["Key"].startswith("_errors/"):
            other.append(obj["Key"])
            continue
        err_keys.append(obj["Key"])
        body = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
        if obj["Key"].endswith(".gz"):
            body = gzip.decompress(body)
        for line in body.split(b"\n"):
            if line:
                env = json.loads(line)
                value = (base64.b64decode(env["value_base64"]) if env.get("value_base64") is not None
                         else env["value"].encode())
                errors.append(value)
                err_coords.add((env.get("partition"), env.get("offset")))
assert not other, f"the destination bucket holds objects outside _errors/: {other[:5]}"
assert sorted(errors) == sorted(bad), f"_errors/ holds {errors}, expected {bad}"
# Every offset below the end is a row or an error, once.
assert len(err_coords) == len(errors) and not err_coords & set(coords), "a quarantined record is also a row"
every = {(p, o) for p, e in end.items() for o in range(e)}
assert set(coords) | err_coords == every, f"{len(every - set(coords) - err_coords)} offsets neither rows nor errors"
# The table's data files are in the table bucket; the error objects are not (a table bucket
# answers no ListObjects: each error key is looked up there).
files = [t.file.file_path for t in table.scan().plan_files()]
assert sorted(files) == sorted(f["file_path"] for f in inspected), "inspect.files() and the scan differ"
assert all(f.startswith(warehouse + "/data/") for f in files), [f for f in files if not f.startswith(warehouse)][:3]
tb = warehouse.removeprefix("s3://").split("/", 1)[0]
for key in err_keys:
    try:
        s3.head_object(Bucket=tb, Key=key)
        raise AssertionError(f"{key} is also in the table bucket")
    except s3.exceptions.ClientError as e:
        assert e.response["Error"]["Code"] in ("404", "NoSuchKey"), e

# The snapshot summaries: each partition's newest offset key = Kafka's end offset.
md = table.metadata
by_id = {s.snapshot_id: s for s in md.snapshots}
snap, offsets = md.current_snapshot(), {}
while snap is not None and len(offsets) < len(end):
    props = snap.summary.additional_properties if snap.summary else {}
    for p in end:
        offsets.setdefault(p, props.get(f"kafka-s3-sink.offset.{group}.{topic}.{p}"))
    offsets = {p: o for p, o in offsets.items() if o is not None}
    snap = by_id.get(snap.parent_snapshot_id)
got = {p: int(o) for p, o in offsets.items()}
# The table's offset of a partition is past its last row and at most Kafka's end: records after
# the last row (quarantined ones) may be committed to Kafka after the table's last commit.
last_row = {}
for p, o in coords:
    last_row[p] = max(last_row.get(p, -1), o)
assert set(got) == set(end) and all(last_row.get(p, -1) < got[p] <= end[p] for p in end), \
    f"table offsets {got}, last rows {last_row}, Kafka end offsets {end}"
print(json.dumps({"rows": len(rows), "errors": len(errors), "snapshots": len(md.snapshots),
                  "table_offsets": dict(sorted(got.items())), "data_files": len(files), "metadata": loc}))
EOF
}

# duck_check FIGURES: DuckDB's iceberg_scan of the metadata the read-back found counts its rows,
# each (partition, offset) once
duck_check() {
  local meta rows want
  meta=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["metadata"])' "$1")
  want=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["rows"])' "$1")
  timeout 300 "$ICEBERG_VENVS/duckdb/bin/python" "$REPO/tests/e2e/iceberg_read.py" duckdb "$S3_URL" "$meta" \
    >"$TMP/duckdb.json" 2>"$TMP/duckdb.log" || fail "DuckDB could not read the table: $(tail -n 5 "$TMP/duckdb.log")"
  rows=$(python3 -c 'import json,sys; d = json.load(open(sys.argv[1])); print(d["rows"], d["distinct"])' "$TMP/duckdb.json")
  [ "$rows" = "$want $want" ] || fail "DuckDB counts (rows, distinct) = $rows, the read-back $want"
  log "DuckDB iceberg_scan: $want rows, $want distinct (partition, offset)"
}

# ------------------------------------------------------------------ 4. first run
h produce "$BROKER" "$TOPIC" "$TMP/events.ndjson" "$PARTITIONS" "$TMP/state.json" 0 "$FIRST_END" >"$TMP/produce.out" ||
  fail "produce failed"
log "produced $FIRST_END records ($EVENTS good, $BAD not JSON): $(cat "$TMP/produce.out")"
table_drain "$TMP/connector.log"
FIGURES=$(read_back "$FIRST_END") || fail "read-back after the first run"
log "read back: $FIGURES"
duck_check "$FIGURES"

# ------------------------------------------------------------------ 5. more records, restart
h produce "$BROKER" "$TOPIC" "$TMP/events.ndjson" "$PARTITIONS" "$TMP/state.json" "$FIRST_END" "$ALL_END" >"$TMP/produce.out" ||
  fail "produce failed"
log "produced $MORE more: $(cat "$TMP/produce.out")"
echo "=== s3tables.sh: restart" >>"$TMP/connector.log"
table_drain "$TMP/connector.log"
FIGURES=$(read_back "$ALL_END") || fail "read-back after the restart"
log "read back after the restart: $FIGURES"
duck_check "$FIGURES"

EXCHANGES=$(grep -c ' -> ' "$TMP/shim.log" || true)
REWRITES=$(grep -c 'rewrote:' "$TMP/shim.log" || true)
UPDATES=$(grep -c '^PUT /tables/.*/metadata-location -> 200' "$TMP/shim.log" || true)
# Two workers committing at once: moto refuses the stale versionToken (409 ConflictException)
# and the iceberg crate retries on the refreshed table (informational: depends on timing).
CONFLICTS=$(grep -c '^PUT /tables/.*/metadata-location -> 409' "$TMP/shim.log" || true)
[ "$UPDATES" -gt 0 ] || fail "no UpdateTableMetadataLocation went through the shim"
log "shim: $EXCHANGES exchanges, $REWRITES answers rewritten, $UPDATES metadata updates, $CONFLICTS refused as stale (409) and retried; $(grep -o 'rewrote: .*' "$TMP/shim.log" | sort | uniq -c | tr -s ' \n' ' ')"
printf 's3tables: rows=%s errors=%s snapshots=%s shim_exchanges=%s shim_rewrites=%s conflicts=%s elapsed_s=%s\n' \
  "$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["rows"])' "$FIGURES")" \
  "$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["errors"])' "$FIGURES")" \
  "$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["snapshots"])' "$FIGURES")" \
  "$EXCHANGES" "$REWRITES" "$CONFLICTS" "$((SECONDS - START))"
log "ok"
