"""Real Schema Registry clients for tests/e2e/registry.sh: confluent-kafka's SchemaRegistryClient
with its AvroSerializer, ProtobufSerializer and JSONSerializer register the schemas (on the
test-only registry, which this proves wire-compatible) and produce framed records; the matching
deserializers (fastavro, protobuf's json_format) decode them back, and those decoded records,
in the connector's documented JSON mapping (docs/schema-registry.md), are what the connector
must have written.

  registry_clients.py produce BROKER REGISTRY_URL USER PASSWORD TOPIC_PREFIX PROTO_DIR OUT.json
  registry_clients.py check S3_URL BUCKET EXPECTED.json
  registry_clients.py check-columns S3_URL BUCKET EXPECTED.json
  registry_clients.py check-table CATALOG_DB CATALOG_NAME S3_URL IDENT EXPECTED.json
      (in pyiceberg's venv: the Avro records in the connector's from_schema Iceberg table)
"""
import base64
import datetime
import decimal
import gzip
import importlib
import json
import math
import os
import sys
import uuid

AVRO_V1 = {
    "type": "record", "name": "Order", "namespace": "shop",
    "fields": [
        {"name": "id", "type": "string"},
        {"name": "timestamp", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "day", "type": {"type": "int", "logicalType": "date"}},
        {"name": "at", "type": {"type": "int", "logicalType": "time-millis"}},
        {"name": "local", "type": {"type": "long", "logicalType": "local-timestamp-millis"}},
        {"name": "amount", "type": {"type": "bytes", "logicalType": "decimal", "precision": 10, "scale": 2}},
        {"name": "uid", "type": {"type": "string", "logicalType": "uuid"}},
        {"name": "status", "type": {"type": "enum", "name": "Status", "symbols": ["NEW", "PAID", "SHIPPED"]}},
        {"name": "tags", "type": {"type": "array", "items": "string"}},
        {"name": "attrs", "type": {"type": "map", "values": "long"}},
        {"name": "customer", "type": {"type": "record", "name": "Customer", "fields": [
            {"name": "name", "type": "string"},
            {"name": "email", "type": ["null", "string"], "default": None}]}},
        {"name": "lines", "type": {"type": "array", "items": {"type": "record", "name": "Line", "fields": [
            {"name": "sku", "type": "string"}, {"name": "qty", "type": "int"}]}}},
        {"name": "note", "type": ["null", "string"], "default": None},
        {"name": "raw", "type": "bytes"},
        {"name": "score", "type": "double"},
    ],
}
AVRO_V2 = json.loads(json.dumps(AVRO_V1))
AVRO_V2["fields"].append({"name": "coupon", "type": ["null", "string"], "default": None})
# v2 without its decimal and uuid fields (a backward-compatible deletion): a schema the
# connector reads a window of datums at a time (docs/schema-registry.md, "Two readers, one
# text"), where v1 and v2 are read datum by datum.
AVRO_V3 = json.loads(json.dumps(AVRO_V2))
AVRO_V3["fields"] = [f for f in AVRO_V3["fields"] if f["name"] not in ("amount", "uid")]

PROTO = """syntax = "proto3";
package shop;
import "google/protobuf/timestamp.proto";
import "google/protobuf/wrappers.proto";

message Order {
  enum Status { NEW = 0; PAID = 1; SHIPPED = 2; }
  message Line { string sku = 1; int32 qty = 2; }
  string id = 1;
  string timestamp = 2;
  int64 qty = 3;
  Status status = 4;
  repeated string tags = 5;
  map<string, int64> attrs = 6;
  repeated Line lines = 7;
  google.protobuf.Timestamp created = 8;
  google.protobuf.StringValue note = 9;
  optional string coupon = 10;
  oneof payment { string card = 11; string iban = 12; }
  bytes raw = 13;
  double score = 14;
  Line first = 15;
}
"""

JSON_SCHEMA = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "title": "Order",
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "timestamp": {"type": "string"},
        "qty": {"type": "integer"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "customer": {"type": "object", "properties": {"name": {"type": "string"}}},
    },
    "required": ["id", "timestamp"],
}

