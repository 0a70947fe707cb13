#!/usr/bin/env bash
# End-to-end: an Iceberg destination with the `rest` catalog (iceberg-catalog-rest) against
# tests/e2e/rest_catalog.py, a test-only REST catalog serving the REST spec's endpoints over
# pyiceberg's SqlCatalog (no Java REST catalog can be installed here), with a bearer token the
# connector sends as a secret. Real processes on loopback ports picked at run time: a tansu
# broker, moto_server (S3: data, table and error files), the REST catalog.
#
#   1. RECORDS `gen-events` records and 2 that are not JSON go into a 2-partition topic;
#      `check-config` accepts the config (parquet columns, `[destinations.iceberg]` by hour,
#      kind = "rest", the token as a secret: printed redacted); `run` creates the namespace and
#      table through the REST catalog and runs until the group's committed offsets equal the end
#      offsets, then SIGTERM (exit 0); its log never shows the token;
#   2. pyiceberg's RestCatalog, a second real client, loads the table through the same server:
#      rows == good records == distinct (_kafka_partition, _kafka_offset), and the snapshot
#      summaries carry Kafka's end offsets; DuckDB's iceberg_scan of the metadata counts the same;
#      `verify` finds every record once (table and `_errors/`).
# Last line on stdout: rest: rows=N snapshots=N requests=N refused_commits=N elapsed_s=N
#
#   bash tests/e2e/rest.sh        # KAFKA_S3_SINK_BIN overrides the binary (default target/debug)
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HELPERS="$REPO/tests/e2e/e2e_helpers.py"
CATALOG="$REPO/tests/e2e/rest_catalog.py"
BIN=${KAFKA_S3_SINK_BIN:-$REPO/target/debug/kafka-s3-sink}
RECORDS=${REST_RECORDS:-4000}
PARTITIONS=2
BAD=2
TOKEN="rest-e2e-token-$$-$RANDOM"
TMP=$(mktemp -d "${TMPDIR:-/tmp}/kss-rest.XXXXXX")
START=$SECONDS
log() { printf 'rest: %s\n' "$*" >&2; }
fail() {
  log "FAIL: $*"
  exit 1
}
# shellcheck source=tests/e2e/lib/common.sh
. "$REPO/tests/e2e/lib/common.sh"
trap 'e2e_exit "$TMP" "${REST_KEEP_DIR:-}"' EXIT
h() { python3 "$HELPERS" "$@"; }

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

KAFKA_PORT=$(h port)
S3_PORT=$(h port)
BROKER="127.0.0.1:$KAFKA_PORT"
S3_URL="http://127.0.0.1:$S3_PORT"
RUN_ID="$(date +%s)-$$"
TOPIC="rest-events-$RUN_ID"
GROUP="rest-$RUN_ID"
BUCKET="e2e-rest-$$"

start_tansu "$KAFKA_PORT" "$TMP/tansu.log"
start_moto "$S3_PORT" "$TMP/moto.log"
wait_moto "$S3_PORT"
h create-bucket "$S3_URL" "$BUCKET"
"$ICEBERG_VENVS/pyiceberg/bin/python" "$CATALOG" "$TMP/rest.port" "$TMP/rest.db" \
  "s3://$BUCKET/warehouse" "$S3_URL" "$TOKEN" 2>"$TMP/rest.log" &
REST_PID=$!
started "$REST_PID"
for _ in $(seq 100); do [ -s "$TMP/rest.port" ] && break; sleep 0.1; done
[ -s "$TMP/rest.port" ] || { alive "$REST_PID" rest_catalog; fail "the REST catalog did not start"; }
REST_URL="http://127.0.0.1:$(cat "$TMP/rest.port")"
tansu_topic "$KAFKA_PORT" "$TOPIC" "$PARTITIONS" "$TMP/topic.log"

"$BIN" gen-events --count "$RECORDS" --seed 7 --out "$TMP/gen.ndjson"
{
  cat "$TMP/gen.ndjson"
  printf 'not json at all\n{"messageId": "cut short\n'
} >"$TMP/events.ndjson"
END=$((RECORDS + BAD))
h produce "$BROKER" "$TOPIC" "$TMP/events.ndjson" "$PARTITIONS" "$TMP/state.json" 0 "$END" >"$TMP/produce.out" ||
  fail "produce failed"

CONFIG="$TMP/rest.toml"
connector_config "$CONFIG" "$BROKER" "$GROUP" "$TOPIC" "$S3_URL" "$BUCKET" "" 'kafka_metadata_field = "_kafka"'
table_columns >>"$CONFIG"
cat >>"$CONFIG" <<EOF2
[destinations.iceberg]
namespace = "analytics"
table = "events"
partition_time = "hour"
commit_interval_secs = 2

