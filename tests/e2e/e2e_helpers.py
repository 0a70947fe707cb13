#!/usr/bin/env python3
"""Helpers for the end-to-end scripts in tests/e2e/ (stdlib + boto3 + confluent-kafka).

Subcommands (every wait is bounded by a deadline in seconds):
  port                                   print a free loopback TCP port
  wait-tcp HOST PORT SECS                until a TCP connect succeeds
  wait-http URL SECS                     until GET URL answers 2xx
  create-bucket ENDPOINT BUCKET          CreateBucket with dummy keys, path style
  tls-proxy PORT UPSTREAM_PORT CERT KEY CA SECS
                                         TLS-terminating TCP proxy on 127.0.0.1:PORT to
                                         127.0.0.1:UPSTREAM_PORT (server certificate CERT/KEY;
                                         every client must present a certificate signed by CA,
                                         unless CA is "-");
                                         stops after SECS or on SIGTERM; logs each handshake
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
                                         every object, gunzipped when it ends with .gz (a count
                                         to wait on, or to see that nothing was written; which
                                         records are in S3 is `verify`'s, or `compare`'s)
  status PROM PRODUCED_JSON              one line "LAG CONSUMED COMMITTED_OK COMMITTED_TOTAL"
                                         (LAG is "none" while the series is absent); COMMITTED_OK
                                         is 1 when every partition's committed offset equals the
                                         producer's next offset
  partitions PROM METRIC                 prints JSON {partition: value} of a per-partition metric

Used by faults.sh (no Prometheus there: each connector's own /metrics is read directly):
  produce-steady BROKER TOPIC FILE PARTS STATE RATE STOPFILE SECS
                                         lines of FILE from the first, one record each
                                         (partition = line % PARTS, key k<line>), at most RATE
                                         per second, until the file ends, STOPFILE exists,
                                         SIGTERM, or SECS pass; rewrites STATE (as `produce`,
                                         plus "lines": lines sent) every second and at the end
  committed BROKER GROUP TOPIC PARTS     prints JSON {partition: committed offset} of GROUP
                                         (-1 when none)
  offsets-equal STATE COMMITTED_JSON     exit 0 when every partition's committed offset (JSON
                                         text) equals the producer's next offset in STATE
  caught-up URL STATE COMMITTED_JSON     exit 0 when the connector at URL (a fresh incarnation
                                         that started from COMMITTED_JSON and owns every
                                         partition) has taken in every record up to STATE's
                                         next offsets: records_consumed_total{partition} >=
                                         next offset - committed offset, for each partition
  metric URL NAME [LABEL=VALUE...]       sum of NAME's samples (with those labels) in the
                                         Prometheus text at URL; "none" when unreachable or
                                         absent
  owned URL                              partitions a connector owns now: rebalance_partitions
                                         assigned - revoked from its /metrics ("none" if down)
  delays SEED N LO HI                    N seeded uniform numbers in [LO, HI), one a line
  http METHOD URL                        one request; prints the body; exit 1 unless 2xx
  compare S3_ENDPOINT BUCKET BROKER TOPIC STATE
                                         the independent count: reads the topic back from Kafka
                                         up to STATE's next offsets and every object of BUCKET
                                         (gunzipped; quarantine envelopes unwrapped) and compares
                                         the multisets of record values; prints JSON {produced,
                                         in_s3, missing, duplicated, unexpected, objects,
                                         quarantined, kafka_duplicate_values, ...examples}

Every Kafka client here adds the librdkafka properties of the JSON object in $E2E_KAFKA_CONFIG
(e.g. TLS settings), when set.
"""
import asyncio
import gzip
import hashlib
import json
import os
import random
import signal
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


def kafka_config(**props):
    """librdkafka properties for a client: PROPS and those of $E2E_KAFKA_CONFIG; with
    $E2E_MSK_IAM_REGION, SASL/OAUTHBEARER with MSK IAM tokens from the published Python signer
    (aws-msk-iam-sasl-signer-python, AWS credentials from the default chain)."""
    props.update(json.loads(os.environ.get("E2E_KAFKA_CONFIG") or "{}"))
    region = os.environ.get("E2E_MSK_IAM_REGION")
    if region:
        from aws_msk_iam_sasl_signer import MSKAuthTokenProvider

        def oauth_cb(_config):
            token, expiry_ms = MSKAuthTokenProvider.generate_auth_token(region)
            return token, expiry_ms / 1000

        props.update({"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "OAUTHBEARER",
                      "oauth_cb": oauth_cb})
    return props


