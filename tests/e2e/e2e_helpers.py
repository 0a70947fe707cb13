#!/usr/bin/env python3
"""Helpers for the end-to-end scripts in tests/e2e/ (stdlib + boto3 + confluent-kafka).

Subcommands (every wait is bounded by a deadline in seconds):
  port                                   print a free loopback TCP port
  wait-tcp HOST PORT SECS                until a TCP connect succeeds
  wait-http URL SECS                     until GET URL answers 2xx
  create-bucket ENDPOINT BUCKET          CreateBucket with dummy keys, path style
  produce BROKER TOPIC FILE PARTS STATE FIRST END
                                         lines FIRST..END-1 (0-based) of FILE, one record each,
                                         partition = line % PARTS; adds the delivered counts to
                                         the JSON file STATE {"total", "per_partition",
                                         "next_offset"} (created if missing) and prints it
  list-offsets BROKER TOPIC PARTS         prints JSON {partition: high watermark} as answered by
                                         the broker's ListOffsets (informational)
  query PROM EXPR                        instant query; prints the JSON result vector
  scalar PROM EXPR                       instant query of a one-series EXPR; prints its value as
                                         an integer, or "none" when the result is empty
  by PROM EXPR LABEL                     instant query; prints "LABEL=value,..." per series
  range PROM EXPR SECS                   range query over the last SECS at 1 s step; prints
                                         the JSON values of the (single) series
  s3-count ENDPOINT BUCKET               prints JSON {"objects", "records"}; records = lines of
                                         every object, gunzipped when it ends with .gz
  status PROM PRODUCED_JSON              one line "LAG CONSUMED COMMITTED_OK COMMITTED_TOTAL"
                                         (LAG is "none" while the series is absent); COMMITTED_OK
                                         is 1 when every partition's committed offset equals the
                                         producer's next offset
  partitions PROM METRIC                 prints JSON {partition: value} of a per-partition metric
"""
import gzip
import json
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

DUMMY_KEY = "testing"


def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_tcp(host, port, secs):
    deadline = time.monotonic() + secs
    while time.monotonic() < deadline:
        try:
            socket.create_connection((host, port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    sys.exit(f"wait-tcp: {host}:{port} not listening after {secs}s")


def wait_http(url, secs):
    deadline = time.monotonic() + secs
    last = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if 200 <= r.status < 300:
                    return
                last = r.status
        except (urllib.error.URLError, OSError) as e:
            last = e
        time.sleep(0.2)
    sys.exit(f"wait-http: {url} not ready after {secs}s (last: {last})")


def s3_client(endpoint):
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=DUMMY_KEY,
        aws_secret_access_key=DUMMY_KEY,
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3}),
    )


def create_bucket(endpoint, bucket):
    s3_client(endpoint).create_bucket(Bucket=bucket)


def produce(broker, topic, path, parts, state, first, end):
    from confluent_kafka import Producer

    parts, first, end = int(parts), int(first), int(end)
    p = Producer({"bootstrap.servers": broker, "linger.ms": 20, "acks": "all"})
    per = {}
    nxt = {}
    errors = []

    def on_delivery(err, msg):
        if err is not None:
            errors.append(str(err))
            return
        per[msg.partition()] = per.get(msg.partition(), 0) + 1
        nxt[msg.partition()] = max(nxt.get(msg.partition(), 0), msg.offset() + 1)

    sent = 0
    with open(path, "rb") as f:
        for i, line in enumerate(f):
            if i < first:
                continue
            if i >= end:
                break
            value = line.rstrip(b"\n")
            while True:
                try:
                    p.produce(topic, value=value, key=f"k{i}".encode(),
                              partition=i % parts, on_delivery=on_delivery)
                    break
                except BufferError:
                    p.poll(0.1)
            sent += 1
            p.poll(0)
    left = p.flush(60)
    if errors or left:
        sys.exit(f"produce: {len(errors)} delivery errors ({errors[:3]}), {left} undelivered")
    if sum(per.values()) != sent:
        sys.exit(f"produce: sent {sent}, delivered {sum(per.values())}")
    try:
        with open(state) as f:
            st = json.load(f)
    except FileNotFoundError:
        st = {"total": 0, "per_partition": {}, "next_offset": {}}
    st["total"] += sent
    for k, v in per.items():
        st["per_partition"][str(k)] = st["per_partition"].get(str(k), 0) + v
    for k, v in nxt.items():
        st["next_offset"][str(k)] = max(st["next_offset"].get(str(k), 0), v)
    st["per_partition"] = dict(sorted(st["per_partition"].items()))
    st["next_offset"] = dict(sorted(st["next_offset"].items()))
    with open(state, "w") as f:
        json.dump(st, f)
    print(json.dumps(st))


