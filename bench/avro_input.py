"""The bench input as Avro for bench/registry.sh: each `gen-events` record mapped onto one Avro
schema (the event's fields; `properties` and `traits` as maps of scalars; `context` as a record
of optional parts), registered on the registry, written with fastavro in the Schema Registry
wire format (magic byte 0, the schema id, the datum) and produced to tansu round-robin over the
partitions, as the JSON drain's records are.

  avro_input.py BROKER TOPIC PARTITIONS NDJSON REGISTRY_URL OUT.json

OUT.json gets the records produced, the Avro bytes produced (the framed values' total, the input
size the MB per CPU-second of the Avro drains is reckoned on) and the schema id.
"""
import datetime
import io
import json
import struct
import sys
import urllib.request

SCALAR = ["null", "boolean", "long", "double", "string"]
STRINGS = {"type": "map", "values": ["null", "string", "boolean", "long", "double"]}
SCHEMA = {
    "type": "record", "name": "Event", "namespace": "bench",
    "fields": [
        {"name": "type", "type": "string"},
        {"name": "messageId", "type": "string"},
        {"name": "userId", "type": ["null", "string"], "default": None},
        {"name": "anonymousId", "type": ["null", "string"], "default": None},
        {"name": "timestamp", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "event", "type": ["null", "string"], "default": None},
        {"name": "name", "type": ["null", "string"], "default": None},
        {"name": "properties", "type": ["null", {"type": "map", "values": SCALAR}], "default": None},
        {"name": "traits", "type": ["null", {"type": "map", "values": SCALAR}], "default": None},
        {"name": "context", "type": {"type": "record", "name": "Context", "fields": [
            {"name": "library", "type": ["null", {"type": "record", "name": "Library", "fields": [
                {"name": "name", "type": "string"}, {"name": "version", "type": "string"}]}], "default": None},
            {"name": "ip", "type": ["null", "string"], "default": None},
            {"name": "locale", "type": ["null", "string"], "default": None},
            {"name": "userAgent", "type": ["null", "string"], "default": None},
            {"name": "page", "type": ["null", STRINGS], "default": None},
            {"name": "device", "type": ["null", STRINGS], "default": None},
            {"name": "os", "type": ["null", STRINGS], "default": None},
            {"name": "app", "type": ["null", STRINGS], "default": None},
        ]}},
    ],
}
TOP = {f["name"] for f in SCHEMA["fields"]}
CONTEXT = {f["name"] for f in SCHEMA["fields"][-1]["type"]["fields"]}


def scalars(d):
    """A JSON object as a map of scalars (nested values as their JSON text)."""
    if d is None:
        return None
    return {k: (json.dumps(v) if isinstance(v, (dict, list)) else v) for k, v in d.items()}


def record(e):
    r = {k: e.get(k) for k in TOP}
    ts = datetime.datetime.fromisoformat(e["timestamp"].replace("Z", "+00:00"))
    r["timestamp"] = ts
    r["properties"] = scalars(e.get("properties"))
    r["traits"] = scalars(e.get("traits"))
    c = e.get("context") or {}
    r["context"] = {k: c.get(k) for k in CONTEXT}
    for k in ("page", "device", "os", "app"):
        r["context"][k] = scalars(c.get(k))
    return r


def main(broker, topic, partitions, path, url, out):
    import fastavro
    from confluent_kafka import Producer

    body = json.dumps({"schema": json.dumps(SCHEMA)}).encode()
    req = urllib.request.Request(f"{url}/subjects/{topic}-value/versions", data=body, method="POST",
                                 headers={"Content-Type": "application/vnd.schemaregistry.v1+json"})
    schema_id = json.load(urllib.request.urlopen(req, timeout=10))["id"]
    parsed = fastavro.parse_schema(SCHEMA)
    header = b"\0" + struct.pack(">I", schema_id)
    producer = Producer({"bootstrap.servers": broker, "linger.ms": 50, "batch.size": 1 << 20,
                         "queue.buffering.max.kbytes": 1 << 20})
    partitions = int(partitions)
    n = size = 0
    for line in open(path, "rb"):
        buf = io.BytesIO()
        buf.write(header)
        fastavro.schemaless_writer(buf, parsed, record(json.loads(line)))
        value = buf.getvalue()
        while True:
            try:
                producer.produce(topic, value=value, partition=n % partitions)
                break
            except BufferError:
                producer.poll(0.1)
        n += 1
        size += len(value)
        if n % 10000 == 0:
            producer.poll(0)
    if producer.flush(120) != 0:
        sys.exit("avro_input: not every record was delivered")
    json.dump({"records": n, "avro_bytes": size, "schema_id": schema_id}, open(out, "w"))


if __name__ == "__main__":
    main(*sys.argv[1:7])
