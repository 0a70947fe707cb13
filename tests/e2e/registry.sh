#!/usr/bin/env bash
# End-to-end: Schema Registry input with real clients. confluent-kafka's Python
# SchemaRegistryClient, AvroSerializer, ProtobufSerializer and JSONSerializer register their
# schemas on the test-only registry (`kafka-s3-sink-bench registry-server`, basic auth) and
# produce framed records to tansu: Avro v1, v2 and v3 of one subject (nested records, arrays,
# maps, enums, unions, nullable fields, logical types; v3 without v1's decimal and uuid fields,
# so the connector reads its datums a window at a time and the others one by one), Protobuf (nested and repeated messages, a map,
# an enum, a oneof, an optional, well-known types) and JSON Schema, one topic each. The connector
# (three destinations, value_format avro / protobuf / json_schema) writes them to moto; every
# record it wrote must equal what the Python deserializers (fastavro, protobuf's json_format)
# give for it, in docs/schema-registry.md's mapping, with nothing quarantined. Three more
# destinations write the same topics as Parquet with `columns = "from_schema"` to a second
# bucket: read with pyarrow, each file's columns are its schema's fields (v2's new field in the
# files after it) and every cell equals the deserialized record's field. One more writes the
# Avro topic to an Iceberg table (sqlite catalog, `from_schema`): read with pyiceberg, the table
# has v2's field as an optional column and every row's columns equal the deserialized record.
# Then `verify` audits each destination (decoding through the same registry) and must find all
# 40 records.
#
#   bash tests/e2e/registry.sh
#
# Env: KAFKA_S3_SINK_BIN, KAFKA_S3_SINK_BENCH_BIN (default target/debug/…, built if missing).
# Installs what is missing (tests/e2e/lib/common.sh; confluent-kafka's avro, protobuf and json
# extras and grpcio-tools with pip). Only loopback; every process is stopped by its PID.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BIN=${KAFKA_S3_SINK_BIN:-$REPO/target/debug/kafka-s3-sink}
BENCH_BIN=${KAFKA_S3_SINK_BENCH_BIN:-$REPO/target/debug/kafka-s3-sink-bench}
CLIENTS="$REPO/tests/e2e/registry_clients.py"
log() { printf 'registry: %s\n' "$*" >&2; }
fail() { log "FAIL: $*"; exit 1; }
h() { python3 "$REPO/tests/e2e/e2e_helpers.py" "$@"; }
. "$REPO/tests/e2e/lib/common.sh"

install_e2e_tools
python3 -c 'import fastavro, google.protobuf, jsonschema, grpc_tools, httpx, cachetools, attrs' 2>/dev/null || {
  log "installing confluent-kafka's Schema Registry extras and grpcio-tools (pip)"
  python3 -m pip install -q "confluent-kafka[avro,json,protobuf,schemaregistry]==2.16.1" "grpcio-tools==1.76.0"
}
python3 -c 'import pyarrow' 2>/dev/null || {
  log "installing pyarrow (pip)"
  python3 -m pip install -q "pyarrow==26.0.1"
}
# shellcheck source=tests/e2e/lib/iceberg_readers.sh
. "$REPO/tests/e2e/lib/iceberg_readers.sh"
install_pyiceberg
if [ ! -x "$BIN" ] || [ ! -x "$BENCH_BIN" ]; then
  log "building the connector and kafka-s3-sink-bench"
  (cd "$REPO" && cargo build --quiet --bins)
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/e2e-registry.XXXXXX")
trap 'e2e_exit "$TMP" "${REGISTRY_KEEP_DIR:-}"' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

KAFKA_PORT=$(h port)
S3_PORT=$(h port)
RUN_ID="$(date +%s)-$$"
PREFIX="orders-$RUN_ID"
BUCKET="e2e-registry-$$"
S3_URL="http://127.0.0.1:$S3_PORT"
BROKER="127.0.0.1:$KAFKA_PORT"

start_tansu "$KAFKA_PORT" "$TMP/tansu.log"
start_moto "$S3_PORT" "$TMP/moto.log"
"$BENCH_BIN" registry-server --user sr-user --password sr-secret >"$TMP/registry.json" 2>"$TMP/registry.log" &
REGISTRY_PID=$!
started "$REGISTRY_PID"
deadline=$((SECONDS + 15))
until [ -s "$TMP/registry.json" ]; do
  alive "$REGISTRY_PID" registry-server
  [ "$SECONDS" -lt "$deadline" ] || fail "the registry did not start"
  sleep 0.2
done
REGISTRY_URL=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["url"])' "$TMP/registry.json")
wait_moto "$S3_PORT"
h create-bucket "$S3_URL" "$BUCKET"
h create-bucket "$S3_URL" "$BUCKET-cols"
for f in avro protobuf json; do tansu_topic "$KAFKA_PORT" "$PREFIX-$f" 2 "$TMP/topic-$f.log"; done