def tls_proxy(port, upstream_port, cert, key, ca, secs):
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    if ca != "-":
        ctx.load_verify_locations(ca)
        ctx.verify_mode = ssl.CERT_REQUIRED

    async def pipe(reader, writer):
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError, ssl.SSLError):
            pass
        finally:
            writer.close()

    async def handle(reader, writer):
        peer = writer.get_extra_info("peercert") or {}
        subject = dict(x[0] for x in peer.get("subject", ()))
        print(f"tls-proxy: handshake ok, client {subject.get('commonName')}", flush=True)
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", int(upstream_port))
        except OSError as e:
            print(f"tls-proxy: upstream: {e}", flush=True)
            writer.close()
            return
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def handshake_errors(loop, context):
        print(f"tls-proxy: {context.get('exception') or context.get('message')}", flush=True)

    async def serve():
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(handshake_errors)
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        server = await asyncio.start_server(handle, "127.0.0.1", int(port), ssl=ctx)
        async with server:
            try:
                await asyncio.wait_for(stop.wait(), float(secs))
            except asyncio.TimeoutError:
                pass

    asyncio.run(serve())


def produce(broker, topic, path, parts, state, first, end):
    from confluent_kafka import Producer

    parts, first, end = int(parts), int(first), int(end)
    p = Producer(kafka_config(**{"bootstrap.servers": broker, "linger.ms": 20, "acks": "all"}))
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

    c = Consumer(kafka_config(**{"bootstrap.servers": broker, "group.id": "e2e-list-offsets"}))
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


def _write_state(state, st):
    tmp = f"{state}.tmp"
    with open(tmp, "w") as f:
        json.dump(st, f)
    os.replace(tmp, state)


def produce_steady(broker, topic, path, parts, state, rate, stopfile, secs):
    """Paced producer for faults.sh: runs in the background while the connectors are killed,
    restarted and rescaled; stops at EOF, STOPFILE, SIGTERM or after SECS."""
    from confluent_kafka import Producer

    parts, rate, secs = int(parts), float(rate), float(secs)
    p = Producer(kafka_config(**{"bootstrap.servers": broker, "linger.ms": 20, "acks": "all",
                                 "enable.idempotence": True}))
    st = {"total": 0, "per_partition": {}, "next_offset": {}, "lines": 0, "errors": 0}
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append("SIGTERM"))

    def on_delivery(err, msg):
        if err is not None:
            st["errors"] += 1
            print(f"produce-steady: delivery error: {err}", file=sys.stderr)
            return
        k = str(msg.partition())
        st["total"] += 1
        st["per_partition"][k] = st["per_partition"].get(k, 0) + 1
        st["next_offset"][k] = max(st["next_offset"].get(k, 0), msg.offset() + 1)

    t0 = time.monotonic()
    deadline = t0 + secs
    last_save = 0.0
    sent = 0
    why = "end of file"
    with open(path, "rb") as f:
        for i, line in enumerate(f):
            now = time.monotonic()
            if stop:
                why = stop[0]
                break
            if now >= deadline:
                why = f"{secs:g} s passed"
                break
            if i % 64 == 0 and os.path.exists(stopfile):
                why = "stop file"
                break
            ahead = t0 + i / rate - now  # pace: line i is due at t0 + i/rate
            if ahead > 0:
                p.poll(ahead)
            while True:
                try:
                    p.produce(topic, value=line.rstrip(b"\n"), key=f"k{i}".encode(),
                              partition=i % parts, on_delivery=on_delivery)
                    break
                except BufferError:
                    p.poll(0.1)
            sent += 1
            st["lines"] = sent
            p.poll(0)
            if now - last_save >= 1.0:
                last_save = now
                _write_state(state, st)
    left = p.flush(60)
    st["lines"] = sent
    _write_state(state, st)
    print(f"produce-steady: stopped ({why}): {sent} sent, {st['total']} delivered, "
          f"{st['errors']} errors, {left} undelivered in {time.monotonic() - t0:.1f}s",
          file=sys.stderr)
    if st["errors"] or left or st["total"] != sent:
        sys.exit(1)


