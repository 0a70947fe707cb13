#!/usr/bin/env python3
"""Helpers for bench/run.sh (stdlib, plus boto3 and confluent-kafka where noted).

tests/e2e/e2e_helpers.py is the one helper module of the benchmarks and the end-to-end scripts:
process starting, ports, readiness waits, bucket creation, producing into tansu, reading a
connector's /metrics and a group's committed offsets are its (imported from it here); this file
only adds what the benchmark measures.

Subcommands (every wait is bounded):
  timed OUT -- CMD...                run CMD, write JSON {wall_secs, cpu_secs, user_secs,
                                     sys_secs, max_rss_mib, rc} of it and its children to OUT
  proc-cpu PID                       print utime+stime seconds of a running process
  drain BIN CONFIG METRICS EXPECT OUT [WATCH_PID...]
                                     run the connector binary until its /metrics shows EXPECT
                                     records consumed, then SIGTERM (drain: close, upload,
                                     commit) and wait for its exit; write JSON timings, its
                                     CPU and peak RSS (wait4), and the CPU of WATCH_PIDs
                                     (broker, S3 server) over the same time; OUT.log is its
                                     log, OUT.metrics its /metrics just before SIGTERM;
                                     with CONNECTOR_PERF set (perf record's options), its
                                     perf samples in OUT.perf.data
  committed BROKER GROUP TOPIC PARTS print JSON {partition: committed offset, -1 when none}
                                     (e2e_helpers.committed, confluent-kafka)
  s3-sizes ENDPOINT BUCKET AK SK     print JSON list of object sizes (boto3)
  table DIR                          render DIR/*.json as the Markdown table of BENCHMARKS.md
  perf-summary REPORT_TXT            group `perf report --no-children --sort symbol` lines into
                                     categories (deflate, crc32, JSON scan, allocation, copies,
                                     metrics, async runtime, kernel, other); print Markdown
"""
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "e2e"))
from e2e_helpers import committed, metric  # noqa: E402  (the shared helpers)

USER_HZ = os.sysconf("SC_CLK_TCK")


def proc_cpu(pid):
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return (int(rest[11]) + int(rest[12])) / USER_HZ


def proc_cpu_or_none(pid):
    try:
        return proc_cpu(pid)
    except (OSError, IndexError, ValueError):
        return None


def timed(out, cmd):
    t0 = time.monotonic()
    p = subprocess.Popen(cmd)
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.monotonic() - t0
    rc = os.waitstatus_to_exitcode(status)
    res = {"cmd": " ".join(cmd), "wall_secs": round(wall, 3),
           "user_secs": round(ru.ru_utime, 3), "sys_secs": round(ru.ru_stime, 3),
           "cpu_secs": round(ru.ru_utime + ru.ru_stime, 3),
           "max_rss_mib": round(ru.ru_maxrss / 1024, 1), "rc": rc}
    with open(out, "w") as f:
        json.dump(res, f)
    if rc != 0:
        sys.exit(f"timed: {cmd[0]} exited {rc}")


