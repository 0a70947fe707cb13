#!/usr/bin/env python3
"""Reads the connector's Iceberg table with real clients, for tests/e2e/iceberg.sh.

Each subcommand runs in the script's own venv of its engine (never the system Python):
  pyiceberg CATALOG_DB CATALOG_NAME S3_URL BUCKET IDENT GROUP TOPIC STATE [SAMPLE]
      pyiceberg's SqlCatalog on the connector's sqlite file (the catalog name is the
      destination's name), the table's files read from moto. Prints one JSON object:
        rows, distinct (_kafka_partition, _kafka_offset), duplicates, expected (every offset below
        STATE's next offsets), missing (expected in neither the table nor `_errors/`), unexpected
        (coordinates outside the expected ones), in_both (in the table and in `_errors/`),
        errors (lines of the `_errors/` objects) and error_objects,
        offsets_ok (the newest snapshot carrying each partition's offset key says an offset past
        the partition's last row and at most STATE's next offset) with table_offsets,
        misplaced (rows whose file's partition is not their own hour and type: counted from the
        files' bounds and record counts against the rows, and row by row reading every data
        file on its own, or SAMPLE of them) with files_read and rows_read_by_file,
        orphan_files (objects under the table's data/ that no snapshot references: uploads a
        kill cut off before their commit), referenced_not_in_s3, snapshots, data_files,
        metadata_location.
  duckdb S3_URL METADATA_LOCATION
      DuckDB's iceberg_scan of that metadata file (extensions from the PyPI packages
      duckdb-extension-{iceberg,avro,httpfs}, loaded by path: nothing is downloaded), s3://
      read from moto through httpfs. Prints JSON {rows, distinct, engine}.
"""
import collections
import concurrent.futures
import gzip
import json
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from e2e_helpers import DUMMY_KEY, s3_client  # noqa: E402  (stdlib + boto3 at call time)

HOUR_US = 3600 * 1_000_000


def _expected(state):
    with open(state) as f:
        nxt = {int(p): int(o) for p, o in json.load(f)["next_offset"].items()}
    return nxt, {(p, o) for p, end in nxt.items() for o in range(end)}


def _errors(endpoint, bucket):
    """(lines, objects, {(partition, offset): times}) of the `_errors/` objects."""
    s3 = s3_client(endpoint)
    coords = collections.Counter()
    objects = lines = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="_errors/"):
        for obj in page.get("Contents", []):
            body = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
            if obj["Key"].endswith(".gz"):
                body = gzip.decompress(body)
            objects += 1
            for line in body.split(b"\n"):
                if line:
                    lines += 1
                    env = json.loads(line)
                    coords[(int(env["partition"]), int(env["offset"]))] += 1
    return lines, objects, coords