def committed(broker, group, topic, parts):
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer(kafka_config(**{"bootstrap.servers": broker, "group.id": group,
                                 "enable.auto.commit": False}))
    try:
        tps = c.committed([TopicPartition(topic, p) for p in range(int(parts))], timeout=10)
        return {str(tp.partition): (tp.offset if tp.offset >= 0 else -1) for tp in tps}
    finally:
        c.close()


def offsets_equal(state, committed_json, window=None):
    """Committed offsets == the producer's end offsets; with `window` (batch.deterministic),
    == the end offsets rounded down to a window start (commits land on window starts)."""
    with open(state) as f:
        want = {k: int(v) for k, v in json.load(f)["next_offset"].items()}
    if window:
        want = {k: v - v % int(window) for k, v in want.items()}
    got = {k: int(v) for k, v in json.loads(committed_json).items()}
    return all(got.get(k, -1) == v for k, v in want.items())


def caught_up(url, state, committed_json):
    samples = scrape(url)
    if samples is None:
        return False
    with open(state) as f:
        want = {k: int(v) for k, v in json.load(f)["next_offset"].items()}
    start = {k: max(0, int(v)) for k, v in json.loads(committed_json).items()}
    got = {}
    for n, l, v in samples:
        if n == "kafka_s3_sink_records_consumed_total":
            got[l.get("partition")] = got.get(l.get("partition"), 0) + v
    return all(got.get(k, 0) >= end - start.get(k, 0) for k, end in want.items())


def scrape(url):
    """Prometheus text at url -> list of (name, {label: value}, float); None if unreachable."""
    try:
        with urllib.request.urlopen(url, timeout=3) as r:
            text = r.read().decode()
    except (urllib.error.URLError, OSError):
        return None
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        name, _, rest = head.partition("{")
        labels = {}
        for part in rest.rstrip("}").split('",'):
            k, sep, v = part.partition('="')
            if sep:
                labels[k.strip(",")] = v.rstrip('"')
        try:
            out.append((name, labels, float(value)))
        except ValueError:
            pass
    return out


def metric(url, name, *selectors):
    samples = scrape(url)
    if samples is None:
        return None
    want = dict(s.split("=", 1) for s in selectors)
    vals = [v for n, l, v in samples
            if n == name and all(l.get(k) == v2 for k, v2 in want.items())]
    return sum(vals) if vals else None


def owned(url):
    samples = scrape(url)
    if samples is None:
        return None
    n = "kafka_s3_sink_rebalance_partitions_total"
    a = sum(v for m, l, v in samples if m == n and l.get("event") == "assigned")
    r = sum(v for m, l, v in samples if m == n and l.get("event") == "revoked")
    return int(a - r)


def http_call(method, url):
    req = urllib.request.Request(url, method=method.upper(), data=b"" if method.upper() == "POST" else None)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            print(r.read().decode().rstrip("\n"))
    except (urllib.error.URLError, OSError) as e:
        sys.exit(f"http: {method} {url}: {e}")


def _digest(b):
    return hashlib.blake2b(b, digest_size=16).digest()


