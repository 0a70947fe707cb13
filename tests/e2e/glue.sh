#!/usr/bin/env bash
# End-to-end: an Iceberg destination with the `glue` catalog (iceberg-catalog-glue, the AWS SDK
# for Glue) against moto's Glue Data Catalog API, with real outside processes on loopback ports
# picked at run time: a tansu broker, moto_server (S3 and Glue on one port), and
# tests/e2e/glue_shim.py in front of moto's Glue API: moto ignores UpdateTable's VersionId, the
# optimistic lock Iceberg commits through Glue rely on, so two workers committing at once lose a
# snapshot; the shim refuses a stale VersionId with ConcurrentModificationException as Glue does
# (see its docstring) and logs every exchange. Both real clients reach Glue through the shim:
# boto3 (pyiceberg's GlueCatalog and the harness) and the connector (aws-sdk-glue).
#
#   1. boto3 creates the destination bucket; the warehouse is s3://<bucket>/warehouse. By
#      default the connector creates the Glue database and table analytics.events itself (with
#      zoneless timestamps: iceberg-catalog-glue 0.10.1 cannot create or update a Glue table
#      with a `timestamptz` column); with GLUE_TABLE=athena pyiceberg's GlueCatalog creates it
#      first with the columns, types, day(ts) partitioning and LOCATION `kafka-s3-sink ddl`
#      prints (Athena's DDL), as a user creating it with Athena would, and the connector runs
#      with create_if_missing = false;
#   2. GLUE_EVENTS `gen-events` records and 2 records that are not JSON go into a 2-partition
#      topic; `check-config` accepts the config (parquet columns, `[destinations.iceberg]`
#      analytics.events by day, catalog kind = "glue" at the shim);
#      `run` runs until the group's committed offsets equal the end offsets, then gets SIGTERM
#      (must exit 0); `verify --json` then finds nothing missing or duplicated;
#   3. read back: boto3 glue get_table (through the shim) gives Parameters.metadata_location,
#      pyiceberg's StaticTable reads it from moto's S3: the schema (typed columns, _kafka_*) and day(ts)
#      partitioning, each data file's ts bounds within its day, its data files under the
#      table's location; rows == the good records, one per (partition, offset), their
#      messageIds those produced; the 2 bad records are in the bucket's `_errors/` (and the
#      bucket holds nothing else outside the table's location), not in the table; the snapshot
#      summaries carry kafka-s3-sink.offset.<group>.<topic>.<partition> = Kafka's end offsets;
#   4. 1,000 more records, the connector restarted: the table then holds every good record
#      once, the new ones included; `verify` again.
# Last line on stdout:
#   glue: rows=N errors=2 snapshots=N data_files=N verified=N updates=N conflicts=N elapsed_s=N
# updates = UpdateTable calls moto applied; conflicts = those the shim refused for a stale
# VersionId (two workers committing at once; the iceberg crate retries them on the refreshed
# table), informational.
#
#   bash tests/e2e/glue.sh
#
# Env: KAFKA_S3_SINK_BIN (default target/debug/kafka-s3-sink, built if missing), GLUE_EVENTS
# (5000), GLUE_KEEP_DIR (copy the logs and configs there on exit). Installs what is missing:
# tests/e2e/lib/common.sh's tools, and pyiceberg 0.12.0 (extras pyiceberg-core, sql-sqlite,
# pyarrow) in the venv target/e2e/iceberg/pyiceberg that tests/e2e/iceberg.sh and s3tables.sh
# also use. Only loopback; every wait has a deadline; every process started is stopped by its PID.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HELPERS="$REPO/tests/e2e/e2e_helpers.py"
SHIM="$REPO/tests/e2e/glue_shim.py"
BIN=${KAFKA_S3_SINK_BIN:-$REPO/target/debug/kafka-s3-sink}
EVENTS=${GLUE_EVENTS:-5000}
MORE=1000
PARTITIONS=2
BAD=2
VENV="$REPO/target/e2e/iceberg/pyiceberg"
TMP=$(mktemp -d "${TMPDIR:-/tmp}/kss-glue.XXXXXX")
START=$SECONDS
log() { printf 'glue: %s\n' "$*" >&2; }
fail() {
  log "FAIL: $*"
  exit 1
}
# shellcheck source=tests/e2e/lib/common.sh
. "$REPO/tests/e2e/lib/common.sh"
trap 'e2e_exit "$TMP" "${GLUE_KEEP_DIR:-}"' EXIT
h() { python3 "$HELPERS" "$@"; }