log "producing with confluent-kafka's serializers through $REGISTRY_URL"
python3 "$CLIENTS" produce "$BROKER" "$REGISTRY_URL" sr-user sr-secret "$PREFIX" "$TMP" "$TMP/expected.json" \
  >"$TMP/produce.out" 2>"$TMP/produce.log" || { cat "$TMP/produce.log" >&2; fail "producing failed"; }
log "produced $(cat "$TMP/produce.out")"

cat >"$TMP/connector.toml" <<EOC
[kafka]
brokers = "$BROKER"
group_id = "registry-$RUN_ID"
topics = ["$PREFIX-avro", "$PREFIX-protobuf", "$PREFIX-json"]
session_timeout_ms = 6000

[kafka.schema_registry]
url = "$REGISTRY_URL"
username = "sr-user"
password = "\${SR_PASSWORD}"

[http]
listen = "127.0.0.1:$(h port)"

[pipeline]
drain_deadline_secs = 5
shutdown_deadline_secs = 20
EOC
# from_schema NAME TOPIC FORMAT: a destination writing TOPIC (value_format FORMAT) as Parquet
# with the schemas' columns to $BUCKET-cols (prefix NAME), appended to the config.
from_schema() {
  cat >>"$TMP/connector.toml" <<EOC

[[destinations]]
name = "$1"
topics = ["$2"]
value_format = "$3"
bucket = "$BUCKET-cols"
endpoint = "$S3_URL"
force_path_style = true
prefix = "$1"
kafka_metadata_field = "_kafka"

[destinations.credentials]
access_key_id = "testing"
secret_access_key = "testing"

[destinations.routing]
time_source = "kafka_timestamp"

[destinations.batch]
format = "parquet"
idle_secs = 1

[destinations.parquet]
columns = "from_schema"
EOC
}
for f in avro protobuf json_schema; do
  topic="$PREFIX-${f%_schema}"
  cat >>"$TMP/connector.toml" <<EOC

[[destinations]]
name = "$f"
topics = ["$topic"]
value_format = "$f"
bucket = "$BUCKET"
endpoint = "$S3_URL"
force_path_style = true
prefix = "$f"

[destinations.credentials]
access_key_id = "testing"
secret_access_key = "testing"

[destinations.routing]
time_source = "event_time"
time_field = "timestamp"

[destinations.batch]
idle_secs = 1

EOC
  from_schema "$f-columns" "$topic" "$f"
done
from_schema avro_table "$PREFIX-avro" avro
cat >>"$TMP/connector.toml" <<EOC

[destinations.iceberg]
namespace = "shop"
table = "orders"
partition_time = "hour"
commit_interval_secs = 1

[destinations.iceberg.catalog]
kind = "sql"
uri = "sqlite://$TMP/catalog.db?mode=rwc"
warehouse = "s3://$BUCKET-cols/warehouse"
EOC
SR_PASSWORD=sr-secret "$BIN" check-config --config "$TMP/connector.toml" >"$TMP/check.log" 2>&1 ||
  { cat "$TMP/check.log" >&2; fail "check-config refused the config"; }
! grep -q sr-secret "$TMP/check.log" || fail "check-config printed the registry password"
SR_PASSWORD=sr-secret NO_COLOR=1 "$BIN" run --config "$TMP/connector.toml" >"$TMP/connector.log" 2>&1 &
CONNECTOR_PID=$!
started "$CONNECTOR_PID"
TOTAL=$((3 * 40))
wait_records "$S3_URL" "$BUCKET" "$TOTAL" "$CONNECTOR_PID" connector
stopped "$CONNECTOR_PID"
! grep -q sr-secret "$TMP/connector.log" || fail "the connector logged the registry password"
python3 "$CLIENTS" check "$S3_URL" "$BUCKET" "$TMP/expected.json" || fail "the connector's records differ"
python3 "$CLIENTS" check-columns "$S3_URL" "$BUCKET-cols" "$TMP/expected.json" || fail "the schema columns differ"
timeout 300 "$ICEBERG_VENVS/pyiceberg/bin/python" "$CLIENTS" check-table "$TMP/catalog.db" avro_table "$S3_URL" \
  shop.orders "$TMP/expected.json" || fail "the table's columns differ"
for f in avro protobuf json_schema avro-columns protobuf-columns json_schema-columns avro_table; do
  vrc=0
  SR_PASSWORD=sr-secret "$BIN" verify --config "$TMP/connector.toml" --destination "$f" \
    >"$TMP/verify-$f.out" 2>"$TMP/verify-$f.log" || vrc=$?
  line=$(grep '^verify:' "$TMP/verify-$f.out" | tail -n 1 || true)
  [ "$vrc" = 0 ] || { cat "$TMP/verify-$f.out" "$TMP/verify-$f.log" >&2; fail "verify of $f exited $vrc"; }
  case "$line" in
    *" found=40 missing=0 "*) log "verify $f: $line" ;;
    *) cat "$TMP/verify-$f.out" >&2; fail "verify of $f: $line" ;;
  esac
  ! grep -q sr-secret "$TMP/verify-$f.out" "$TMP/verify-$f.log" || fail "verify printed the registry password"
done
log "OK: $TOTAL records of three formats equal the Python deserializers' output, as lines and as schema columns; verify finds them all"