[destinations.iceberg.catalog]
kind = "rest"
uri = "$REST_URL"
warehouse = "s3://$BUCKET/warehouse"
token = "$TOKEN"
EOF2
NO_COLOR=1 "$BIN" check-config --config "$CONFIG" >"$TMP/check-config.log" 2>&1 ||
  fail "check-config refused the config: $(tail -5 "$TMP/check-config.log")"
grep -q "$TOKEN" "$TMP/check-config.log" && fail "check-config printed the catalog token"
log "check-config accepts the rest config (token redacted)"

AWS_ENV=()
table_drain "$TMP/connector.log"
grep -q "$TOKEN" "$TMP/connector.log" && fail "the connector's log shows the catalog token"

# pyiceberg's RestCatalog through the same server: the second real client.
FIGURES=$("$ICEBERG_VENVS/pyiceberg/bin/python" - "$REST_URL" "$TOKEN" "$S3_URL" "$GROUP" "$TOPIC" \
  "$TMP/state.json" "$RECORDS" <<'EOF2'
import json, sys
from pyiceberg.catalog.rest import RestCatalog
url, token, s3, group, topic, state, good = sys.argv[1:8]
cat = RestCatalog("rest", uri=url, token=token, **{"s3.endpoint": s3, "s3.access-key-id": "testing",
                  "s3.secret-access-key": "testing", "s3.region": "us-east-1"})
t = cat.load_table("analytics.events")
rows = t.scan(selected_fields=("_kafka_partition", "_kafka_offset")).to_arrow()
coords = list(zip(rows["_kafka_partition"].to_pylist(), rows["_kafka_offset"].to_pylist()))
assert len(coords) == int(good), f"{len(coords)} rows, {good} good records"
assert len(set(coords)) == len(coords), f"{len(coords) - len(set(coords))} duplicated rows"
end = {int(p): int(o) for p, o in json.load(open(state))["next_offset"].items()}
by_id = {s.snapshot_id: s for s in t.metadata.snapshots}
found, snap = {}, t.current_snapshot()
while snap is not None:
    for k, v in (snap.summary.additional_properties if snap.summary else {}).items():
        if k.startswith(f"kafka-s3-sink.offset.{group}.{topic}."):
            found.setdefault(int(k.rsplit(".", 1)[1]), int(v))
    snap = by_id.get(snap.parent_snapshot_id)
# Past the partition's last row, at most Kafka's end (quarantined records after the last row
# may be committed to Kafka after the table's last commit).
last_row = {}
for p, o in coords:
    last_row[p] = max(last_row.get(p, -1), o)
assert set(found) == set(end) and all(last_row.get(p, -1) < found[p] <= end[p] for p in end), \
    f"table offsets {found}, last rows {last_row}, Kafka end offsets {end}"
print(json.dumps({"rows": len(coords), "snapshots": len(t.metadata.snapshots),
                  "metadata": t.metadata_location}))
EOF2
) || fail "pyiceberg's RestCatalog read-back failed"
log "pyiceberg RestCatalog: $FIGURES"
META=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["metadata"])' "$FIGURES")
"$ICEBERG_VENVS/duckdb/bin/python" "$REPO/tests/e2e/iceberg_read.py" duckdb "$S3_URL" "$META" >"$TMP/duckdb.json" \
  2>"$TMP/duckdb.log" || fail "DuckDB could not read the table: $(tail -n 5 "$TMP/duckdb.log")"
read -r drows ddistinct < <(python3 -c 'import json,sys; d = json.load(open(sys.argv[1])); print(d["rows"], d["distinct"])' "$TMP/duckdb.json")
{ [ "$drows" -eq "$RECORDS" ] && [ "$ddistinct" -eq "$RECORDS" ]; } ||
  fail "DuckDB counts $drows rows, $ddistinct distinct; $RECORDS good records"
log "DuckDB iceberg_scan: $drows rows, $ddistinct distinct (partition, offset)"
vrc=0
NO_COLOR=1 timeout 300 "$BIN" verify --config "$CONFIG" --json >"$TMP/verify.json" 2>"$TMP/verify.log" || vrc=$?
read -r vfound vmissing vdup < <(python3 -c 'import json,sys; d = json.load(open(sys.argv[1])); print(d["found"], d["missing"], d["duplicated"])' "$TMP/verify.json")
{ [ "$vrc" -eq 0 ] && [ "$vmissing" -eq 0 ] && [ "$vdup" -eq 0 ]; } ||
  fail "verify: found $vfound, missing $vmissing, duplicated $vdup (exit $vrc)"
log "verify: found $vfound of $END, missing 0, duplicated 0"
REQUESTS=$(grep -c '^rest: ' "$TMP/rest.log" || true)
REFUSED=$(grep -c '" 409 ' "$TMP/rest.log" || true)
echo "rest: rows=$drows snapshots=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["snapshots"])' "$FIGURES")" \
  "requests=$REQUESTS refused_commits=$REFUSED elapsed_s=$((SECONDS - START))"
log "ok"