# ------------------------------------------------------------------ 1. install what is missing
install_e2e_tools
# shellcheck source=tests/e2e/lib/iceberg_readers.sh
. "$REPO/tests/e2e/lib/iceberg_readers.sh"
install_pyiceberg
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
MOTO_URL="http://127.0.0.1:$S3_PORT"   # moto's S3: data and table files, the error folder
GLUE_URL="http://127.0.0.1:$SHIM_PORT" # moto's Glue API, through the shim
RUN_ID="$(date +%s)-$$"
TOPIC="glue-events-$RUN_ID"
GROUP="glue-$RUN_ID"
BUCKET="e2e-glue-dest-$$"
WAREHOUSE="s3://$BUCKET/warehouse"
NAMESPACE=analytics
TABLE=events
# GLUE_TABLE=connector (default): the connector creates the table (create_if_missing);
# GLUE_TABLE=athena: pyiceberg creates it first as Athena's DDL would, at the LOCATION
# `kafka-s3-sink ddl` prints, and the connector appends to it.
GLUE_TABLE=${GLUE_TABLE:-connector}
LOCATION="$WAREHOUSE/$NAMESPACE/$TABLE"
[ "$GLUE_TABLE" = athena ] || LOCATION=""

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
h wait-tcp 127.0.0.1 "$SHIM_PORT" 15 || { alive "$SHIM_PID" glue_shim; fail "shim not listening"; }
h create-bucket "$MOTO_URL" "$BUCKET"
if [ "$GLUE_TABLE" = athena ]; then
  # The table is created beforehand, as Athena's DDL (`kafka-s3-sink ddl`) would: its event time a
  # zoneless `timestamp`. iceberg-catalog-glue 0.10.1 cannot create or update a Glue table with a
  # `timestamptz` column (its Glue type conversion refuses it: "FeatureUnsupported => Conversion
  # from Timestamptz is not supported"), the type the connector gives `ts` in a table it creates.
  # pyiceberg's GlueCatalog creates it here, through the shim.
  "$VENV/bin/python" - "$GLUE_URL" "$MOTO_URL" "$WAREHOUSE" "$NAMESPACE" "$TABLE" "$LOCATION" <<'EOF' || fail "pyiceberg could not create the Glue table"
import sys
from pyiceberg.catalog.glue import GlueCatalog
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.transforms import DayTransform
from pyiceberg.types import (BinaryType, IntegerType, LongType, NestedField, StringType,
                             TimestampType)

glue_url, s3_url, warehouse, ns, name, location = sys.argv[1:]
catalog = GlueCatalog("glue", **{
    "glue.endpoint": glue_url, "glue.region": "us-east-1", "glue.access-key-id": "testing",
    "glue.secret-access-key": "testing", "s3.endpoint": s3_url, "s3.access-key-id": "testing",
    "s3.secret-access-key": "testing", "s3.region": "us-east-1", "warehouse": warehouse})
catalog.create_namespace(ns)
# The columns, types and partitioning of `kafka-s3-sink ddl` for this config (Athena's DDL:
# every column optional, timestamps zoneless).
cols = [("message_id", StringType()), ("event_type", StringType()), ("ts", TimestampType()),
        ("_kafka_topic", StringType()), ("_kafka_partition", IntegerType()),
        ("_kafka_offset", LongType()), ("_kafka_timestamp", TimestampType()),
        ("_kafka_key", BinaryType()), ("_kafka_headers", StringType())]
schema = Schema(*(NestedField(i, n, t, required=False) for i, (n, t) in enumerate(cols, 1)))
spec = PartitionSpec(PartitionField(source_id=3, field_id=1000, transform=DayTransform(), name="ts_day"))
catalog.create_table(f"{ns}.{name}", schema, partition_spec=spec, location=location)
EOF
  log "table $NAMESPACE.$TABLE created in moto's Glue by pyiceberg (ts: timestamp)"
else
  log "the connector creates $NAMESPACE.$TABLE in moto's Glue (its timestamps zoneless, as Glue takes them)"
fi
tansu_topic "$KAFKA_PORT" "$TOPIC" "$PARTITIONS" "$TMP/topic.log"

# ------------------------------------------------------------------ 3. config, check-config
CONFIG="$TMP/glue.toml"
connector_config "$CONFIG" "$BROKER" "$GROUP" "$TOPIC" "$MOTO_URL" "$BUCKET" "" 'kafka_metadata_field = "_kafka"'
table_columns >>"$CONFIG"
cat >>"$CONFIG" <<EOF
[destinations.iceberg]
namespace = "$NAMESPACE"
table = "$TABLE"
partition_time = "day"
commit_interval_secs = 2
create_if_missing = $([ "$GLUE_TABLE" = athena ] && echo false || echo true)