T0 = datetime.datetime(2026, 11, 3, 10, 0, tzinfo=datetime.timezone.utc)
RECORDS = 40  # per format (Avro: a third each of v1, v2 and v3)


def avro_json(v):
    """A value fastavro decoded, in the connector's JSON mapping."""
    if isinstance(v, dict):
        return {k: avro_json(x) for k, x in v.items()}
    if isinstance(v, list):
        return [avro_json(x) for x in v]
    if isinstance(v, datetime.datetime):
        ms = f"{v.microsecond // 1000:03d}"
        if v.tzinfo is None:
            return v.strftime("%Y-%m-%dT%H:%M:%S.") + ms
        return v.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + ms + "Z"
    if isinstance(v, datetime.date):
        return v.isoformat()
    if isinstance(v, datetime.time):
        return v.strftime("%H:%M:%S.") + f"{v.microsecond // 1000:03d}"
    if isinstance(v, decimal.Decimal):
        return format(v, "f")
    if isinstance(v, uuid.UUID):
        return str(v)
    if isinstance(v, bytes):
        return base64.b64encode(v).decode()
    if isinstance(v, float) and not math.isfinite(v):
        return "NaN" if math.isnan(v) else ("Infinity" if v > 0 else "-Infinity")
    return v


def produce(broker, url, user, password, prefix, proto_dir, out):
    from confluent_kafka import Producer
    from confluent_kafka.schema_registry import SchemaRegistryClient
    from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
    from confluent_kafka.schema_registry.json_schema import JSONDeserializer, JSONSerializer
    from confluent_kafka.schema_registry.protobuf import ProtobufDeserializer, ProtobufSerializer
    from confluent_kafka.serialization import MessageField, SerializationContext
    from google.protobuf import json_format

    client = SchemaRegistryClient({"url": url, "basic.auth.user.info": f"{user}:{password}"})
    producer = Producer({"bootstrap.servers": broker})
    expected = {"avro": {}, "protobuf": {}, "json_schema": {}}

    # Avro: v1, v2 then v3 of one subject, the deserializer reading each with its writer's
    # schema.
    topic = f"{prefix}-avro"
    v1 = AvroSerializer(client, json.dumps(AVRO_V1))
    v2 = AvroSerializer(client, json.dumps(AVRO_V2))
    v3 = AvroSerializer(client, json.dumps(AVRO_V3))
    de = AvroDeserializer(client)
    for i in range(RECORDS):
        ts = T0 + datetime.timedelta(minutes=3 * i, milliseconds=i)
        rec = {
            "id": f"a{i}", "timestamp": ts, "day": ts.date(), "at": datetime.time(10, i % 60, 5, 123000),
            "local": ts.replace(tzinfo=None), "amount": decimal.Decimal(f"{i}.{i % 100:02d}"),
            "uid": str(uuid.UUID(int=i + 1)), "status": ["NEW", "PAID", "SHIPPED"][i % 3],
            "tags": [f"t{j}" for j in range(i % 3)], "attrs": {"a": i, "b": -i},
            "customer": {"name": f"c{i}", "email": None if i % 2 else f"c{i}@example.com"},
            "lines": [{"sku": f"s{j}", "qty": j} for j in range(i % 2 + 1)],
            "note": None if i % 4 else "first", "raw": bytes([i, 255, 0]), "score": i / 3,
        }
        serializer = v1
        if i >= RECORDS // 3:
            rec["coupon"] = None if i % 2 else f"C{i}"
            serializer = v2
        if i >= 2 * RECORDS // 3:
            del rec["amount"], rec["uid"]
            serializer = v3
        ctx = SerializationContext(topic, MessageField.VALUE)
        value = serializer(rec, ctx)
        producer.produce(topic, value=value)
        expected["avro"][rec["id"]] = avro_json(de(value, ctx))

    # Protobuf: the .proto compiled by grpcio-tools' protoc, the registry given what the
    # serializer registers (a base64 descriptor).
    from grpc_tools import protoc
    import grpc_tools
    include = grpc_tools.__path__[0] + "/_proto"
    with open(f"{proto_dir}/shop_order.proto", "w") as f:
        f.write(PROTO)
    rc = protoc.main(["protoc", f"-I{proto_dir}", f"-I{include}", f"--python_out={proto_dir}",
                      f"{proto_dir}/shop_order.proto"])
    if rc != 0:
        sys.exit(f"protoc failed: {rc}")
    sys.path.insert(0, proto_dir)
    pb = importlib.import_module("shop_order_pb2")
    topic = f"{prefix}-protobuf"
    ser = ProtobufSerializer(pb.Order, client, {"use.deprecated.format": False})
    de = ProtobufDeserializer(pb.Order, {"use.deprecated.format": False})
    for i in range(RECORDS):
        m = pb.Order(id=f"p{i}", timestamp=(T0 + datetime.timedelta(minutes=3 * i)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                     qty=i * 1_000_000_000, status=i % 3, tags=[f"t{j}" for j in range(i % 3)],
                     raw=bytes([i, 1]), score=i / 4)
        m.attrs["a"] = i
        for j in range(i % 2 + 1):
            m.lines.add(sku=f"s{j}", qty=j)
        m.created.FromDatetime(T0 + datetime.timedelta(seconds=i, milliseconds=250))
        if i % 2:
            m.note.value = f"n{i}"
            m.card = "4111"
        else:
            m.coupon = f"C{i}"
            m.iban = "DE00"
            m.first.sku = "f"
        ctx = SerializationContext(topic, MessageField.VALUE)
        value = ser(m, ctx)
        producer.produce(topic, value=value)
        back = de(value, ctx)
        expected["protobuf"][m.id] = json_format.MessageToDict(
            back, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)

    # JSON Schema: the payload is written as it is.
    topic = f"{prefix}-json"
    ser = JSONSerializer(json.dumps(JSON_SCHEMA), client)
    de = JSONDeserializer(json.dumps(JSON_SCHEMA))
    for i in range(RECORDS):
        rec = {"id": f"j{i}", "timestamp": (T0 + datetime.timedelta(minutes=3 * i)).strftime("%Y-%m-%dT%H:%M:%SZ"),
               "qty": i, "tags": ["x"] * (i % 3), "customer": {"name": f"c{i}"}}
        ctx = SerializationContext(topic, MessageField.VALUE)
        value = ser(rec, ctx)
        producer.produce(topic, value=value)
        expected["json_schema"][rec["id"]] = de(value, ctx)

    if producer.flush(60) != 0:
        sys.exit("produce: not every record was delivered")
    with open(out, "w") as f:
        json.dump(expected, f)
    print(json.dumps({fmt: len(v) for fmt, v in expected.items()}))


def check(s3_url, bucket, expected_path):
    import boto3
    s3 = boto3.client("s3", endpoint_url=s3_url, aws_access_key_id="testing",
                      aws_secret_access_key="testing", region_name="us-east-1")
    expected = json.load(open(expected_path))
    for fmt, want in expected.items():
        got, errors = {}, []
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{fmt}/")
        for page in pages:
            for o in page.get("Contents", []):
                body = s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
                for line in gzip.decompress(body).splitlines():
                    v = json.loads(line)
                    if "/_errors/" in o["Key"]:
                        errors.append(v)
                        continue
                    if v["id"] in got:
                        sys.exit(f"{fmt}: {v['id']} written twice")
                    got[v["id"]] = v
        if errors:
            sys.exit(f"{fmt}: {len(errors)} records quarantined, e.g. {errors[0]}")
        if set(got) != set(want):
            sys.exit(f"{fmt}: written {sorted(set(got) ^ set(want))[:5]} differ from produced")
        for k, v in want.items():
            if got[k] != v:
                sys.exit(f"{fmt}: record {k}:\n connector    {json.dumps(got[k], sort_keys=True)}\n"
                         f" deserializer {json.dumps(v, sort_keys=True)}")
        print(f"registry: {fmt}: {len(got)} records equal the Python deserializers' output")


def cell_matches(got, want):
    """Whether a `from_schema` column's cell holds the deserialized field `want` (None: the
    record has no such field), by the column's type as docs/schema-registry.md maps it."""
    if want is None:
        return got is None
    if isinstance(got, datetime.datetime):
        w = datetime.datetime.fromisoformat(want.replace("Z", "+00:00"))
        return got == w.astimezone(datetime.timezone.utc)
    if isinstance(got, bool) or isinstance(want, bool):
        return got == want
    if isinstance(got, int):
        return got == int(want)  # Protobuf's 64-bit integers are JSON strings
    if isinstance(got, float):
        if isinstance(want, str):
            return math.isnan(got) if want == "NaN" else got == float(want)
        return got == want
    if isinstance(want, (dict, list)):
        return json.loads(got) == want
    return got == want


def check_rows(what, rows, names, want, seen):
    """Each row once (ids added to `seen`), each of its columns `names` the deserialized field of
    its record in `want`, and every field of the record a column."""
    for row in rows:
        rec = want[row["id"]]
        if row["id"] in seen:
            sys.exit(f"{what}: {row['id']} written twice")
        seen.add(row["id"])
        for n in names:
            if not cell_matches(row[n], rec.get(n)):
                sys.exit(f"{what}: record {row['id']} column {n}: {row[n]!r}, deserializer {rec.get(n)!r}")
        missing = set(rec) - set(names)
        if missing:
            sys.exit(f"{what}: record {row['id']}: fields {sorted(missing)} have no column")


def check_columns(s3_url, bucket, expected_path):
    import io
    import boto3
    import pyarrow.parquet as pq
    s3 = boto3.client("s3", endpoint_url=s3_url, aws_access_key_id="testing",
                      aws_secret_access_key="testing", region_name="us-east-1")
    expected = json.load(open(expected_path))
    for fmt, want in expected.items():
        seen, layouts = set(), set()
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{fmt}-columns/")
        for page in pages:
            for o in page.get("Contents", []):
                if "/_errors/" in o["Key"]:
                    sys.exit(f"{fmt}: a record was quarantined: {o['Key']}")
                body = s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
                table = pq.read_table(io.BytesIO(body), use_threads=False)
                names = [n for n in table.column_names if not n.startswith("_kafka_")]
                layouts.add(tuple(names))
                check_rows(fmt, table.to_pylist(), names, want, seen)
        if seen != set(want):
            sys.exit(f"{fmt}: written {sorted(seen ^ set(want))[:5]} differ from produced")
        if fmt == "avro" and not any("coupon" in l for l in layouts):
            sys.exit("avro: v2's field coupon never became a column")
        print(f"registry: {fmt}: {len(seen)} records' schema columns equal the deserializers' fields "
              f"({len(layouts)} column layouts)")


def check_table(db, name, s3_url, ident, expected_path):
    from pyiceberg.catalog.sql import SqlCatalog
    want = json.load(open(expected_path))["avro"]
    catalog = SqlCatalog(name, uri=f"sqlite:///{db}", **{
        "s3.endpoint": s3_url, "s3.access-key-id": "testing", "s3.secret-access-key": "testing",
        "s3.region": "us-east-1"})
    table = catalog.load_table(ident)
    coupon = table.schema().find_field("coupon")
    if coupon.required:
        sys.exit("table: coupon is required; a schema's new field must be optional")
    rows = table.scan().to_arrow().to_pylist()
    names = [n for n in table.schema().column_names if not n.startswith("_kafka_")]
    seen = set()
    check_rows("table", rows, names, want, seen)
    if seen != set(want):
        sys.exit(f"table: rows {sorted(seen ^ set(want))[:5]} differ from produced")
    print(f"registry: table {ident}: {len(rows)} rows' columns equal the deserializers' fields "
          f"({len(table.schemas())} schemas)")


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    {"produce": produce, "check": check, "check-columns": check_columns,
     "check-table": check_table}[cmd](*args)
    if cmd in ("check-columns", "check-table"):
        # Every check passed. pyarrow's native thread pools can abort the interpreter's own
        # teardown ("terminate called without an active exception"): leave without it.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
