#!/usr/bin/env bash
# End-to-end: a real query engine reads what the connector wrote. The connector's `demo` (the
# real pipeline on librdkafka's mock cluster and the in-process S3 server, objects kept under a
# local folder) writes the same 20,000 events once as gzip NDJSON and once as zstd NDJSON;
# DuckDB (the `duckdb` package from PyPI) then reads every data object of each through its own
# gzip and zstd readers and checks that the rows are exactly the records the connector reports
# written, and that every row lies in the hour folder of its own `timestamp`. Then the same
# events in Hive-style folders (`dt=%Y-%m-%d/hr=%H/`): DuckDB's `hive_partitioning` gives every
# row partition columns equal to its own event time, and the connector's `ddl` prints an Athena
# table that sqlglot parses (Athena dialect) and whose partition projection covers every folder
# written. Last Parquet (the columns of `examples/parquet.toml`, Hive-style folders): DuckDB's
# `read_parquet` with `hive_partitioning` and pyarrow read every row; partition columns equal the
# event times, the Kafka metadata columns equal each object's coordinates, the typed columns
# equal the raw JSON; the Parquet DDL parses and declares exactly the files' columns.
#
#   bash tests/e2e/query.sh
#
# Env: KAFKA_S3_SINK_BIN (default target/debug/kafka-s3-sink, built if missing). Installs
# duckdb, sqlglot and pyarrow with pip if missing. Only loopback; the demo stops its own servers.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BIN=${KAFKA_S3_SINK_BIN:-$REPO/target/debug/kafka-s3-sink}
TMP=$(mktemp -d "${TMPDIR:-/tmp}/kss-query.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
log() { printf 'query: %s\n' "$*" >&2; }
fail() { log "FAIL: $*"; exit 1; }

python3 -c "import duckdb, sys; sys.exit(duckdb.__version__ != '1.5.6')" 2>/dev/null || {
  log "installing duckdb (pip)"
  python3 -m pip install -q "duckdb==1.5.6"
}
python3 -c "import sqlglot, sys; sys.exit(sqlglot.__version__ != '30.31.0')" 2>/dev/null || {
  log "installing sqlglot (pip)"
  python3 -m pip install -q "sqlglot==30.31.0"
}
python3 -c "import pyarrow, sys; sys.exit(pyarrow.__version__ != '26.0.1')" 2>/dev/null || {
  log "installing pyarrow (pip)"
  python3 -m pip install -q "pyarrow==26.0.1"
}
if [ ! -x "$BIN" ]; then
  log "building $BIN"
  (cd "$REPO" && cargo build --quiet)
fi

for compression in gzip zstd; do
  log "demo with compression = $compression"
  "$BIN" demo --dir "$TMP/$compression" --compression "$compression" >"$TMP/$compression.out" 2>"$TMP/$compression.log" ||
    { tail -20 "$TMP/$compression.log" >&2; fail "demo failed"; }
  written=$(sed -n 's/^records written: *//p' "$TMP/$compression.out")
  [ -n "$written" ] || fail "no 'records written' line in the demo's summary"
  python3 - "$TMP/$compression/demo-bucket" "$compression" "$written" <<'EOF'
import sys
import duckdb

root, compression, written = sys.argv[1], sys.argv[2], int(sys.argv[3])
ext = {"gzip": "gz", "zstd": "zst"}[compression]
files = f"{root}/2*/*/*/*/*.ndjson.{ext}"
con = duckdb.connect()
rows = con.execute(
    "select count(*) from read_json_objects(?, format = 'newline_delimited', compression = ?)",
    [files, compression],
).fetchone()[0]
# Each row in the hour folder of its own timestamp (the key's folder, as written).
misplaced = con.execute(
    """
    select count(*) from read_json_objects(?, format = 'newline_delimited', compression = ?,
                                           filename = true)
    where strftime(cast(json_extract_string(json, '$.timestamp') as timestamptz) at time zone 'UTC',
                   '%Y/%m/%d/%H')
          <> regexp_extract(filename, '([0-9]{4}/[0-9]{2}/[0-9]{2}/[0-9]{2})/[^/]+$', 1)
    """,
    [files, compression],
).fetchone()[0]
ids = con.execute(
    "select count(distinct json_extract_string(json, '$.messageId')) from "
    "read_json_objects(?, format = 'newline_delimited', compression = ?)",
    [files, compression],
).fetchone()[0]
print(f"query: duckdb {duckdb.__version__} read {rows} rows of {compression} NDJSON "
      f"({ids} distinct messageIds, {misplaced} outside their hour folder); the connector wrote {written}",
      file=sys.stderr)
assert rows == written, f"{rows} rows, {written} written"
assert ids == rows, "every row is a distinct event"
assert misplaced == 0, f"{misplaced} rows outside the folder of their timestamp"
EOF
done
log "demo with Hive-style folders dt=%Y-%m-%d/hr=%H/"
"$BIN" demo --dir "$TMP/hive" --folder-template "dt=%Y-%m-%d/hr=%H/" >"$TMP/hive.out" 2>"$TMP/hive.log" ||
  { tail -20 "$TMP/hive.log" >&2; fail "demo failed"; }
written=$(sed -n 's/^records written: *//p' "$TMP/hive.out")
cat >"$TMP/hive.toml" <<'EOF'
[kafka]
brokers = "127.0.0.1:9"
group_id = "ddl"
topics = ["events"]

[[destinations]]
name = "demo"
bucket = "demo-bucket"

[destinations.routing]
folder_template = "dt=%Y-%m-%d/hr=%H/"
EOF
"$BIN" ddl --config "$TMP/hive.toml" --table events \
  --columns 'type string, messageId string, timestamp string, event string' >"$TMP/hive.sql" ||
  fail "ddl failed"
python3 - "$TMP/hive/demo-bucket" "$written" "$TMP/hive.sql" <<'EOF'
import datetime, os, re, sys
import duckdb, sqlglot
from sqlglot import exp

root, written, ddl_path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
con = duckdb.connect()
files = f"{root}/dt=*/hr=*/*.ndjson.gz"
rows, off = con.execute(
    """
    select count(*),
           count(*) filter (where strftime(cast(timestamp as timestamptz) at time zone 'UTC', '%Y-%m-%d') <> dt
                              or strftime(cast(timestamp as timestamptz) at time zone 'UTC', '%H') <> hr)
    from read_json(?, format = 'newline_delimited', hive_partitioning = true,
                   columns = {'timestamp': 'VARCHAR', 'messageId': 'VARCHAR'})
    """,
    [files],
).fetchone()
print(f"query: duckdb read {rows} rows with hive partitions, {off} whose dt/hr differ from their timestamp",
      file=sys.stderr)
assert rows == written, f"{rows} rows, {written} written"
assert off == 0

ddl = open(ddl_path).read()
tree = sqlglot.parse_one(ddl, read="athena")
assert isinstance(tree, exp.Create), type(tree)
props = dict(re.findall(r"'([a-z.]+)' = '([^']*)'", ddl.split("TBLPROPERTIES", 1)[1]))
assert props["projection.enabled"] == "true"
start, end = props["projection.dt.range"].split(",")
lo, hi = (int(x) for x in props["projection.hr.range"].split(","))
assert end == "NOW" and props["projection.dt.format"] == "yyyy-MM-dd"
template = props["storage.location.template"]
assert template == "s3://demo-bucket/dt=${dt}/hr=${hr}/", template
today = datetime.date.today().isoformat()
folders = 0
for dt in os.listdir(root):
    if not dt.startswith("dt="):
        continue
    for hr in os.listdir(os.path.join(root, dt)):
        d, h = dt[3:], int(hr[3:])
        assert start <= d <= today, f"{d} outside {start}..{today}"
        assert lo <= h <= hi, f"hour {h} outside {lo}..{hi}"
        folders += 1
print(f"query: sqlglot {sqlglot.__version__} parsed the DDL (Athena); its projection ({start}..NOW, "
      f"hours {lo}-{hi}) covers all {folders} folders written", file=sys.stderr)
EOF
log "demo with Parquet (the columns of examples/parquet.toml) in Hive-style folders"
"$BIN" demo --dir "$TMP/parquet" --format parquet --folder-template "dt=%Y-%m-%d/hr=%H/" \
  >"$TMP/parquet.out" 2>"$TMP/parquet.log" || { tail -20 "$TMP/parquet.log" >&2; fail "demo failed"; }
written=$(sed -n 's/^records written: *//p' "$TMP/parquet.out")
KAFKA_BROKERS=127.0.0.1:9 "$BIN" ddl --config "$REPO/examples/parquet.toml" --table events \
  >"$TMP/parquet.sql" || fail "ddl failed"
python3 - "$TMP/parquet/demo-bucket" "$written" "$TMP/parquet.sql" <<'EOF'
import glob, re, sys
import duckdb, pyarrow, pyarrow.parquet as pq, sqlglot
from sqlglot import exp

root, written, ddl_path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
files = f"{root}/dt=*/hr=*/*.parquet"
con = duckdb.connect()
rows, off, ids, topics, coords, misnamed = con.execute(
    """
    with t as (select * from read_parquet(?, hive_partitioning = true, filename = true))
    select count(*),
           count(*) filter (where strftime(event_time at time zone 'UTC', '%Y-%m-%d') <> dt
                              or strftime(event_time at time zone 'UTC', '%H') <> hr),
           count(distinct message_id),
           count(*) filter (where _kafka_topic <> 'events'),
           count(distinct (_kafka_partition, _kafka_offset)),
           -- each object is named <topic>+<partition>+<first offset> of its own rows
           (select count(*) from (
              select filename, min(_kafka_offset) as first, min(_kafka_partition) as p,
                     max(_kafka_partition) as q
              from t group by filename)
            where regexp_extract(filename, '\\+([0-9]+)\\+([0-9]{20})\\.parquet$', 1)::int <> p
               or p <> q
               or regexp_extract(filename, '\\+([0-9]+)\\+([0-9]{20})\\.parquet$', 2)::bigint <> first)
    from t
    """,
    [files],
).fetchone()
# The raw column is the record as produced: the typed columns and the Kafka key (the demo keys
# each record by its userId) agree with it.
differ = con.execute(
    """
    select count(*) from read_parquet(?)
    where json_extract_string(raw, '$.messageId') <> message_id
       or cast(json_extract_string(raw, '$.timestamp') as timestamptz) <> event_time
       or coalesce(json_extract_string(raw, '$.userId'), '') <> coalesce(user_id, '')
       or _kafka_key::varchar <> coalesce(json_extract_string(raw, '$.userId'), _kafka_key::varchar)
       or _kafka_timestamp is null
    """,
    [files],
).fetchone()[0]
paths = glob.glob(files)
tables = [pq.read_table(p) for p in paths]
arrow_rows = sum(t.num_rows for t in tables)
print(f"query: duckdb read {rows} Parquet rows in {len(paths)} objects ({ids} distinct messageIds, "
      f"{coords} distinct Kafka coordinates): {off} outside their dt/hr, {differ} whose columns "
      f"differ from their raw JSON, {misnamed} objects not named by their rows' coordinates; "
      f"pyarrow {pyarrow.__version__} read {arrow_rows} rows; the connector wrote {written}",
      file=sys.stderr)
assert rows == written == arrow_rows == ids == coords, (rows, written, arrow_rows, ids, coords)
assert off == 0 and topics == 0 and differ == 0 and misnamed == 0

# The DDL parses (Athena), is a Parquet table, and its columns are the files' columns.
ddl = open(ddl_path).read()
tree = sqlglot.parse_one(ddl, read="athena")
assert isinstance(tree, exp.Create), type(tree)
assert "STORED AS PARQUET" in ddl
hive = {"string": "string", "bigint": "int64", "int": "int32", "double": "double",
        "boolean": "bool", "binary": "binary", "timestamp": "timestamp"}
declared = re.findall(r"^  `([a-z_]+)` ([a-z]+),?$", ddl.split("PARTITIONED BY")[0], re.M)
schema = tables[0].schema
assert [n for n, _ in declared] == schema.names, ([n for n, _ in declared], schema.names)
for name, kind in declared:
    arrow = str(schema.field(name).type)
    assert arrow.startswith(hive[kind]), f"{name}: DDL {kind}, file {arrow}"
props = dict(re.findall(r"'([a-z.]+)' = '([^']*)'", ddl.split("TBLPROPERTIES", 1)[1]))
assert props["storage.location.template"] == "s3://my-bucket/events/dt=${dt}/hr=${hr}/"
print(f"query: the Parquet DDL parses (sqlglot, Athena) and its {len(declared)} columns are the "
      f"files' columns with matching types", file=sys.stderr)
EOF
log "ok"