[destinations.iceberg.catalog]
kind = "glue"
warehouse = "$WAREHOUSE"
endpoint = "$GLUE_URL"
region = "us-east-1"
EOF
# The Glue client takes the AWS default credential chain: static keys in the environment,
# nothing from the host's AWS files (empty ones here) or instance metadata.
: >"$TMP/aws-config"
: >"$TMP/aws-credentials"
AWS_ENV=(AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1
  AWS_EC2_METADATA_DISABLED=true AWS_CONFIG_FILE="$TMP/aws-config"
  AWS_SHARED_CREDENTIALS_FILE="$TMP/aws-credentials")
env "${AWS_ENV[@]}" NO_COLOR=1 "$BIN" check-config --config "$CONFIG" >"$TMP/check-config.log" 2>&1 ||
  fail "check-config refused the config: $(tail -5 "$TMP/check-config.log")"
log "check-config accepts the glue config"

# ------------------------------------------------------------------ connector runs

# verify WHAT: the connector's own audit agrees: every record up to the committed offsets once,
# in the table's current snapshot or in _errors/ (exit 0, nothing missing or duplicated); sets
# VFOUND
verify() {
  local vrc=0 vmissing vdup
  timeout 120 env "${AWS_ENV[@]}" NO_COLOR=1 "$BIN" verify --config "$CONFIG" --json \
    >"$TMP/verify-$1.json" 2>"$TMP/verify-$1.log" || vrc=$?
  read -r VFOUND vmissing vdup < <(python3 -c 'import json,sys
d = json.load(open(sys.argv[1])); print(d["found"], d["missing"], d["duplicated"])' "$TMP/verify-$1.json" 2>/dev/null || echo "? ? ?")
  log "$1: verify: found $VFOUND, missing $vmissing, duplicated $vdup (exit $vrc)"
  { [ "$vrc" -eq 0 ] && [ "$vmissing" = 0 ] && [ "$vdup" = 0 ]; } ||
    fail "$1: verify found $vmissing missing and $vdup duplicated (exit $vrc; see $TMP/verify-$1.log)"
}

# read_back GOOD_LINES: the checks of step 3, GOOD_LINES = how many lines of events.ndjson were
# produced; prints one JSON line of figures
read_back() {
  "$VENV/bin/python" - "$GLUE_URL" "$MOTO_URL" "$LOCATION" "$NAMESPACE" "$TABLE" "$GROUP" \
    "$TOPIC" "$TMP/state.json" "$BUCKET" "$TMP/events.ndjson" "$1" <<'EOF'
import base64, gzip, json, sys
import boto3
from botocore.config import Config
from pyiceberg.table import StaticTable

(glue_url, s3_url, location, ns, name, group, topic, state, bucket, events, produced) = sys.argv[1:]
produced = int(produced)
keys = dict(aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1")
glue = boto3.client("glue", endpoint_url=glue_url, **keys)
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

# The Glue table: an ICEBERG table whose metadata_location is under its location.
meta = glue.get_table(DatabaseName=ns, Name=name)["Table"]
params = meta.get("Parameters", {})
assert params.get("table_type", "").upper() == "ICEBERG", params
loc = params["metadata_location"]
table = StaticTable.from_metadata(loc, properties={
    "s3.endpoint": s3_url, "s3.access-key-id": "testing", "s3.secret-access-key": "testing",
    "s3.region": "us-east-1"})
# Created by the connector: its location is the one it chose under the warehouse.
created_by_connector = not location
location = location or table.metadata.location.rstrip("/")
assert loc.startswith(location + "/metadata/"), (loc, location)
# The schema and partitioning the table was created with (the connector's commits keep them).
fields = [(f.name, str(f.field_type), f.required) for f in table.schema().fields]
want = [("message_id", "string"), ("event_type", "string"), ("ts", "timestamp"),
        ("_kafka_topic", "string"), ("_kafka_partition", "int"), ("_kafka_offset", "long"),
        ("_kafka_timestamp", "timestamp"), ("_kafka_key", "binary"), ("_kafka_headers", "string")]
# Athena's DDL makes every column optional; the connector makes required what the config
# declares required, and the Kafka coordinates.
required = {"message_id", "ts", "_kafka_topic", "_kafka_partition", "_kafka_offset"} if created_by_connector else set()
assert fields == [(n, t, n in required) for n, t in want], fields
spec = [(f.name, str(f.transform), table.schema().find_column_name(f.source_id)) for f in table.spec().fields]
assert spec == [("ts_day", "day", "ts")], spec
# Each data file's rows lie in its partition's day (the column bounds of ts in the manifest).
import datetime
epoch = datetime.datetime(1970, 1, 1)  # ts is zoneless: its bounds are naive datetimes
inspected = table.inspect.files().to_pylist()
for f in inspected:
    day = f["partition"]["ts_day"]
    day = (day - epoch.date()).days if isinstance(day, datetime.date) else day
    lo, hi = (f["readable_metrics"]["ts"][k] for k in ("lower_bound", "upper_bound"))
    assert (lo - epoch).days == (hi - epoch).days == day, (f["file_path"], day, lo, hi)
rows = table.scan(selected_fields=("message_id", "ts", "_kafka_topic", "_kafka_partition",
                                   "_kafka_offset")).to_arrow()
assert rows.column("ts").null_count == 0, "a row without ts"
assert set(rows.column("_kafka_topic").to_pylist()) == {topic}, set(rows.column("_kafka_topic").to_pylist())
ids = rows.column("message_id").to_pylist()
coords = list(zip(rows.column("_kafka_partition").to_pylist(), rows.column("_kafka_offset").to_pylist()))
assert len(rows) == len(good), f"{len(rows)} rows, {len(good)} good records produced"
assert len(set(coords)) == len(rows), f"{len(rows) - len(set(coords))} duplicated (partition, offset)"
assert set(ids) == set(good), f"{len(set(good) - set(ids))} messageIds missing, {len(set(ids) - set(good))} unexpected"
for p, o in coords:
    assert 0 <= o < end[p], f"row at {p}/{o} beyond the end offset {end[p]}"

# The destination bucket: the table's files and the error folder, holding exactly the bad
# records.
errors, err_coords, err_keys, other = [], set(), [], []
for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
    for obj in page.get("Contents", []):
        if obj["Key"].startswith(location.removeprefix(f"s3://{bucket}/") + "/"):
            continue
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
assert not other, f"the destination bucket holds objects outside _errors/ and the table: {other[:5]}"
assert sorted(errors) == sorted(bad), f"_errors/ holds {errors}, expected {bad}"
# Every offset below the end is a row or an error, once.
assert len(err_coords) == len(errors) and not err_coords & set(coords), "a quarantined record is also a row"
every = {(p, o) for p, e in end.items() for o in range(e)}
assert set(coords) | err_coords == every, f"{len(every - set(coords) - err_coords)} offsets neither rows nor errors"
# The table's data files are under its location.
files = [t.file.file_path for t in table.scan().plan_files()]
assert sorted(files) == sorted(f["file_path"] for f in inspected), "inspect.files() and the scan differ"
assert all(f.startswith(location + "/data/") for f in files), [f for f in files if not f.startswith(location)][:3]

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

# ------------------------------------------------------------------ 4. first run
h produce "$BROKER" "$TOPIC" "$TMP/events.ndjson" "$PARTITIONS" "$TMP/state.json" 0 "$FIRST_END" >"$TMP/produce.out" ||
  fail "produce failed"
log "produced $FIRST_END records ($EVENTS good, $BAD not JSON): $(cat "$TMP/produce.out")"
table_drain "$TMP/connector.log"
FIGURES=$(read_back "$FIRST_END") || fail "read-back after the first run"
log "read back: $FIGURES"
verify first

# ------------------------------------------------------------------ 5. more records, restart
h produce "$BROKER" "$TOPIC" "$TMP/events.ndjson" "$PARTITIONS" "$TMP/state.json" "$FIRST_END" "$ALL_END" >"$TMP/produce.out" ||
  fail "produce failed"
log "produced $MORE more: $(cat "$TMP/produce.out")"
echo "=== glue.sh: restart" >>"$TMP/connector.log"
table_drain "$TMP/connector.log"
FIGURES=$(read_back "$ALL_END") || fail "read-back after the restart"
log "read back after the restart: $FIGURES"
verify restart

UPDATES=$(grep -c 'AWSGlue.UpdateTable -> 200' "$TMP/shim.log" || true)
CONFLICTS=$(grep -c 'AWSGlue.UpdateTable -> 400 refused' "$TMP/shim.log" || true)
[ "$UPDATES" -gt 0 ] || fail "no UpdateTable went through the shim"
log "shim: $(grep -c ' -> ' "$TMP/shim.log" || true) exchanges, $UPDATES table updates, $CONFLICTS refused for a stale VersionId and retried"
printf 'glue: rows=%s errors=%s snapshots=%s data_files=%s verified=%s updates=%s conflicts=%s elapsed_s=%s\n' \
  "$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["rows"])' "$FIGURES")" \
  "$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["errors"])' "$FIGURES")" \
  "$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["snapshots"])' "$FIGURES")" \
  "$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["data_files"])' "$FIGURES")" \
  "$VFOUND" "$UPDATES" "$CONFLICTS" "$((SECONDS - START))"
log "ok"