def _kafka_values(broker, topic, want):
    """{digest: [(partition, offset), ...]} of every record below the wanted end offsets."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer(kafka_config(**{"bootstrap.servers": broker, "group.id": f"e2e-compare-{os.getpid()}",
                                 "enable.auto.commit": False, "enable.partition.eof": True,
                                 "fetch.max.bytes": 16 << 20}))
    values = {}
    try:
        todo = {p: end for p, end in want.items() if end > 0}
        c.assign([TopicPartition(topic, p, 0) for p in todo])
        pos = {p: 0 for p in todo}
        deadline = time.monotonic() + 300
        while todo:
            if time.monotonic() > deadline:
                sys.exit(f"compare: reading the topic back timed out; still to read {todo}, at {pos}")
            for m in c.consume(1000, 1.0):
                if m.error():
                    continue  # partition EOF: keep polling until the wanted end
                p, off = m.partition(), m.offset()
                if p not in todo or off >= todo[p]:
                    continue
                values.setdefault(_digest(m.value() or b""), []).append((p, off))
                pos[p] = off + 1
                if pos[p] >= todo[p]:
                    del todo[p]
    finally:
        c.close()
    return values


def _s3_lines(endpoint, bucket):
    """Yields (key, value bytes) for every line of every object; quarantine envelopes are
    unwrapped to the original value."""
    import base64

    s3 = s3_client(endpoint)
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            key = obj["Key"]
            body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
            if key.endswith(".gz"):
                body = gzip.decompress(body)
            quarantine = "_errors/" in key
            for line in body.split(b"\n"):
                if not line:
                    continue
                if quarantine:
                    env = json.loads(line)
                    if env.get("value_base64") is not None:
                        line = base64.b64decode(env["value_base64"])
                    elif env.get("value") is not None:
                        line = env["value"].encode()
                    else:
                        line = b""
                yield key, line, quarantine


def compare(endpoint, bucket, broker, topic, state):
    with open(state) as f:
        st = json.load(f)
    want = {int(k): int(v) for k, v in st["next_offset"].items()}
    kafka = _kafka_values(broker, topic, want)
    produced = sum(len(v) for v in kafka.values())
    seen = {}
    keys_of = {}
    objects = set()
    in_s3 = quarantined = 0
    for key, line, q in _s3_lines(endpoint, bucket):
        objects.add(key)
        in_s3 += 1
        quarantined += q
        d = _digest(line)
        seen[d] = seen.get(d, 0) + 1
        keys_of.setdefault(d, []).append(key)
    missing = duplicated = unexpected = 0
    missing_ex, dup_ex = [], []
    dup_pairs = {}
    for d, where in kafka.items():
        n = seen.get(d, 0)
        if n < len(where):
            missing += len(where) - n
            if len(missing_ex) < 10:
                missing_ex.append({"partition": where[0][0], "offset": where[0][1]})
        elif n > len(where):
            duplicated += n - len(where)
            ks = sorted(keys_of[d])
            pair = " & ".join(ks)
            dup_pairs[pair] = dup_pairs.get(pair, 0) + n - len(where)
            if len(dup_ex) < 10:
                dup_ex.append({"partition": where[0][0], "offset": where[0][1], "keys": ks})
    for d, n in seen.items():
        if d not in kafka:
            unexpected += n
    out = {
        "produced": produced,
        "producer_delivered": st.get("total"),
        "in_s3": in_s3,
        "missing": missing,
        "duplicated": duplicated,
        "unexpected": unexpected,
        "objects": len(objects),
        "quarantined": quarantined,
        "kafka_duplicate_values": sum(len(v) - 1 for v in kafka.values() if len(v) > 1),
        "missing_examples": missing_ex,
        "duplicate_examples": dup_ex,
        "duplicates_by_objects": dict(sorted(dup_pairs.items(), key=lambda kv: -kv[1])[:10]),
    }
    print(json.dumps(out))


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
    elif cmd == "tls-proxy":
        tls_proxy(*args)
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
    elif cmd == "produce-steady":
        produce_steady(*args)
    elif cmd == "committed":
        print(json.dumps(committed(*args)))
    elif cmd == "offsets-equal":
        sys.exit(0 if offsets_equal(*args) else 1)
    elif cmd == "caught-up":
        sys.exit(0 if caught_up(*args) else 1)
    elif cmd == "metric":
        v = metric(*args)
        print("none" if v is None else int(v))
    elif cmd == "owned":
        v = owned(*args)
        print("none" if v is None else v)
    elif cmd == "delays":
        rng = random.Random(int(args[0]))
        for _ in range(int(args[1])):
            print(f"{rng.uniform(float(args[2]), float(args[3])):.2f}")
    elif cmd == "http":
        http_call(*args)
    elif cmd == "compare":
        compare(*args)
    else:
        sys.exit(f"unknown subcommand {cmd}")


if __name__ == "__main__":
    main(sys.argv)