def drain(binary, config, metrics_url, expect, out, watch):
    expect = int(expect)
    watch = [int(p) for p in watch]
    log = open(out + ".log", "w")
    watch0 = {p: proc_cpu_or_none(p) for p in watch}
    t0 = time.monotonic()
    env = {**os.environ, "NO_COLOR": "1"}
    # A heap profiler for the connector alone (e.g. heaptrack's preload library with
    # DUMP_HEAPTRACK_OUTPUT set), not for the Python helpers or the servers.
    if os.environ.get("CONNECTOR_LD_PRELOAD"):
        env["LD_PRELOAD"] = os.environ["CONNECTOR_LD_PRELOAD"]
    p = subprocess.Popen([binary, "run", "--config", config], stdout=log, stderr=log, env=env)
    # perf samples of the connector alone (CONNECTOR_PERF: perf record's options, e.g.
    # "-e cpu-clock -F 999"), into OUT.perf.data; they cost CPU, so such a run's figures are
    # not the ones to record.
    perf = None
    if os.environ.get("CONNECTOR_PERF"):
        perf = subprocess.Popen(["perf", "record", "-q", *os.environ["CONNECTOR_PERF"].split(),
                                 "-o", out + ".perf.data", "-p", str(p.pid)],
                                stdout=subprocess.DEVNULL, stderr=log)
    t_first = t_consumed = None
    peak_kib = 0
    # The largest anonymous and file-backed parts of RSS seen by the samples (the heap and
    # stacks; the binary's and libraries' mapped pages), to tell which grew at the peak.
    peak_anon_kib = peak_file_kib = 0
    deadline = t0 + 1800
    try:
        while True:
            if p.poll() is not None:
                sys.exit(f"drain: connector exited {p.returncode} early (see {out}.log)")
            if time.monotonic() > deadline:
                sys.exit("drain: records not all consumed within 1800 s")
            consumed = metric(metrics_url, "kafka_s3_sink_records_consumed_total")
            now = time.monotonic()
            if consumed and t_first is None:
                t_first = now
            try:
                with open(f"/proc/{p.pid}/status") as f:
                    for line in f:
                        if line.startswith("VmHWM:"):
                            peak_kib = max(peak_kib, int(line.split()[1]))
                        elif line.startswith("RssAnon:"):
                            peak_anon_kib = max(peak_anon_kib, int(line.split()[1]))
                        elif line.startswith("RssFile:"):
                            peak_file_kib = max(peak_file_kib, int(line.split()[1]))
            except OSError:
                pass
            if consumed is not None and consumed >= expect:
                t_consumed = now
                break
            time.sleep(0.1)
        watch_mid = {q: proc_cpu_or_none(q) for q in watch}
        # The connector's /metrics as they stood when every record was consumed (what happens
        # during the drain after SIGTERM is in its log only).
        try:
            with urllib.request.urlopen(metrics_url, timeout=3) as r:
                Path(out + ".metrics").write_bytes(r.read())
        except OSError:
            pass
        p.send_signal(signal.SIGTERM)
        _, status, ru = os.wait4(p.pid, 0)
        t_exit = time.monotonic()
    finally:
        if p.returncode is None and p.poll() is None:
            p.kill()
            p.wait()
        if perf is not None:
            try:
                perf.wait(timeout=120)  # perf -p ends with the process it samples
            except subprocess.TimeoutExpired:
                perf.send_signal(signal.SIGINT)
                perf.wait(timeout=60)
    rc = os.waitstatus_to_exitcode(status)
    if rc != 0:
        sys.exit(f"drain: connector exited {rc} after SIGTERM (see {out}.log)")
    cpu = ru.ru_utime + ru.ru_stime
    res = {
        "startup_to_first_record_secs": round(t_first - t0, 3),
        "first_record_to_all_consumed_secs": round(t_consumed - t_first, 3),
        "sigterm_to_exit_secs": round(t_exit - t_consumed, 3),
        "drain_secs": round(t_exit - t_first, 3),
        "total_secs": round(t_exit - t0, 3),
        "connector_cpu_secs": round(cpu, 3),
        "connector_user_secs": round(ru.ru_utime, 3),
        "connector_sys_secs": round(ru.ru_stime, 3),
        "connector_minor_faults": ru.ru_minflt,
        "connector_peak_rss_mib": round(max(peak_kib, ru.ru_maxrss) / 1024, 1),
        "connector_sampled_rss_anon_mib": round(peak_anon_kib / 1024, 1),
        "connector_sampled_rss_file_mib": round(peak_file_kib / 1024, 1),
        "watched_cpu_secs_first_record_to_all_consumed": {
            str(q): (round(watch_mid[q] - watch0[q], 3)
                     if watch_mid[q] is not None and watch0[q] is not None else None)
            for q in watch},
    }
    with open(out, "w") as f:
        json.dump(res, f)
    print(json.dumps(res))


def s3_sizes(endpoint, bucket, ak, sk):
    import boto3
    from botocore.config import Config

    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                      aws_access_key_id=ak, aws_secret_access_key=sk,
                      config=Config(s3={"addressing_style": "path"}))
    sizes = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        sizes += [o["Size"] for o in page.get("Contents", [])]
    print(json.dumps(sizes))


# ------------------------------------------------------------------ the table