def list_offsets(broker, topic, parts):
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": broker, "group.id": "e2e-list-offsets"})
    try:
        print(json.dumps({str(p): c.get_watermark_offsets(TopicPartition(topic, p), timeout=5)[1]
                          for p in range(int(parts))}))
    finally:
        c.close()


def prom_get(prom, path, params):
    url = f"{prom}{path}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=5) as r:
        body = json.load(r)
    if body.get("status") != "success":
        sys.exit(f"prometheus: {url}: {body}")
    return body["data"]["result"]


def query(prom, expr):
    print(json.dumps(prom_get(prom, "/api/v1/query", {"query": expr})))


def range_query(prom, expr, secs):
    end = time.time()
    res = prom_get(prom, "/api/v1/query_range",
                   {"query": expr, "start": end - float(secs), "end": end, "step": "1"})
    print(json.dumps([[float(t), float(v)] for t, v in res[0]["values"]] if res else []))


def by_label(prom, expr, label):
    res = prom_get(prom, "/api/v1/query", {"query": expr})
    return ",".join(f"{r['metric'].get(label, '')}={int(float(r['value'][1]))}" for r in res)


def scalar(prom, expr):
    res = prom_get(prom, "/api/v1/query", {"query": expr})
    return float(res[0]["value"][1]) if res else None


def per_partition(prom, metric):
    res = prom_get(prom, "/api/v1/query", {"query": metric})
    return {r["metric"]["partition"]: int(float(r["value"][1])) for r in res}


def status(prom, produced_json):
    with open(produced_json) as f:
        want = {k: int(v) for k, v in json.load(f)["next_offset"].items()}
    try:
        lag, consumed, committed = _status(prom)
    except (OSError, ValueError, KeyError) as e:  # a transient failure: poll again
        print(f"status: {e}", file=sys.stderr)
        print("none none 0 0")
        return
    ok = int(committed == want)
    fmt = lambda v: "none" if v is None else str(int(v))
    print(fmt(lag), fmt(consumed), ok, sum(committed.values()))


def _status(prom):
    lag = scalar(prom, "sum(kafka_s3_sink_consumer_lag_committed)")
    consumed = scalar(prom, "sum(kafka_s3_sink_records_consumed_total)")
    committed = per_partition(prom, "kafka_s3_sink_committed_offset")
    return lag, consumed, committed


def s3_count(endpoint, bucket):
    s3 = s3_client(endpoint)
    objects = records = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            body = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
            if obj["Key"].endswith(".gz"):
                body = gzip.decompress(body)
            objects += 1
            records += sum(1 for line in body.split(b"\n") if line)
    print(json.dumps({"objects": objects, "records": records}))


def main(argv):
    cmd, args = argv[1], argv[2:]
    if cmd == "port":
        print(free_port())
    elif cmd == "wait-tcp":
        wait_tcp(args[0], int(args[1]), float(args[2]))
    elif cmd == "wait-http":
        wait_http(args[0], float(args[1]))
    elif cmd == "create-bucket":
        create_bucket(*args)
    elif cmd == "produce":
        produce(*args)
    elif cmd == "list-offsets":
        list_offsets(*args)
    elif cmd == "query":
        query(*args)
    elif cmd == "scalar":
        v = scalar(*args)
        print("none" if v is None else int(v))
    elif cmd == "by":
        print(by_label(*args))
    elif cmd == "range":
        range_query(*args)
    elif cmd == "status":
        status(*args)
    elif cmd == "partitions":
        print(json.dumps(dict(sorted(per_partition(*args).items()))))
    elif cmd == "s3-count":
        s3_count(*args)
    else:
        sys.exit(f"unknown subcommand {cmd}")


if __name__ == "__main__":
    main(sys.argv)