def read_pyiceberg(db, name, endpoint, bucket, ident, group, topic, state, sample="all"):
    import pyarrow.compute as pc
    from pyiceberg.catalog.sql import SqlCatalog
    from pyiceberg.io.pyarrow import ArrowScan
    from pyiceberg.table.snapshots import ancestors_of

    catalog = SqlCatalog(
        name,
        uri=f"sqlite:///{db}",
        **{
            "s3.endpoint": endpoint,
            "s3.access-key-id": DUMMY_KEY,
            "s3.secret-access-key": DUMMY_KEY,
            "s3.region": "us-east-1",
        },
    )
    table = catalog.load_table(ident)
    arrow = table.scan(selected_fields=("_kafka_partition", "_kafka_offset", "ts", "event_type")).to_arrow()
    parts = arrow["_kafka_partition"].to_pylist()
    offs = arrow["_kafka_offset"].to_pylist()
    seen = collections.Counter(zip(parts, offs))
    rows = arrow.num_rows

    nxt, expected = _expected(state)
    err_lines, err_objects, err = _errors(endpoint, bucket)
    in_table = set(seen)
    missing = len(expected - in_table - set(err))
    unexpected = len(in_table - expected) + len(set(err) - expected)
    in_both = len(in_table & set(err))

    # Each partition's committed offset: the newest snapshot of main's ancestry carrying its key
    # (walked by parent ids from the current snapshot: the metadata's list of snapshots is in no
    # particular order).
    table_offsets = {}
    for snap in ancestors_of(table.current_snapshot(), table.metadata):
        props = snap.summary.additional_properties if snap.summary else {}
        for p in nxt:
            key = f"kafka-s3-sink.offset.{group}.{topic}.{p}"
            if p not in table_offsets and key in props:
                table_offsets[p] = int(props[key])
    # Past the partition's last row and at most its end: quarantined records after the last row
    # may be committed to Kafka after the table's last commit.
    last_row = {}
    for p, o in seen:
        last_row[p] = max(last_row.get(p, -1), o)
    offsets_ok = set(table_offsets) == set(nxt) and all(
        last_row.get(p, -1) < table_offsets[p] <= nxt[p] for p in nxt)

    # Every row in the file of its own partition. (1) Per partition value, the files' record
    # counts equal the rows whose own hour and type are that value; each file's ts bounds lie in
    # its hour and its event_type bounds equal its value.
    spec_fields = [f.name for f in table.spec().fields]
    files = table.inspect.files().to_pylist()
    by_files = collections.Counter()
    misplaced = 0
    for f in files:
        part = f["partition"]
        hour, etype = part[spec_fields[0]], part[spec_fields[1]]
        by_files[(hour, etype)] += f["record_count"]
        m = f["readable_metrics"]
        lo, hi = m["ts"]["lower_bound"], m["ts"]["upper_bound"]
        if lo is None or hi is None or int(lo.timestamp() // 3600) != hour or int(hi.timestamp() // 3600) != hour:
            misplaced += f["record_count"]
        elif m["event_type"]["lower_bound"] != etype or m["event_type"]["upper_bound"] != etype:
            misplaced += f["record_count"]
    ts_us = pc.cast(arrow["ts"], "int64").to_pylist()
    by_rows = collections.Counter(
        (t // HOUR_US, e) for t, e in zip(ts_us, arrow["event_type"].to_pylist())
    )
    if by_rows != by_files:
        misplaced += sum(((by_rows - by_files) + (by_files - by_rows)).values())
    # (2) Row by row: every data file read on its own with pyiceberg's ArrowScan (SAMPLE files
    # picked at random when SAMPLE is a number), its rows' hour and type against its partition.
    tasks = list(table.scan().plan_files())
    if sample != "all":
        tasks = random.Random(7).sample(tasks, min(int(sample), len(tasks)))

    def off_partition(task):
        hour, etype = task.file.partition[0], task.file.partition[1]
        t = ArrowScan(table.metadata, table.io, table.schema(), task.residual).to_table([task])
        bad = sum(1 for ts, e in zip(pc.cast(t["ts"], "int64").to_pylist(), t["event_type"].to_pylist())
                  if ts // HOUR_US != hour or e != etype)
        return t.num_rows, bad

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(off_partition, tasks))
    read_rows = sum(n for n, _ in results)
    misplaced += sum(b for _, b in results)
    if sample == "all" and read_rows != rows:
        misplaced += abs(read_rows - rows)

    # Data files the kills left behind: uploaded under data/, referenced by no snapshot.
    referenced = {f["file_path"] for f in files}
    prefix = table.location().removeprefix(f"s3://{bucket}/").rstrip("/") + "/data/"
    s3 = s3_client(endpoint)
    uploaded = {f"s3://{bucket}/{o['Key']}"
                for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
                for o in page.get("Contents", [])}

    print(json.dumps({
        "rows": rows,
        "distinct": len(seen),
        "duplicates": rows - len(seen),
        "expected": len(expected),
        "missing": missing,
        "unexpected": unexpected,
        "in_both": in_both,
        "errors": err_lines,
        "error_objects": err_objects,
        "error_duplicates": err_lines - len(err),
        "offsets_ok": offsets_ok,
        "table_offsets": {str(k): v for k, v in sorted(table_offsets.items())},
        "kafka_end_offsets": {str(k): v for k, v in sorted(nxt.items())},
        "misplaced": misplaced,
        "partition_fields": spec_fields,
        "partitions": len(by_files),
        "files_read": len(tasks),
        "rows_read_by_file": read_rows,
        "orphan_files": len(uploaded - referenced),
        "referenced_not_in_s3": len(referenced - uploaded),
        "snapshots": len(list(table.snapshots())),
        "data_files": len(files),
        "metadata_location": table.metadata_location,
    }))


def read_duckdb(endpoint, metadata_location):
    import importlib

    import duckdb

    con = duckdb.connect(config={"autoinstall_known_extensions": "false",
                                 "autoload_known_extensions": "false"})
    for ext in ("avro", "httpfs", "iceberg"):
        mod = importlib.import_module(f"duckdb_extension_{ext}")
        path = os.path.join(os.path.dirname(mod.__file__), "extensions", f"v{duckdb.__version__}",
                            f"{ext}.duckdb_extension")
        con.execute(f"LOAD '{path}'")
    host = endpoint.split("://", 1)[1].rstrip("/")
    con.execute(f"""CREATE SECRET moto (TYPE s3, KEY_ID '{DUMMY_KEY}', SECRET '{DUMMY_KEY}',
                    REGION 'us-east-1', ENDPOINT '{host}', URL_STYLE 'path', USE_SSL false)""")
    rows, distinct = con.execute(
        "select count(*), count(distinct (_kafka_partition, _kafka_offset)) from iceberg_scan(?)",
        [metadata_location],
    ).fetchone()
    print(json.dumps({"rows": rows, "distinct": distinct, "engine": f"duckdb {duckdb.__version__}"}))


def main(argv):
    cmd, args = argv[1], argv[2:]
    if cmd == "pyiceberg":
        read_pyiceberg(*args)
    elif cmd == "duckdb":
        read_duckdb(*args)
    else:
        sys.exit(f"unknown subcommand {cmd}")


if __name__ == "__main__":
    main(sys.argv)