def load(d, name):
    try:
        with open(os.path.join(d, name + ".json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def fmt(v, nd=1):
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:,.{nd}f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def kib(b):
    return "–" if b is None else (f"{b / 1024:,.0f} KiB" if b < 1 << 20 else f"{b / (1 << 20):,.1f} MiB")


def sizes_text(o):
    if not o or not o.get("count"):
        return "–"
    return (f"{o['count']:,} ({kib(o['min_bytes'])} / {kib(o['p50_bytes'])} / "
            f"{kib(o['p90_bytes'])} / {kib(o['max_bytes'])})")


def summary(sizes):
    v = sorted(sizes)
    if not v:
        return None
    q = lambda p: v[round((len(v) - 1) * p)]
    return {"count": len(v), "total_bytes": sum(v), "min_bytes": q(0), "p10_bytes": q(0.1),
            "p50_bytes": q(0.5), "p90_bytes": q(0.9), "max_bytes": q(1.0)}


def table(d):
    m = load(d, "machine") or {}
    gz = load(d, "gzip") or {}
    df = load(d, "deflate") or {}
    n = m.get("events")
    size = m.get("input_bytes")
    gz_rate = size / 1e6 / gz["wall_secs"] if gz and size else None
    gz_cpu_rate = size / 1e6 / gz["cpu_secs"] if gz and size and gz.get("cpu_secs") else None
    df_rate = df.get("mb_per_sec")
    gz_ratio = size / m["gzip_bytes"] if m.get("gzip_bytes") and size else None
    out = []
    p = out.append
    p(f"Input: {fmt(n, 0)} events, {fmt(size / 1e6 if size else None)} MB "
      f"({m.get('input', '?')}); machine: {m.get('nproc', '?')} cores, {m.get('cpu', '?')}, "
      f"{m.get('mem', '?')} RAM, kernel {m.get('kernel', '?')}.")
    p("")
    p("**References (same run, same file, one core):**")
    p("")
    p("| reference | MB/s | CPU s | compression ratio |")
    p("| --- | ---: | ---: | ---: |")
    p(f"| GNU `gzip -6 -c > /dev/null` ({m.get('gzip_version', '?')}) | {fmt(gz_rate)} | "
      f"{fmt(gz.get('cpu_secs'), 2)} | {fmt(gz_ratio, 2)} |")
    p(f"| in-process deflate only (flate2 + zlib-rs `GzEncoder`, level {df.get('level', 6)}, "
      f"64 KiB writes; fastest of {len(df.get('cpu_secs_runs', [1]))} runs) | {fmt(df_rate)} | {fmt(df.get('cpu_secs'), 2)} | "
      f"{fmt(df.get('compression_ratio'), 2)} |")
    if df.get("batch_mb_per_cpu_sec"):
        p(f"| the same lines through the connector's own batches alone ({df['batches']} files "
          f"open, lines dealt round-robin, each closed at {fmt(df['batch_file_bytes'] / 1e6, 1)} MB: "
          f"staging, content hash, pooled encoders; no routing, Kafka or upload) | "
          f"{fmt(df['batch_mb_per_sec'])} | {fmt(df.get('batch_cpu_secs'), 2)} | "
          f"{fmt(df['input_bytes'] / df['batch_output_bytes'], 2)} |")
    p("")
    p("**Connector runs** (MB = 10^6 bytes of input NDJSON; *per core* = MB per CPU-second of "
      "the connector process, i.e. throughput ÷ cores actually used):")
    p("")
    p("| run | wall s | MB/s | events/s | cores used | MB/s per core | per core ÷ gzip -6 | "
      "per core ÷ deflate-only | CPU s/GB | RSS before → peak MiB | ratio | objects (min / p50 / p90 / max) | flushes |")
    p("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |")
    runs = [
        ("replay-w1-1core", "replay, 1 worker, pinned to 1 core (`taskset -c 0`), null sink"),
        ("replay-w1", "replay, 1 worker, null sink"),
        ("replay-w2", "replay, 2 workers, null sink"),
        ("replay-w2-run500", "replay, 2 workers, null sink, partitions in runs of 500"),
        ("replay-w2-s3s", "replay, 2 workers, S3: s3s-fs server process on loopback"),
        ("replay-w2-moto", "replay, 2 workers, S3: moto_server on loopback"),
    ]
    for key, label in runs:
        r = load(d, key)
        if not r:
            continue
        per_core = r.get("mb_per_cpu_sec")
        srv = r.get("server_cpu_secs")
        lab = label + (f" (server CPU {srv:.1f} s)" if srv is not None else "")
        p(f"| {lab} | {fmt(r['wall_secs'], 2)} | {fmt(r['mb_per_sec'])} | "
          f"{fmt(int(r['events_per_sec']), 0)} | {fmt(r['cores_used'], 2)} | {fmt(per_core)} | "
          f"{fmt(per_core / gz_rate if gz_rate and per_core else None, 2)} | "
          f"{fmt(per_core / df_rate if df_rate and per_core else None, 2)} | "
          f"{fmt(r['cpu_secs_per_gb'])} | {fmt(r['rss_before_mib'])} → {fmt(r['peak_rss_mib'])} | "
          f"{fmt(r['compression_ratio'], 2)} | {sizes_text(r.get('objects'))} | "
          f"{', '.join(f'{k} {v}' for k, v in r.get('flushes', {}).items())} |")
    tansus = [(k, load(d, k)) for k in tansu_keys(d)]
    for key, t in tansus:
        if not t or not size:
            continue
        secs = t["drain_secs"]
        rate = size / 1e6 / secs
        cpu = t["connector_cpu_secs"]
        per_core = size / 1e6 / cpu
        objs = summary(t.get("object_sizes", []))
        ratio = size / objs["total_bytes"] if objs else None
        props = (t.get("kafka_properties") or "connector defaults") + f" (drain {key})"
        p(f"| tansu (8 partitions) → real binary, 2 workers → s3s-fs server; first record → all "
          f"in S3 and committed; {props} (broker CPU {fmt(t.get('broker_cpu_secs'), 1)} s, S3 "
          f"server CPU {fmt(t.get('server_cpu_secs'), 1)} s) | {fmt(secs, 2)} | {fmt(rate)} | "
          f"{fmt(int(n / secs), 0)} | {fmt(cpu / secs, 2)} | {fmt(per_core)} | "
          f"{fmt(per_core / gz_rate if gz_rate else None, 2)} | "
          f"{fmt(per_core / df_rate if df_rate else None, 2)} | {fmt(cpu / (size / 1e9))} | "
          f"– → {fmt(t['connector_peak_rss_mib'])} | {fmt(ratio, 2)} | {sizes_text(objs)} | "
          f"committed = produced: {t.get('committed_ok')} |")
    p("")
    paired = paired_rounds(d, size)
    brackets = [(k, tansu_bracket(d, k, size)) for k, _ in tansus]
    brackets = [(k, b) for k, b in brackets if b]
    if paired or brackets:
        p("**Ratios against references taken next to each run** (this VM's speed drifts by tens of "
          "percent over minutes, so a reference measured once at the start can flatter or "
          "penalise a later run; each line below has its own gzip -6 and deflate-only samples, "
          "one run each, taken just before and just after the connector run: the mean of the two):")
        p("")
        p("| run | gzip -6 MB/s | deflate-only MB/s | connector MB per CPU-s | ÷ gzip -6 | ÷ deflate-only |")
        p("| --- | ---: | ---: | ---: | ---: | ---: |")
        def rounds(rows, label, per_core, vs_gzip, vs_deflate, deflate="deflate", tag=""):
            for i, r in enumerate(rows, 1):
                gz = (fmt(r["gzip"]), fmt(r[vs_gzip], 2)) if vs_gzip else ("–", "–")
                p(f"| round {i}: {label} | {gz[0]} | {fmt(r[deflate])} | {fmt(r[per_core])} | "
                  f"{gz[1]} | {fmt(r[vs_deflate], 2)} |")
            if rows:
                gz = f"**{fmt(median(r[vs_gzip] for r in rows), 2)}**" if vs_gzip else ""
                p(f"| **median of {len(rows)} rounds{tag}** | | | | {gz} | "
                  f"**{fmt(median(r[vs_deflate] for r in rows), 2)}** |")

        rounds(paired, "replay, 2 workers, null sink", "per_core", "vs_gzip", "vs_deflate")
        rounds([r for r in paired if r["w1_per_core"]],
               "replay, 1 worker pinned to 1 core (as the references), null sink",
               "w1_per_core", "w1_vs_gzip", "w1_vs_deflate", tag=", 1 worker pinned")
        rounds([r for r in paired if r["deflate_both"]],
               "replay, 2 workers, against deflate-only run on both cores at once "
               "(two copies, one per core; per copy)",
               "per_core", None, "vs_deflate_both", deflate="deflate_both",
               tag=", deflate-only on both cores")
        for k, b in brackets:
            p(f"| {k}: broker → real binary → S3 server (references before / after) | "
              f"{fmt(b['gzip'][0])} / {fmt(b['gzip'][1])} | {fmt(b['deflate'][0])} / {fmt(b['deflate'][1])} | "
              f"{fmt(b['per_core'])} | {fmt(b['vs_gzip'], 2)} | {fmt(b['vs_deflate'], 2)} |")
        p("")
    w1c, w1, w2 = load(d, "replay-w1-1core"), load(d, "replay-w1"), load(d, "replay-w2")
    mem, mem50 = load(d, "memory"), load(d, "memory-chunk50")
    lat = [x for x in (load(d, "latency-age5-idle5"), load(d, "latency-age5-idle60")) if x]
    p("**Memory (backlog of partitions × 24 open hour-folders, null sink):**")
    p("")
    p("| run | records | MB/s | peak RSS MiB | budget + 48 MiB | within | memory flushes | "
      "max open files | max accounted MiB | objects (min / p50 / p90 / max) |")
    p("| --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | --- |")
    for key, r in (("chunks of 2000 records (as the Kafka source)", mem),
                   ("chunks of 50 records (diagnostic)", mem50)):
        if r:
            p(f"| {r['partitions']:,} partitions × {r['hours']} hours, {key} | {r['records']:,} | "
              f"{fmt(r['mb_per_sec'])} | {fmt(r['peak_rss_mib'])} | {fmt(r['limit_mib'])} | "
              f"{'yes' if r['peak_within_limit'] else '**no**'} | {int(r['memory_flushes']):,} | "
              f"{r['max_open_files']:,} | {fmt(r['max_buffered_mib'])} | {sizes_text(r.get('objects'))} |")
    p("")
    p("**Latency (one record, then silence; null sink):**")
    p("")
    p("| max_age_secs | idle_secs | delays s | max delay − max age |")
    p("| ---: | ---: | --- | ---: |")
    for r in lat:
        p(f"| {r['max_age_secs']} | {r['idle_secs']} | {', '.join(map(str, r['delays_secs']))} | "
          f"{fmt(r['max_delay_minus_max_age_secs'], 3)} s |")
    p("")
    p("**Targets:**")
    p("")
    p("| target | measured | met |")
    p("| --- | --- | --- |")
    if paired:
        v = median(r["vs_gzip"] for r in paired)
        p(f"| end-to-end (replay, 2 workers, null sink) per core ≥ 1.5 × gzip -6 | median of "
          f"{len(paired)} paired rounds {v:.2f} ({', '.join(fmt(r['vs_gzip'], 2) for r in paired)}) | "
          f"{yes(v >= 1.5)} |")
    elif w2 and gz_rate:
        v = w2["mb_per_cpu_sec"] / gz_rate
        p(f"| end-to-end (replay, 2 workers, null sink) per core ≥ 1.5 × gzip -6 | "
          f"{w2['mb_per_cpu_sec']:.1f} MB/s per core ÷ {gz_rate:.1f} = {v:.2f} | {yes(v >= 1.5)} |")
    if brackets:
        vs = [b["vs_gzip"] for _, b in brackets]
        walls = [size / 1e6 / load(d, k)["drain_secs"] / 2 / mean(b["gzip"]) for k, b in brackets]
        p(f"| end-to-end (tansu: broker → real binary → S3 server) per core ≥ 1.5 × gzip -6 | "
          f"per CPU-second: median of {len(vs)} drains {median(vs):.2f} "
          f"({', '.join(f'{v:.2f}' for v in vs)}); per core of the 2 (wall) {median(walls):.2f} | "
          f"{yes(median(vs) >= 1.5)} |")
    for key, t in tansus:
        if brackets:
            break
        if t and gz_rate and size:
            v = size / 1e6 / t["connector_cpu_secs"] / gz_rate
            w = size / 1e6 / t["drain_secs"] / 2 / gz_rate
            p(f"| end-to-end ({key}: broker → binary → S3 server) per core ≥ 1.5 × gzip -6 | "
              f"per CPU-second {v:.2f}; per core of the 2 (wall) {w:.2f} | {yes(v >= 1.5)} |")
    if paired:
        v = median(r["vs_deflate"] for r in paired)
        p(f"| end-to-end per core ≥ 0.8 × in-process deflate-only | median of {len(paired)} paired "
          f"rounds {v:.2f} ({', '.join(fmt(r['vs_deflate'], 2) for r in paired)}) | {yes(v >= 0.8)} |")
        for label, key, verdict in (
                ("(same, 1 worker pinned to 1 core, as the references)", "w1_vs_deflate", True),
                ("(diagnostic: 2 workers against deflate-only on both cores at once)",
                 "vs_deflate_both", False)):
            rows = [r for r in paired if r[key]]
            if rows:
                v = median(r[key] for r in rows)
                p(f"| {label} | median of {len(rows)} paired rounds {v:.2f} "
                  f"({', '.join(fmt(r[key], 2) for r in rows)}) | {yes(v >= 0.8) if verdict else '–'} |")
    elif w2 and df_rate:
        v = w2["mb_per_cpu_sec"] / df_rate
        p(f"| end-to-end per core ≥ 0.8 × in-process deflate-only | "
          f"{w2['mb_per_cpu_sec']:.1f} ÷ {df_rate:.1f} = {v:.2f} | {yes(v >= 0.8)} |")
    scaled = [r for r in paired if r["scaling"]]
    if scaled:
        v = median(r["scaling"] for r in scaled)
        pairs = ", ".join(f"{r['w2_mb_s']:.1f} ÷ {r['w1_mb_s']:.1f}" for r in scaled)
        p(f"| 2 workers on 2 cores ≥ 1.8 × 1 worker on 1 core | median of {len(scaled)} paired "
          f"rounds {v:.2f} (MB/s: {pairs}) | {yes(v >= 1.8)} |")
    if w2 and w1c:
        v = w2["mb_per_sec"] / w1c["mb_per_sec"]
        p(f"| {'(same, single runs)' if scaled else '2 workers on 2 cores ≥ 1.8 × 1 worker on 1 core'} "
          f"| {w2['mb_per_sec']:.1f} ÷ {w1c['mb_per_sec']:.1f} = {v:.2f} | {yes(v >= 1.8)} |")
    if w2 and w1:
        v = w2["mb_per_sec"] / w1["mb_per_sec"]
        p(f"| (same, 1 worker unpinned) | {w2['mb_per_sec']:.1f} ÷ {w1['mb_per_sec']:.1f} = "
          f"{v:.2f} | {yes(v >= 1.8)} |")
    if mem:
        p(f"| peak RSS ≤ budget + 48 MiB, 1,000 partitions × 24 hour-folders | "
          f"{mem['peak_rss_mib']:.0f} MiB vs {mem['limit_mib']:.0f} MiB; "
          f"{int(mem['memory_flushes']):,} memory flushes | {yes(mem['peak_within_limit'])} |")
    for r in lat:
        p(f"| in S3 within max age + 2 s (max_age {r['max_age_secs']}, idle {r['idle_secs']}) | "
          f"max {r['max_delay_secs']:.3f} s | {yes(r['within_max_age_plus_2s'])} |")
    print("\n".join(out))


CATEGORIES = [
    ("deflate (zlib-rs)", ("zlib_rs::deflate", "flate2::", "zlib_rs::stable", "zlib_rs::adler")),
    ("crc32 (gzip trailer, zlib-rs braid)", ("zlib_rs::crc32",)),
    ("JSON scan + routing (scan, serde_json, UTF-8 check, router, template)",
     ("kafka_s3_sink::scan", "serde_json", "serde_core", "core::str::converts::from_utf8",
      "kafka_s3_sink::router", "PhantomData<T> as serde", "IgnoredAny", "kafka_s3_sink::template",
      "chrono")),
    ("allocation (malloc/free)", ("malloc", "free", "_int_", "unlink_chunk", "realloc",
                                  "alloc::raw_vec", "__rust_alloc", "__rust_dealloc")),
    ("memory copies (memmove/memcpy)", ("memmove", "memcpy", "memset")),
    ("metrics (prometheus labels)", ("prometheus", "kafka_s3_sink::metrics", "sip::Hasher",
                                     "hash::BuildHasher", "core::hash")),
    ("pipeline bookkeeping (ingest, append, offsets, batch)",
     ("kafka_s3_sink::pipeline", "kafka_s3_sink::offsets", "kafka_s3_sink::batch",
      "kafka_s3_sink::upload", "hashbrown")),
    ("async runtime, channels, threads (tokio, futex)", ("tokio::", "futex", "pthread", "__lll")),
    ("bench harness (input loading, polling)", ("kafka_s3_sink_bench",)),
]


def perf_summary(path):
    import re
    rows = []
    for line in open(path, errors="replace"):
        m = re.match(r"\s+([0-9.]+)%\s+(\S+\s+)?\[([.k])\]\s+(.*?)\s*(-\s+-\s*)?$", line)
        if m:
            rows.append((float(m.group(1)), m.group(3) == "k", m.group(4).strip()))
    total = sum(r[0] for r in rows) or 1.0
    buckets = {name: 0.0 for name, _ in CATEGORIES}
    buckets["kernel (page faults, scheduling, I/O)"] = 0.0
    buckets["other"] = 0.0
    for pct, kernel, sym in rows:
        if kernel:
            buckets["kernel (page faults, scheduling, I/O)"] += pct
            continue
        for name, keys in CATEGORIES:
            if any(k in sym for k in keys):
                buckets[name] += pct
                break
        else:
            buckets["other"] += pct
    print("| category | share of samples |")
    print("| --- | ---: |")
    for name, pct in sorted(buckets.items(), key=lambda kv: -kv[1]):
        if pct > 0:
            print(f"| {name} | {100 * pct / total:.1f} % |")
    print()
    print("| top functions (self time) | share |")
    print("| --- | ---: |")
    for pct, kernel, sym in sorted(rows, reverse=True)[:15]:
        print(f"| `{sym[:110]}`{' [kernel]' if kernel else ''} | {100 * pct / total:.1f} % |")


def mean(xs):
    xs = list(xs)
    return sum(xs) / len(xs)


def median(xs):
    xs = sorted(xs)
    mid = len(xs) // 2
    return xs[mid] if len(xs) % 2 else (xs[mid - 1] + xs[mid]) / 2


def reference_rates(d, name, size):
    """(gzip -6 MB/s, deflate-only MB/s) of the reference pair NAME, or None."""
    gz, df = load(d, f"{name}-gzip"), load(d, f"{name}-deflate")
    if not gz or not df or not size:
        return None
    return size / 1e6 / gz["wall_secs"], df["mb_per_sec"]


def paired_rounds(d, size):
    """Each paired round: its references and the 2-worker replay's ratios to them."""
    rounds, i = [], 1
    while True:
        refs, r = reference_rates(d, f"paired-{i}", size), load(d, f"paired-{i}-replay")
        if not refs or not r:
            return rounds
        # The pair before the next round is also the one right after this one (older runs have
        # none after the last round: the pair before alone).
        after = reference_rates(d, f"paired-{i + 1}", size)
        if after:
            refs = (mean((refs[0], after[0])), mean((refs[1], after[1])))
        per_core = r["mb_per_cpu_sec"]
        w1 = load(d, f"paired-{i}-w1")
        w1_core = w1["mb_per_cpu_sec"] if w1 else None
        both = [load(d, f"paired-{i}-deflate-core{c}") for c in (0, 1)]
        both = mean([b["mb_per_cpu_sec"] for b in both]) if all(both) else None
        rounds.append({"gzip": refs[0], "deflate": refs[1], "per_core": per_core,
                       "vs_gzip": per_core / refs[0], "vs_deflate": per_core / refs[1],
                       "w1_per_core": w1_core,
                       "deflate_both": both,
                       "vs_deflate_both": per_core / both if both else None,
                       "w1_vs_gzip": w1_core / refs[0] if w1_core else None,
                       "w1_vs_deflate": w1_core / refs[1] if w1_core else None,
                       "w2_mb_s": r["mb_per_sec"],
                       "w1_mb_s": w1["mb_per_sec"] if w1 else None,
                       "scaling": r["mb_per_sec"] / w1["mb_per_sec"] if w1 else None})
        i += 1


def tansu_keys(d):
    """The tansu drains of a results folder: tansu-1, tansu-2, … (older runs: tansu, tansu-backoff10)."""
    keys, i = [], 1
    while load(d, f"tansu-{i}"):
        keys.append(f"tansu-{i}")
        i += 1
    return keys or [k for k in ("tansu", "tansu-backoff10") if load(d, k)]


def tansu_bracket(d, key, size):
    """A tansu drain against the mean of the reference pairs taken just before and after it."""
    t = load(d, key)
    if not key.startswith("tansu-") or not key[6:].isdigit():
        return None
    i = int(key[6:])
    before, after = (reference_rates(d, f"tansu-ref-{i - 1}", size),
                     reference_rates(d, f"tansu-ref-{i}", size))
    if not t or not before or not after:
        return None
    per_core = size / 1e6 / t["connector_cpu_secs"]
    gzs, dfs = (before[0], after[0]), (before[1], after[1])
    return {"gzip": gzs, "deflate": dfs, "per_core": per_core,
            "vs_gzip": per_core / mean(gzs), "vs_deflate": per_core / mean(dfs)}


def probe(url, out, secs):
    """GETs URL every 20 ms for SECS seconds; writes the latencies' p50, p99 and max (ms) to OUT.
    Failed requests (the server not up yet, or gone) are counted, not timed."""
    lat, errs = [], 0
    end = time.monotonic() + float(secs)
    while time.monotonic() < end:
        t = time.monotonic()
        try:
            urllib.request.urlopen(url, timeout=5).read()
            lat.append(time.monotonic() - t)
        except Exception:
            errs += 1
        time.sleep(0.02)
    lat.sort()

    def q(p):
        return round(lat[min(len(lat) - 1, int(p * len(lat)))] * 1000, 1) if lat else None
    res = {"probes": len(lat), "failed": errs, "p50_ms": q(0.5), "p99_ms": q(0.99), "max_ms": q(1.0)}
    with open(out, "w") as f:
        json.dump(res, f)


def ab_summary(paths):
    """One line per drain of bench/ab.sh, then each binary's mean CPU-s over its drains."""
    per = {}
    for p in paths:
        d = json.load(open(p))
        pr = d.get("probe", {})
        print(f"{os.path.basename(p)}  {d['binary']}  cpu {d['connector_cpu_secs']:.3f} s  "
              f"faults {d.get('connector_minor_faults', '-')}  "
              f"healthz p99 {pr.get('p99_ms')} ms max {pr.get('max_ms')} ms")
        per.setdefault(d["binary"], []).append(
            (d["connector_cpu_secs"], d.get("connector_minor_faults", 0)))
    for b, rows in per.items():
        xs = [c for c, _ in rows]
        print(f"{b}: {len(xs)} drains, mean {mean(xs):.3f} CPU-s (min {min(xs):.3f}, "
              f"max {max(xs):.3f}), mean {mean(f for _, f in rows):,.0f} minor faults")


def yes(b):
    return "yes" if b else "**no**"


def main(argv):
    cmd, args = argv[1], argv[2:]
    if cmd == "timed":
        sep = args.index("--")
        timed(args[0], args[sep + 1:])
    elif cmd == "proc-cpu":
        print(proc_cpu(int(args[0])))
    elif cmd == "drain":
        drain(args[0], args[1], args[2], args[3], args[4], args[5:])
    elif cmd == "committed":
        print(json.dumps(committed(*args)))
    elif cmd == "s3-sizes":
        s3_sizes(*args)
    elif cmd == "table":
        table(args[0])
    elif cmd == "perf-summary":
        perf_summary(args[0])
    elif cmd == "probe":
        probe(args[0], args[1], args[2])
    elif cmd == "ab-summary":
        ab_summary(args)
    else:
        sys.exit(f"unknown subcommand {cmd}")


if __name__ == "__main__":
    main(sys.argv)
