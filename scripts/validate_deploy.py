#!/usr/bin/env python3
"""Offline checks of the deployment files, called by scripts/validate-deploy (one subcommand per
check; each prints its findings and exits non-zero on failure). Run from the repository root.

The connector's catalogue (`kafka-s3-sink catalogue --json`: every metric's name, type and labels,
and every S3 call with its IAM actions) is what the dashboard, the alert rules, their tests,
docs/operations.md and the IAM policies are checked against: the JSON file named by
$KAFKA_S3_SINK_CATALOGUE (scripts/validate-deploy writes it), else the output of
$KAFKA_S3_SINK_BIN or `cargo run -q --`.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path.cwd()
DASHBOARD = ROOT / "dashboards/kafka-s3-sink.json"
ALERTS = ROOT / "deploy/prometheus/alerts.yml"
ALERTS_TEST = ROOT / "deploy/prometheus/alerts_test.yml"
PROM_CONFIG = ROOT / "deploy/prometheus/prometheus.yml"
COMPOSE = ROOT / "docker-compose.yml"
COMPOSE_CONFIG = ROOT / "deploy/compose/config.toml"
K8S = ROOT / "deploy/k8s"
OPERATING = ROOT / "docs/operations.md"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

SCRAPE_LABELS = {"job", "instance"}
HIST_SUFFIXES = ("_bucket", "_sum", "_count")
METRIC_RE = re.compile(r"\bkafka_s3_sink_[a-z0-9_]+")
# PromQL functions that need a counter (or a histogram's _bucket/_sum/_count series).
COUNTER_FUNCS = ("rate", "irate", "increase")


class Failed(Exception):
    pass


def fail_if(problems: list[str], ok_msg: str) -> None:
    if problems:
        for p in problems:
            print(f"  - {p}")
        raise Failed(f"{len(problems)} problem(s)")
    print(f"  {ok_msg}")


# ------------------------------------------------------------------------------- metric catalogue


_CATALOGUE: dict | None = None


def connector_catalogue() -> dict:
    """`kafka-s3-sink catalogue --json`: {"metrics": [{name, type, labels, help}],
    "s3_calls": [{call, iam_actions}]}."""
    global _CATALOGUE
    if _CATALOGUE is None:
        path = os.environ.get("KAFKA_S3_SINK_CATALOGUE")
        if path:
            text = Path(path).read_text()
        else:
            binary = os.environ.get("KAFKA_S3_SINK_BIN")
            cmd = [binary] if binary else ["cargo", "run", "-q", "--"]
            text = subprocess.run(cmd + ["catalogue", "--json"], check=True, capture_output=True,
                                  text=True).stdout
        _CATALOGUE = json.loads(text)
    return _CATALOGUE


def catalogue() -> dict[str, dict]:
    """{name: {"type": counter|gauge|histogram, "labels": set}} of every metric the connector
    exports."""
    out = {m["name"]: {"type": m["type"], "labels": set(m["labels"])}
           for m in connector_catalogue()["metrics"]}
    if len(out) < 10:
        raise SystemExit(f"only {len(out)} metrics in the connector's catalogue")
    return out


def series_of(cat: dict[str, dict]) -> dict[str, tuple[str, set]]:
    """Every exported series name -> (base metric, labels)."""
    s: dict[str, tuple[str, set]] = {}
    for n, m in cat.items():
        if m["type"] == "histogram":
            s[n + "_bucket"] = (n, m["labels"] | {"le"})
            s[n + "_sum"] = (n, m["labels"])
            s[n + "_count"] = (n, m["labels"])
        else:
            s[n] = (n, m["labels"])
    return s


def check_expr(expr: str, where: str, cat: dict, series: dict) -> list[str]:
    """Metric names, selector labels, `by (...)` labels of the innermost aggregation, and the
    counter-only functions of one PromQL expression."""
    problems = []
    for tok in sorted(set(METRIC_RE.findall(expr))):
        if tok not in series:
            base = next((tok[: -len(s)] for s in HIST_SUFFIXES if tok.endswith(s)), None)
            hint = " (not a histogram)" if base in cat else ""
            problems.append(f"{where}: unknown metric {tok}{hint}")
    for m in re.finditer(r"\b(kafka_s3_sink_[a-z0-9_]+)\s*\{([^}]*)\}", expr):
        name, body = m.group(1), m.group(2)
        if name not in series:
            continue
        allowed = series[name][1] | SCRAPE_LABELS
        for lab in re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)", body):
            if lab not in allowed:
                problems.append(f"{where}: {name} has no label {lab!r} (labels: {sorted(allowed)})")
    agg = re.compile(r"\b(?:sum|max|min|avg|count|topk|bottomk|group)\s+by\s*\(([^)]*)\)\s*\(\s*"
                     r"(?:(?:rate|irate|increase|deriv|delta|idelta|avg_over_time|max_over_time|min_over_time)\s*\(\s*)?"
                     r"(kafka_s3_sink_[a-z0-9_]+)")
    for m in agg.finditer(expr):
        labs = {x.strip() for x in m.group(1).split(",") if x.strip()}
        name = m.group(2)
        if name in series:
            missing = labs - series[name][1] - SCRAPE_LABELS
            if missing:
                problems.append(f"{where}: `by ({', '.join(sorted(labs))})` over {name}, which has no {sorted(missing)}")
    for m in re.finditer(r"\b(" + "|".join(COUNTER_FUNCS) + r")\s*\(\s*(kafka_s3_sink_[a-z0-9_]+)", expr):
        name = m.group(2)
        if name in series:
            base = series[name][0]
            if cat[base]["type"] == "gauge":
                problems.append(f"{where}: {m.group(1)}() over the gauge {name}")
    for m in re.finditer(r"histogram_quantile\s*\([^,]*,[^)]*?(kafka_s3_sink_[a-z0-9_]+)", expr):
        if not m.group(1).endswith("_bucket"):
            problems.append(f"{where}: histogram_quantile over {m.group(1)} (needs a _bucket series)")
    return problems


# ----------------------------------------------------------------------------------- dashboard


def dashboard_exprs(d: dict) -> list[tuple[str, str]]:
    out = []

    def walk(panels):
        for p in panels:
            for t in p.get("targets", []) or []:
                if "expr" in t:
                    out.append((f"panel {p.get('id')} {p.get('title')!r} {t.get('refId')}", t["expr"]))
            walk(p.get("panels", []) or [])

    walk(d.get("panels", []))
    return out


def substitute_vars(expr: str) -> str:
    expr = expr.replace("$__rate_interval", "1m").replace("$__interval", "1m").replace("$__range", "1h")
    return re.sub(r"\$\{?[a-zA-Z_][a-zA-Z0-9_]*\}?", ".*", expr)


def cmd_dashboard() -> None:
    d = json.loads(DASHBOARD.read_text())
    problems = []
    if not isinstance(d.get("schemaVersion"), int) or d["schemaVersion"] < 36:
        problems.append(f"schemaVersion {d.get('schemaVersion')!r} < 36")
    for key in ("uid", "title", "panels", "templating"):
        if key not in d:
            problems.append(f"missing top-level {key!r}")
    vars_ = {v.get("name"): v for v in d.get("templating", {}).get("list", [])}
    ds = vars_.get("datasource")
    if not ds or ds.get("type") != "datasource" or ds.get("query") != "prometheus":
        problems.append("templating: `datasource` must be a datasource variable of type prometheus")
    for name in ("job", "instance", "topic"):
        v = vars_.get(name)
        q = v and (v.get("query") if isinstance(v.get("query"), str) else (v.get("query") or {}).get("query"))
        if not v or v.get("type") != "query" or not q or not q.startswith("label_values("):
            problems.append(f"templating: `{name}` must be a query variable using label_values(...)")
        elif (v.get("datasource") or {}).get("uid") != "${datasource}":
            problems.append(f"templating: `{name}` must query the ${{datasource}} variable")
    ids = []
    occupied: dict[tuple[int, int], int] = {}

    def walk(panels):
        for p in panels:
            ids.append(p.get("id"))
            g = p.get("gridPos") or {}
            if not all(isinstance(g.get(k), int) for k in ("x", "y", "w", "h")):
                problems.append(f"panel {p.get('id')} {p.get('title')!r}: gridPos x/y/w/h missing")
            elif g["x"] + g["w"] > 24:
                problems.append(f"panel {p.get('id')} {p.get('title')!r}: wider than 24 columns")
            else:
                for cx in range(g["x"], g["x"] + g["w"]):
                    for cy in range(g["y"], g["y"] + g["h"]):
                        if (cx, cy) in occupied:
                            problems.append(f"panel {p.get('id')} overlaps panel {occupied[(cx, cy)]}")
                            break
                        occupied[(cx, cy)] = p.get("id")
                    else:
                        continue
                    break
            if p.get("type") != "row":
                if not p.get("title"):
                    problems.append(f"panel {p.get('id')}: no title")
                if (p.get("datasource") or {}).get("uid") != "${datasource}":
                    problems.append(f"panel {p.get('id')} {p.get('title')!r}: datasource is not ${{datasource}}")
                if not p.get("targets"):
                    problems.append(f"panel {p.get('id')} {p.get('title')!r}: no targets")
                for t in p.get("targets", []):
                    if (t.get("datasource") or {}).get("uid") not in (None, "${datasource}"):
                        problems.append(f"panel {p.get('id')} target {t.get('refId')}: datasource is not ${{datasource}}")
            walk(p.get("panels", []) or [])

    walk(d.get("panels", []))
    dup = {i for i in ids if ids.count(i) > 1}
    if dup:
        problems.append(f"duplicate panel ids {sorted(dup)}")
    exprs = " ".join(e for _, e in dashboard_exprs(d))
    required = {
        "consumer lag committed": "kafka_s3_sink_consumer_lag_committed",
        "consumer lag consumed": "kafka_s3_sink_consumer_lag_consumed",
        "records consumed": "kafka_s3_sink_records_consumed_total",
        "bytes consumed": "kafka_s3_sink_bytes_consumed_total",
        "records written": "kafka_s3_sink_records_written_total",
        "raw bytes written": "kafka_s3_sink_raw_bytes_written_total",
        "compressed bytes written": "kafka_s3_sink_compressed_bytes_written_total",
        "flushes by reason": "kafka_s3_sink_flushes_total",
        "file size quantiles": "kafka_s3_sink_flush_bytes_bucket",
        "records per file quantiles": "kafka_s3_sink_flush_records_bucket",
        "upload latency": "kafka_s3_sink_upload_duration_seconds_bucket",
        "S3 retries": "kafka_s3_sink_upload_retries_total",
        "S3 failures": "kafka_s3_sink_upload_failures_total",
        "buffered bytes": "kafka_s3_sink_buffered_bytes",
        "memory budget": "kafka_s3_sink_memory_budget_bytes",
        "open files": "kafka_s3_sink_open_files",
        "oldest buffered record age": "kafka_s3_sink_oldest_buffered_record_age_seconds",
        "quarantine": "kafka_s3_sink_records_quarantined_total",
        "rebalances": "kafka_s3_sink_rebalance_partitions_total",
        "commits": "kafka_s3_sink_commits_total",
        "commit failures": "kafka_s3_sink_commit_failures_total",
        "readiness": "kafka_s3_sink_ready",
        "build info": "kafka_s3_sink_build_info",
    }
    for what, metric in required.items():
        if not re.search(re.escape(metric) + r"\b", exprs):
            problems.append(f"no panel shows {what} ({metric})")
    for q in ("0.5", "0.9", "0.99"):
        if f"histogram_quantile({q}, sum by (le, destination) (rate(kafka_s3_sink_upload_duration_seconds_bucket" not in exprs \
                and f"histogram_quantile({q}, sum by (le) (rate(kafka_s3_sink_upload_duration_seconds_bucket" not in exprs:
            problems.append(f"no p{q[2:]:0<2} upload latency query")
    fail_if(problems, f"schemaVersion {d.get('schemaVersion')}, {len(ids)} panels, "
                      f"{len(dashboard_exprs(d))} queries, variables {sorted(vars_)}")


def cmd_dashboard_rules(out_path: str) -> None:
    """Writes every dashboard query (variables substituted) as a recording rule, for promtool."""
    d = json.loads(DASHBOARD.read_text())
    rules = [{"record": f"dashboard:query_{i}", "expr": substitute_vars(e)}
             for i, (_, e) in enumerate(dashboard_exprs(d))]
    for v in d.get("templating", {}).get("list", []):
        q = v.get("query")
        q = q.get("query") if isinstance(q, dict) else q
        m = re.match(r"label_values\((.*),\s*[a-z_]+\)$", q or "")
        if m:
            rules.append({"record": f"dashboard:variable_{v['name']}", "expr": substitute_vars(m.group(1))})
    Path(out_path).write_text(yaml.safe_dump({"groups": [{"name": "dashboard-queries", "rules": rules}]}))
    print(f"  {len(rules)} queries written to {out_path}")


# ---------------------------------------------------------------------------------- metric names


def cmd_metric_names() -> None:
    cat = catalogue()
    series = series_of(cat)
    problems: list[str] = []
    used: set[str] = set()
    d = json.loads(DASHBOARD.read_text())
    for where, e in dashboard_exprs(d):
        problems += check_expr(e, f"dashboard {where}", cat, series)
        used |= {series[t][0] for t in METRIC_RE.findall(e) if t in series}
    for v in d.get("templating", {}).get("list", []):
        q = v.get("query")
        q = q.get("query") if isinstance(q, dict) else q
        if isinstance(q, str):
            problems += check_expr(q, f"dashboard variable {v.get('name')}", cat, series)
    n_rules = 0
    for g in yaml.safe_load(ALERTS.read_text())["groups"]:
        for r in g["rules"]:
            n_rules += 1
            problems += check_expr(r["expr"], f"alerts.yml {r.get('alert') or r.get('record')}", cat, series)
    for t in yaml.safe_load(ALERTS_TEST.read_text())["tests"]:
        for s in t.get("input_series", []):
            problems += check_expr(s["series"], "alerts_test.yml input series", cat, series)
    unused = sorted(set(cat) - used)
    fail_if(problems, f"{len(cat)} metrics in the connector's catalogue; dashboard and {n_rules} rules use only those "
                      f"(names, labels, counter/histogram functions)")
    if unused:
        print(f"  note: not on the dashboard: {', '.join(unused)}")


# -------------------------------------------------------------------------------------- alerts


def cmd_alerts_coverage() -> None:
    rules = [r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"] if "alert" in r]
    groups = [g["name"] for g in yaml.safe_load(ALERTS.read_text())["groups"]]
    tests = yaml.safe_load(ALERTS_TEST.read_text())
    problems = []
    if "kafka-s3-sink" not in groups:
        problems.append("alerts.yml has no group `kafka-s3-sink`")
    if not any(Path(ALERTS_TEST.parent, f).resolve() == ALERTS.resolve() for f in tests.get("rule_files", [])):
        problems.append("alerts_test.yml does not load alerts.yml")
    fires: dict[str, int] = {}
    quiet: dict[str, int] = {}
    for t in tests.get("tests", []):
        for c in t.get("alert_rule_test", []):
            bucket = fires if c.get("exp_alerts") else quiet
            bucket[c["alertname"]] = bucket.get(c["alertname"], 0) + 1
    for r in rules:
        a = r["alert"]
        sev = (r.get("labels") or {}).get("severity")
        if sev not in ("info", "warning", "critical"):
            problems.append(f"{a}: severity label is {sev!r}")
        ann = r.get("annotations") or {}
        for k in ("summary", "description"):
            if not ann.get(k):
                problems.append(f"{a}: no {k} annotation")
        if "runbook" not in (ann.get("description") or "").lower():
            problems.append(f"{a}: description has no runbook hint")
        if not fires.get(a):
            problems.append(f"{a}: no test case where it fires")
        if not quiet.get(a):
            problems.append(f"{a}: no test case where it does not fire")
    for a in set(fires) | set(quiet):
        if a not in {r["alert"] for r in rules}:
            problems.append(f"alerts_test.yml tests unknown alert {a}")
    fail_if(problems, f"{len(rules)} alerts, each with severity, summary, description + runbook, "
                      f"a firing and a non-firing test")


# ---------------------------------------------------------------------------------------- yaml


def yaml_files() -> list[Path]:
    files = [COMPOSE] + sorted(p for p in (ROOT / "deploy").rglob("*") if p.suffix in (".yml", ".yaml"))
    return [f for f in files if f.is_file()]


def cmd_yaml() -> None:
    problems = []
    n = 0
    for f in yaml_files():
        try:
            docs = [d for d in yaml.safe_load_all(f.read_text()) if d is not None]
            n += len(docs)
            if not docs:
                problems.append(f"{f.relative_to(ROOT)}: empty")
        except yaml.YAMLError as e:
            problems.append(f"{f.relative_to(ROOT)}: {e}")
    fail_if(problems, f"{len(yaml_files())} files, {n} documents")


# ------------------------------------------------------------------------------------- compose


def env_refs_in_toml(path: Path) -> set[str]:
    """`${VAR}` references in the config's string values (comments excluded, `$${` escaped)."""
    found: set[str] = set()

    def walk(v):
        if isinstance(v, dict):
            for x in v.values():
                walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)
        elif isinstance(v, str):
            found.update(re.findall(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)\}", v))

    walk(tomllib.loads(path.read_text()))
    return found


# Images of docker-compose.yml that run as root: they keep Docker's default capabilities.
COMPOSE_ROOT_IMAGES = ("minio/minio:", "minio/mc:")


def compose_bytes(v) -> float:
    """A Compose byte value (`512m`, `1g`, `536870912`) in bytes (binary multiples, as Docker)."""
    m = re.fullmatch(r"\s*([0-9.]+)\s*([bkmg]?)b?\s*", str(v).lower())
    if not m:
        raise ValueError(f"bad byte value {v!r}")
    return float(m.group(1)) * {"": 1, "b": 1, "k": 2**10, "m": 2**20, "g": 2**30}[m.group(2)]


def cmd_compose() -> None:
    c = yaml.safe_load(COMPOSE.read_text())
    problems = []
    services = c.get("services") or {}
    volumes = set((c.get("volumes") or {}).keys())
    if not services:
        problems.append("no services")
    for name, s in services.items():
        if "image" not in s and "build" not in s:
            problems.append(f"{name}: neither image nor build")
        b = s.get("build")
        if b is not None:
            ctx = ROOT / (b if isinstance(b, str) else b.get("context", "."))
            df = ctx / ("Dockerfile" if isinstance(b, str) else b.get("dockerfile", "Dockerfile"))
            if not ctx.is_dir():
                problems.append(f"{name}: build context {ctx} missing")
            if not df.is_file():
                problems.append(f"{name}: {df} missing")
        for p in s.get("ports", []) or []:
            if not isinstance(p, (str, dict)):
                problems.append(f"{name}: port {p!r} must be a quoted string (YAML reads 9090:9090 as base 60)")
        for v in s.get("volumes", []) or []:
            src = v.split(":", 1)[0] if isinstance(v, str) else v.get("source")
            if src and (src.startswith(".") or src.startswith("/")):
                if not (ROOT / src).exists():
                    problems.append(f"{name}: bind mount source {src} does not exist")
            elif src and src not in volumes:
                problems.append(f"{name}: named volume {src} not declared under top-level volumes")
        deps = s.get("depends_on") or []
        for d in (deps if isinstance(deps, list) else deps.keys()):
            if d not in services:
                problems.append(f"{name}: depends_on unknown service {d}")
    sink = services.get("kafka-s3-sink") or {}
    mounts = [v for v in sink.get("volumes", []) if isinstance(v, str)]
    if not any(m.startswith("./deploy/compose/config.toml:/etc/kafka-s3-sink/config.toml") for m in mounts):
        problems.append("kafka-s3-sink: deploy/compose/config.toml is not mounted at /etc/kafka-s3-sink/config.toml")
    env = sink.get("environment") or {}
    env_names = set(env.keys() if isinstance(env, dict) else (e.split("=", 1)[0] for e in env))
    for var in sorted(env_refs_in_toml(COMPOSE_CONFIG)):
        if var not in env_names:
            problems.append(f"kafka-s3-sink: config.toml needs ${{{var}}} but the service does not set it")
    cfg = tomllib.loads(COMPOSE_CONFIG.read_text())
    if cfg["kafka"]["brokers"] != "kafka:9092":
        problems.append("config.toml: kafka.brokers should be kafka:9092")
    dest = cfg["destinations"][0]
    if dest.get("endpoint") != "http://minio:9000" or not dest.get("force_path_style"):
        problems.append("config.toml: destination must use http://minio:9000 with force_path_style")
    port = cfg.get("http", {}).get("listen", "0.0.0.0:9464").rsplit(":", 1)[1]
    if not any(str(p).endswith(f":{port}") for p in sink.get("ports", [])):
        problems.append(f"kafka-s3-sink: http.listen port {port} not published")
    prom = yaml.safe_load(PROM_CONFIG.read_text())
    targets = [t for sc in prom["scrape_configs"] for st in sc.get("static_configs", []) for t in st["targets"]]
    if f"kafka-s3-sink:{port}" not in targets:
        problems.append(f"prometheus.yml does not scrape kafka-s3-sink:{port}")
    if not any(sc.get("job_name") == "kafka-s3-sink" and sc.get("scrape_interval") == "15s"
               for sc in prom["scrape_configs"]):
        problems.append("prometheus.yml: no job kafka-s3-sink with scrape_interval 15s")
    bucket = dest["bucket"]
    init = " ".join(str(x) for x in (services.get("minio-init") or {}).get("command", []))
    if f"local/{bucket}" not in init:
        problems.append(f"minio-init does not create bucket {bucket}")
    gprov = ROOT / "deploy/grafana/provisioning"
    for sub in ("datasources", "dashboards"):
        if not list((gprov / sub).glob("*.y*ml")):
            problems.append(f"no Grafana {sub} provisioning file under {gprov / sub}")
    for f in (gprov / "dashboards").glob("*.y*ml"):
        for p in yaml.safe_load(f.read_text()).get("providers", []):
            path = p.get("options", {}).get("path")
            graf = services.get("grafana") or {}
            if not any(str(v).startswith("./dashboards:" + str(path)) for v in graf.get("volumes", [])):
                problems.append(f"grafana: dashboard provider path {path} is not the ./dashboards mount")
    # Hardening: loopback-only ports, no privilege gain, no capabilities (images that run as
    # root keep Docker's defaults), a memory limit on the connector, versioned images.
    for name, s in services.items():
        for p in s.get("ports", []) or []:
            host_ip = p.get("host_ip") if isinstance(p, dict) else \
                (str(p).rsplit(":", 2)[0] if str(p).count(":") == 2 else None)
            if host_ip != "127.0.0.1":
                problems.append(f"{name}: port {p!r} is not bound to 127.0.0.1")
        if "no-new-privileges:true" not in (s.get("security_opt") or []):
            problems.append(f"{name}: security_opt lacks no-new-privileges:true")
        if s.get("cap_add"):
            problems.append(f"{name}: cap_add {s['cap_add']}")
        image = str(s.get("image", ""))
        if not image.startswith(COMPOSE_ROOT_IMAGES) and s.get("cap_drop") != ["ALL"]:
            problems.append(f"{name}: cap_drop must be [ALL] (its image runs as a non-root user)")
        if image and "@sha256:" not in image:
            tag = image.rsplit("/", 1)[-1].partition(":")[2]
            if not tag or tag == "latest":
                problems.append(f"{name}: image {image} needs an explicit version tag (or a digest)")
    budget = cfg.get("pipeline", {}).get("memory_budget_bytes", 256 * 2**20)
    mem = sink.get("mem_limit") or ((sink.get("deploy") or {}).get("resources", {}).get("limits", {}).get("memory"))
    if mem is None:
        problems.append("kafka-s3-sink: no memory limit (mem_limit)")
    elif compose_bytes(mem) < budget + 128 * 2**20:
        problems.append(f"kafka-s3-sink: memory limit {mem} < memory_budget_bytes ({budget}) + 128 MiB")
    fail_if(problems, f"{len(services)} services: image/build, mounts, volumes, depends_on, ports on 127.0.0.1, "
                      f"no-new-privileges, cap_drop ALL (but root images), connector memory limit ≥ budget + "
                      f"128 MiB, connector env covers {sorted(env_refs_in_toml(COMPOSE_CONFIG))}")


# ----------------------------------------------------------------------------------------- k8s


def k8s_docs() -> list[tuple[Path, dict]]:
    out = []
    for f in sorted(K8S.glob("*.y*ml")):
        for d in yaml.safe_load_all(f.read_text()):
            if d is not None:
                out.append((f, d))
    return out


def quantity_bytes(q: str) -> float:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}
    m = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(q))
    if not m or (m.group(2) and m.group(2) not in units):
        raise ValueError(f"bad quantity {q!r}")
    return float(m.group(1)) * units.get(m.group(2), 1)


# Kinds kept out of kustomization.yaml, and why: the Secret is applied once by hand so that
# `apply -k` never overwrites a real one with placeholders; the CRDs exist only where their
# operator runs.
APPLIED_APART = {
    "Secret": "applied once by hand (kubectl apply -f), so apply -k never overwrites the real Secret",
    "ServiceMonitor": "a Prometheus Operator CRD",
    "ScaledObject": "a KEDA CRD",
}
K8S_KINDS = ("ConfigMap", "Secret", "Deployment", "Service", "PodDisruptionBudget", "ServiceAccount",
             "NetworkPolicy", "ServiceMonitor", "ScaledObject")
PARTITIONS_ANNOTATION = "kafka-s3-sink/topic-partitions"
IRSA_ANNOTATION = "eks.amazonaws.com/role-arn"
ROLE_ARN_RE = re.compile(r"arn:aws[a-z-]*:iam::(\d{12}):role/[\w+=,.@/-]+")


def resolve_env(value: str, env: dict[str, str | None]) -> str | None:
    """`${VAR}` references of a config string replaced by the container's env values; None when
    one is unknown or comes from a Secret."""
    out = value
    for var in re.findall(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)\}", value):
        v = env.get(var)
        if v is None:
            return None
        out = out.replace("${" + var + "}", v)
    return out


def normalize_prefix(p: str) -> str:
    t = p.strip("/")
    return f"{t}/" if t else ""


def k8s_connector_context() -> tuple[dict, dict[str, str | None], dict, dict]:
    """The ConfigMap's config, the container's env (None for Secret values), the Deployment and
    the ServiceAccount, for checks that compare other files with them."""
    by_kind: dict[str, dict] = {}
    for _, d in k8s_docs():
        by_kind.setdefault(d.get("kind"), d)
    cm, dep = by_kind["ConfigMap"], by_kind["Deployment"]
    [c] = [c for c in dep["spec"]["template"]["spec"]["containers"] if c["name"] == "kafka-s3-sink"]
    env = {e["name"]: (None if e.get("valueFrom") else str(e.get("value", ""))) for e in c.get("env", [])}
    return tomllib.loads(cm["data"]["config.toml"]), env, dep, by_kind.get("ServiceAccount", {})


def cmd_k8s(config_out: str | None = None, env_out: str | None = None) -> None:
    problems = []
    docs = k8s_docs()
    by_kind: dict[str, list[dict]] = {}
    kinds_of: dict[Path, set[str]] = {}
    listed: set[str] | None = None
    for f, d in docs:
        rel = f.relative_to(ROOT)
        if d.get("kind") == "Kustomization":
            listed = set(d.get("resources", []))
            for r in sorted(listed):
                if not (K8S / r).is_file():
                    problems.append(f"{rel}: resource {r} missing")
            continue
        for key in ("apiVersion", "kind"):
            if not d.get(key):
                problems.append(f"{rel}: no {key}")
        if not (d.get("metadata") or {}).get("name"):
            problems.append(f"{rel}: no metadata.name")
        if (d.get("metadata") or {}).get("namespace"):
            problems.append(f"{rel}: manifests must be namespace-free")
        by_kind.setdefault(d.get("kind"), []).append(d)
        kinds_of.setdefault(f, set()).add(d.get("kind"))
    for kind in K8S_KINDS:
        if len(by_kind.get(kind, [])) != 1:
            problems.append(f"expected one {kind}, found {len(by_kind.get(kind, []))}")
    if listed is None:
        problems.append("deploy/k8s/kustomization.yaml missing")
    if problems:
        fail_if(problems, "")
    # What `kubectl apply -k` applies: every manifest except the Secret and the CRDs.
    for f, kinds in sorted(kinds_of.items()):
        apart = kinds & set(APPLIED_APART)
        if apart and len(kinds) > 1:
            problems.append(f"{f.name}: the {', '.join(sorted(apart))} must be alone in its file")
        if apart and f.name in listed:
            kind = sorted(apart)[0]
            problems.append(f"kustomization.yaml lists {f.name}: the {kind} is {APPLIED_APART[kind]}")
        if not apart and f.name not in listed:
            problems.append(f"kustomization.yaml does not list {f.name}")
    cm, sec, dep = by_kind["ConfigMap"][0], by_kind["Secret"][0], by_kind["Deployment"][0]
    svc, pdb, sm = by_kind["Service"][0], by_kind["PodDisruptionBudget"][0], by_kind["ServiceMonitor"][0]
    sa, netpol, so = by_kind["ServiceAccount"][0], by_kind["NetworkPolicy"][0], by_kind["ScaledObject"][0]
    if sm.get("apiVersion") != "monitoring.coreos.com/v1":
        problems.append("ServiceMonitor apiVersion must be monitoring.coreos.com/v1")
    spec = dep["spec"]
    pod = spec["template"]["spec"]
    pod_labels = spec["template"]["metadata"].get("labels", {})

    def selects_pods(sel: dict) -> bool:
        return bool(sel) and all(pod_labels.get(k) == v for k, v in sel.items())

    if spec.get("replicas") != 3:
        problems.append(f"Deployment replicas is {spec.get('replicas')}, expected 3")
    if not selects_pods(spec["selector"].get("matchLabels", {})):
        problems.append("Deployment selector does not match its pod labels")
    [c] = [c for c in pod["containers"] if c["name"] == "kafka-s3-sink"]
    ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
    cfg_name = next(iter(cm.get("data", {})), None)
    if cfg_name != "config.toml":
        problems.append("ConfigMap must hold config.toml")
    cfg_text = cm["data"].get("config.toml", "")
    cfg = tomllib.loads(cfg_text)
    listen_port = int(cfg.get("http", {}).get("listen", "0.0.0.0:9464").rsplit(":", 1)[1])
    if ports.get("metrics") != listen_port:
        problems.append(f"container port `metrics` ({ports.get('metrics')}) != http.listen port {listen_port}")
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        h = (c.get(probe) or {}).get("httpGet") or {}
        if h.get("path") != path:
            problems.append(f"{probe} path is {h.get('path')!r}, expected {path}")
        if h.get("port") not in (listen_port, "metrics") or (h.get("port") == "metrics" and "metrics" not in ports):
            problems.append(f"{probe} port {h.get('port')!r} is not the metrics port")
    shutdown = cfg.get("pipeline", {}).get("shutdown_deadline_secs", 30)
    grace = pod.get("terminationGracePeriodSeconds", 30)
    if not grace > shutdown:
        problems.append(f"terminationGracePeriodSeconds {grace} must exceed pipeline.shutdown_deadline_secs {shutdown}")
    budget = cfg.get("pipeline", {}).get("memory_budget_bytes", 256 * 2**20)
    limits = (c.get("resources") or {}).get("limits") or {}
    requests = (c.get("resources") or {}).get("requests") or {}
    if "memory" not in limits or "cpu" not in requests or "memory" not in requests:
        problems.append("resources need requests.cpu, requests.memory and limits.memory")
    elif quantity_bytes(limits["memory"]) < budget + 128 * 2**20:
        problems.append(f"memory limit {limits['memory']} < memory_budget_bytes ({budget}) + 128Mi")
    psc, csc = pod.get("securityContext") or {}, c.get("securityContext") or {}
    if not (psc.get("runAsNonRoot") or csc.get("runAsNonRoot")):
        problems.append("runAsNonRoot is not set")
    if (csc.get("runAsUser", psc.get("runAsUser")) in (None, 0)):
        problems.append("runAsUser must be a non-zero uid")
    if not csc.get("readOnlyRootFilesystem"):
        problems.append("readOnlyRootFilesystem is not set")
    if csc.get("allowPrivilegeEscalation") is not False:
        problems.append("allowPrivilegeEscalation must be false")
    if (csc.get("capabilities") or {}).get("drop") != ["ALL"]:
        problems.append("the container must drop all capabilities")
    ann = spec["template"]["metadata"].get("annotations", {})
    if ann.get("prometheus.io/scrape") != "true" or ann.get("prometheus.io/port") != str(listen_port) \
            or ann.get("prometheus.io/path", "/metrics") != "/metrics":
        problems.append("pod prometheus.io/scrape|port|path annotations missing or wrong")
    args = c.get("args") or []
    cfg_path = args[args.index("--config") + 1] if "--config" in args else "/etc/kafka-s3-sink/config.toml"
    vols = {v["name"]: v for v in pod.get("volumes", [])}
    mounted = False
    for m in c.get("volumeMounts", []):
        v = vols.get(m["name"], {})
        if v.get("configMap", {}).get("name") == cm["metadata"]["name"] and \
                cfg_path == m["mountPath"].rstrip("/") + "/" + cfg_name:
            mounted = True
    if not mounted:
        problems.append(f"ConfigMap {cm['metadata']['name']} is not mounted so that {cfg_path} exists")

    # Identity: the ServiceAccount (IRSA role), no Kubernetes API token, credentials from the
    # Secret or the role.
    if pod.get("serviceAccountName") != sa["metadata"]["name"]:
        problems.append(f"Deployment serviceAccountName is {pod.get('serviceAccountName')!r}, "
                        f"not the ServiceAccount {sa['metadata']['name']!r}")
    if sa.get("automountServiceAccountToken") is not False or pod.get("automountServiceAccountToken") is not False:
        problems.append("automountServiceAccountToken must be false on the ServiceAccount and the pod "
                        "(the connector never calls the Kubernetes API)")
    role = (sa["metadata"].get("annotations") or {}).get(IRSA_ANNOTATION)
    if role is not None and not ROLE_ARN_RE.fullmatch(role):
        problems.append(f"ServiceAccount {IRSA_ANNOTATION} {role!r} is not an IAM role ARN")
    sec_keys = set((sec.get("stringData") or {}).keys()) | set((sec.get("data") or {}).keys())
    env = {}
    for e in c.get("env", []):
        ref = (e.get("valueFrom") or {}).get("secretKeyRef")
        if ref:
            if ref.get("name") != sec["metadata"]["name"] or ref.get("key") not in sec_keys:
                problems.append(f"env {e['name']}: secretKeyRef {ref} not in Secret {sec['metadata']['name']}")
            env[e["name"]] = "placeholder-from-secret"
        else:
            env[e["name"]] = e.get("value", "")
    if not any((e.get("valueFrom") or {}).get("secretKeyRef") for e in c.get("env", [])) and not role:
        problems.append("no S3 credentials: no env entry reads the Secret and the ServiceAccount names no IAM role")
    for var in sorted(env_refs_in_toml_text(cfg_text)):
        if var not in env:
            problems.append(f"config.toml needs ${{{var}}} but the container does not set it")

    if not selects_pods(svc["spec"].get("selector", {})):
        problems.append("Service selector does not match the pod labels")
    svc_ports = {p.get("name"): p for p in svc["spec"].get("ports", [])}
    sp = svc_ports.get("metrics")
    if not sp or sp.get("targetPort") not in ("metrics", listen_port):
        problems.append("Service needs a port named metrics targeting the container's metrics port")
    if not selects_pods(pdb["spec"].get("selector", {}).get("matchLabels", {})):
        problems.append("PodDisruptionBudget selector does not match the pod labels")
    if "minAvailable" not in pdb["spec"] and "maxUnavailable" not in pdb["spec"]:
        problems.append("PodDisruptionBudget has neither minAvailable nor maxUnavailable")
    sm_sel = sm["spec"].get("selector", {}).get("matchLabels", {})
    svc_labels = svc["metadata"].get("labels", {})
    if not sm_sel or any(svc_labels.get(k) != v for k, v in sm_sel.items()):
        problems.append("ServiceMonitor selector does not match the Service labels")
    for ep in sm["spec"].get("endpoints", []):
        if ep.get("port") not in svc_ports:
            problems.append(f"ServiceMonitor endpoint port {ep.get('port')!r} is not a Service port name")
        if ep.get("path", "/metrics") != "/metrics":
            problems.append("ServiceMonitor path must be /metrics")

    # NetworkPolicy: ingress only to the metrics port, only from selected namespaces.
    np_spec = netpol.get("spec") or {}
    if not selects_pods((np_spec.get("podSelector") or {}).get("matchLabels", {})):
        problems.append("NetworkPolicy podSelector does not select the connector's pods")
    if "Ingress" not in (np_spec.get("policyTypes") or []):
        problems.append("NetworkPolicy policyTypes lacks Ingress")
    rules = np_spec.get("ingress") or []
    if not rules:
        problems.append("NetworkPolicy admits no ingress: Prometheus could not scrape the workers")
    for i, r in enumerate(rules):
        where = f"NetworkPolicy ingress[{i}]"
        if not r.get("ports"):
            problems.append(f"{where}: no ports, so every port is open")
        for p in r.get("ports") or []:
            if p.get("port") not in (listen_port, "metrics") or p.get("protocol", "TCP") != "TCP" or "endPort" in p:
                problems.append(f"{where}: port {p} is not the metrics port {listen_port}/TCP")
        if not r.get("from"):
            problems.append(f"{where}: no `from`, so every source is admitted")
        for peer in r.get("from") or []:
            nss = peer.get("namespaceSelector") or {}
            if "ipBlock" in peer or not (nss.get("matchLabels") or nss.get("matchExpressions")):
                problems.append(f"{where}: peer {peer} must select the monitoring namespace by namespaceSelector")

    # ScaledObject (KEDA): the Deployment, on the group's lag, within the partition count.
    if so.get("apiVersion") != "keda.sh/v1alpha1":
        problems.append("ScaledObject apiVersion must be keda.sh/v1alpha1")
    so_spec = so.get("spec") or {}
    ref = so_spec.get("scaleTargetRef") or {}
    if ref.get("name") != dep["metadata"]["name"] or ref.get("kind", "Deployment") != "Deployment" \
            or ref.get("apiVersion", "apps/v1") != "apps/v1":
        problems.append(f"ScaledObject scaleTargetRef {ref} is not the Deployment {dep['metadata']['name']}")
    lo, hi = so_spec.get("minReplicaCount", 0), so_spec.get("maxReplicaCount", 100)
    if not isinstance(lo, int) or lo < 1:
        problems.append("ScaledObject minReplicaCount must be at least 1 (no scale to zero)")
    elif lo != spec.get("replicas"):
        problems.append(f"ScaledObject minReplicaCount {lo} != Deployment replicas {spec.get('replicas')} "
                        "(apply -k resets the count to the Deployment's)")
    partitions = str((so["metadata"].get("annotations") or {}).get(PARTITIONS_ANNOTATION, ""))
    if not partitions.isdigit() or int(partitions) < 1:
        problems.append(f"ScaledObject needs the annotation {PARTITIONS_ANNOTATION} (the topic's partition count)")
    elif not isinstance(hi, int) or not (isinstance(lo, int) and lo <= hi <= int(partitions)):
        problems.append(f"ScaledObject maxReplicaCount {hi} must lie between minReplicaCount {lo} and the "
                        f"partition count {partitions}: replicas beyond it sit idle")
    triggers = so_spec.get("triggers") or []
    if len(triggers) != 1 or triggers[0].get("type") != "kafka":
        problems.append("ScaledObject needs exactly one trigger, of type kafka")
    else:
        md = triggers[0].get("metadata") or {}
        kafka = cfg.get("kafka", {})
        if any(not isinstance(v, str) for v in md.values()):
            problems.append("ScaledObject trigger metadata values must be strings")
        brokers = resolve_env(str(kafka.get("brokers", "")), {k: v for k, v in env.items()
                                                               if v != "placeholder-from-secret"})
        def servers(v) -> list[str]:
            return sorted(x.strip() for x in str(v).split(",") if x.strip())

        if brokers is not None and servers(md.get("bootstrapServers", "")) != servers(brokers):
            problems.append(f"ScaledObject bootstrapServers {md.get('bootstrapServers')!r} != kafka.brokers {brokers!r}")
        if md.get("consumerGroup") != kafka.get("group_id"):
            problems.append(f"ScaledObject consumerGroup {md.get('consumerGroup')!r} != kafka.group_id {kafka.get('group_id')!r}")
        topic = md.get("topic")
        if topic not in [t for t in kafka.get("topics", []) if not t.startswith("^")]:
            problems.append(f"ScaledObject topic {topic!r} is not one of kafka.topics {kafka.get('topics')}")
        if not str(md.get("lagThreshold", "")).isdigit() or int(md["lagThreshold"]) < 1:
            problems.append("ScaledObject lagThreshold must be a positive integer (as a string)")
        if md.get("offsetResetPolicy", "latest") != kafka.get("auto_offset_reset", "earliest"):
            problems.append(f"ScaledObject offsetResetPolicy {md.get('offsetResetPolicy', 'latest')!r} != "
                            f"kafka.auto_offset_reset {kafka.get('auto_offset_reset', 'earliest')!r}")
        if md.get("allowIdleConsumers", "false") != "false":
            problems.append("ScaledObject allowIdleConsumers must stay false (idle replicas only add rebalances)")
    if config_out:
        Path(config_out).write_text(cfg_text)
    if env_out:
        Path(env_out).write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    fail_if(problems, "selectors, ports, probes /healthz + /readyz, grace > shutdown deadline, memory limit "
                      "≥ budget + 128Mi, non-root read-only, Secret/ConfigMap references, ServiceAccount "
                      "(no API token, IRSA role), NetworkPolicy (metrics port from monitoring only), "
                      f"ScaledObject (kafka lag, ≤ {partitions} partitions), ServiceMonitor; "
                      "kustomization lists all but the Secret and the CRDs")


def cmd_kustomized(path: str) -> None:
    """The output of `kubectl kustomize deploy/k8s`: exactly the core kinds, no Secret, no CRD."""
    kinds = sorted(d.get("kind") for d in yaml.safe_load_all(Path(path).read_text()) if d)
    want = sorted(k for k in K8S_KINDS if k not in APPLIED_APART)
    fail_if([f"kustomize builds {kinds}, expected {want}"] if kinds != want else [],
            f"kustomize builds {', '.join(kinds)} (no Secret, no CRD)")


def env_refs_in_toml_text(text: str) -> set[str]:
    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"validate-deploy-{os.getpid()}.toml"
    tmp.write_text(text)
    try:
        return env_refs_in_toml(tmp)
    finally:
        tmp.unlink()


# ------------------------------------------------------------------------------------------ iam

IAM_POLICY = ROOT / "deploy/iam-policy.json"
IAM_KMS = ROOT / "deploy/iam-policy-kms.json"
IAM_TRUST = ROOT / "deploy/iam-trust-policy-irsa.json"
IAM_MSK = ROOT / "deploy/iam-policy-msk.json"
# AWS_MSK_IAM: a consumer in a group, nothing else (no writes, no topic or group management).
MSK_STATEMENTS = {
    "MskConnect": ({"kafka-cluster:Connect", "kafka-cluster:DescribeCluster"}, "cluster"),
    "MskReadTopics": ({"kafka-cluster:DescribeTopic", "kafka-cluster:ReadData"}, "topic"),
    "MskConsumerGroup": ({"kafka-cluster:DescribeGroup", "kafka-cluster:AlterGroup"}, "group"),
}
MSK_ARN_RE = re.compile(r"arn:aws[a-z-]*:kafka:([a-z0-9-]+):(\d{12}):(cluster|topic|group)/([\w-]+)/([0-9a-f-]+)(?:/(.+))?")
S3_BUCKET_ACTIONS = {"s3:ListBucket", "s3:ListBucketMultipartUploads"}
KMS_ACTIONS = {"kms:GenerateDataKey", "kms:Decrypt"}
KMS_SID = "KmsOnlyWithSseKms"
KMS_KEY_RE = re.compile(r"arn:aws[a-z-]*:kms:([a-z0-9-]+):(\d{12}):key/[0-9a-f-]+")


def as_list(v) -> list:
    return v if isinstance(v, list) else [v]


def policy_statements(path: Path, problems: list[str], trust: bool = False) -> list[dict]:
    rel = path.relative_to(ROOT)
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        problems.append(f"{rel}: {e}")
        return []
    if doc.get("Version") != "2012-10-17":
        problems.append(f"{rel}: Version must be 2012-10-17")
    stmts = doc.get("Statement")
    if not isinstance(stmts, list) or not stmts:
        problems.append(f"{rel}: Statement must be a non-empty list")
        return []
    sids = [s.get("Sid") for s in stmts]
    if None in sids or len(set(sids)) != len(sids):
        problems.append(f"{rel}: every statement needs its own Sid")
    for s in stmts:
        where = f"{rel} {s.get('Sid')}"
        if s.get("Effect") != "Allow":
            problems.append(f"{where}: Effect must be Allow")
        for key in ("NotAction", "NotResource", "NotPrincipal"):
            if key in s:
                problems.append(f"{where}: {key} grants everything else")
        for a in as_list(s.get("Action", [])):
            if not isinstance(a, str) or "*" in a or "?" in a:
                problems.append(f"{where}: action {a!r} is a wildcard")
        if trust:
            if "Resource" in s:
                problems.append(f"{where}: a trust policy has no Resource")
        else:
            if "Principal" in s:
                problems.append(f"{where}: an identity policy has no Principal")
            if not s.get("Resource"):
                problems.append(f"{where}: no Resource")
    return stmts


def cmd_iam() -> None:
    """deploy/iam-policy.json (S3), deploy/iam-policy-kms.json (SSE-KMS only) and
    deploy/iam-trust-policy-irsa.json: least privilege, matching the S3 calls of the connector's
    catalogue (each with the IAM actions the code lists, src/sink/s3.rs `S3_CALLS`) and
    the bucket, prefix, region and ServiceAccount of deploy/k8s."""
    problems: list[str] = []
    extra = sorted(p.name for p in (ROOT / "deploy").glob("iam*.json")
                   if p not in (IAM_POLICY, IAM_KMS, IAM_TRUST, IAM_MSK))
    if extra:
        problems.append(f"unknown IAM files {extra}: add them to the `iam` check")
    calls = {c["call"]: set(c["iam_actions"]) for c in connector_catalogue()["s3_calls"]}
    if len(calls) < 5:
        problems.append(f"only {len(calls)} S3 calls in the connector's catalogue")
    needed: set[str] = set()
    for call, actions in sorted(calls.items()):
        if not actions:
            problems.append(f"S3 call {call}() has no IAM action in the catalogue (src/sink/s3.rs S3_CALLS)")
        needed |= actions

    cfg, env, _, sa = k8s_connector_context()
    dest = cfg["destinations"][0]
    bucket = resolve_env(str(dest.get("bucket", "")), env)
    prefix = resolve_env(str(dest.get("prefix", "")), env)
    region = resolve_env(str(dest.get("region", "us-east-1")), env)
    prefix = None if prefix is None else normalize_prefix(prefix)
    object_arn = f"arn:aws:s3:::{bucket}/{prefix}*"
    bucket_arn = f"arn:aws:s3:::{bucket}"

    granted: set[str] = set()
    for s in policy_statements(IAM_POLICY, problems):
        where = f"iam-policy.json {s.get('Sid')}"
        actions = set(as_list(s.get("Action", [])))
        granted |= actions
        resources = as_list(s.get("Resource", []))
        if actions & KMS_ACTIONS or any(not a.startswith("s3:") for a in actions):
            problems.append(f"{where}: only S3 actions here; KMS goes in iam-policy-kms.json")
        if actions & S3_BUCKET_ACTIONS and actions - S3_BUCKET_ACTIONS:
            problems.append(f"{where}: bucket and object actions need separate statements")
        want = bucket_arn if actions <= S3_BUCKET_ACTIONS else object_arn
        if bucket is not None and prefix is not None and resources != [want]:
            problems.append(f"{where}: Resource {resources} should be [{want!r}] (deploy/k8s's bucket and prefix)")
        cond = s.get("Condition")
        if "s3:ListBucket" in actions and prefix:
            values = as_list(((cond or {}).get("StringLike") or {}).get("s3:prefix", []))
            if not values or not all(isinstance(v, str) and v.startswith(prefix) for v in values) \
                    or not any(fnmatch.fnmatchcase(prefix, v) for v in values):
                problems.append(f"{where}: s3:ListBucket needs Condition StringLike s3:prefix "
                                f"{prefix + '*'!r} (the connector lists {prefix!r})")
        elif cond is not None and "s3:ListBucket" not in actions:
            problems.append(f"{where}: unexpected Condition {cond}")
    for a in sorted(needed - granted):
        problems.append(f"iam-policy.json: lacks {a}, which the connector needs")
    for a in sorted(granted - needed):
        problems.append(f"iam-policy.json: grants {a}, which no S3 call of the connector needs")

    kms_stmts = policy_statements(IAM_KMS, problems)
    if [s.get("Sid") for s in kms_stmts] != [KMS_SID]:
        problems.append(f"iam-policy-kms.json: one statement, Sid {KMS_SID}")
    for s in kms_stmts:
        actions = set(as_list(s.get("Action", [])))
        if actions != KMS_ACTIONS:
            problems.append(f"iam-policy-kms.json: actions {sorted(actions)}, expected {sorted(KMS_ACTIONS)}")
        for r in as_list(s.get("Resource", [])):
            m = KMS_KEY_RE.fullmatch(str(r))
            if not m:
                problems.append(f"iam-policy-kms.json: Resource {r!r} is not one key's ARN")
            elif region is not None and m.group(1) != region:
                problems.append(f"iam-policy-kms.json: key region {m.group(1)} != the destination's {region}")
        via = ((s.get("Condition") or {}).get("StringEquals") or {}).get("kms:ViaService")
        if region is not None and via != f"s3.{region}.amazonaws.com":
            problems.append(f"iam-policy-kms.json: needs Condition StringEquals kms:ViaService "
                            f"s3.{region}.amazonaws.com (the key is used only through S3)")

    msk_checked = check_msk_policy(cfg, problems)

    trust = policy_statements(IAM_TRUST, problems, trust=True)
    role = (sa.get("metadata", {}).get("annotations") or {}).get(IRSA_ANNOTATION, "")
    role_m = ROLE_ARN_RE.fullmatch(role)
    sa_name = sa.get("metadata", {}).get("name")
    if len(trust) != 1:
        problems.append("iam-trust-policy-irsa.json: one statement")
    for s in trust[:1]:
        fed = str((s.get("Principal") or {}).get("Federated", ""))
        m = re.fullmatch(r"arn:aws[a-z-]*:iam::(\d{12}):oidc-provider/(.+)", fed)
        if as_list(s.get("Action")) != ["sts:AssumeRoleWithWebIdentity"]:
            problems.append("iam-trust-policy-irsa.json: Action must be sts:AssumeRoleWithWebIdentity")
        if not m:
            problems.append("iam-trust-policy-irsa.json: Principal.Federated must be an OIDC provider ARN")
            continue
        if role_m and role_m.group(1) != m.group(1):
            problems.append(f"iam-trust-policy-irsa.json: account {m.group(1)} != the ServiceAccount's role account "
                            f"{role_m.group(1)}")
        eq = (s.get("Condition") or {}).get("StringEquals") or {}
        issuer = m.group(2)
        sub = str(eq.get(f"{issuer}:sub", ""))
        if not re.fullmatch(rf"system:serviceaccount:[a-z0-9-]+:{re.escape(str(sa_name))}", sub):
            problems.append(f"iam-trust-policy-irsa.json: {issuer}:sub must name the ServiceAccount "
                            f"(system:serviceaccount:<namespace>:{sa_name}), not {sub!r}")
        if eq.get(f"{issuer}:aud") != "sts.amazonaws.com":
            problems.append(f"iam-trust-policy-irsa.json: {issuer}:aud must be sts.amazonaws.com")
    fail_if(problems, f"{len(calls)} S3 calls of the connector need exactly {sorted(needed)}, on {bucket_arn} and "
                      f"{object_arn}, ListBucket only under {prefix!r}; KMS ({', '.join(sorted(KMS_ACTIONS))}) only "
                      f"in iam-policy-kms.json, through S3 in {region}; {msk_checked}; "
                      f"IRSA trust: ServiceAccount {sa_name} only")


def check_msk_policy(cfg: dict, problems: list[str]) -> str:
    """deploy/iam-policy-msk.json: the consumer's MSK actions only, on one cluster, the
    ConfigMap's topics (a `^pattern` topic needs a wildcard resource) and its group id."""
    stmts = policy_statements(IAM_MSK, problems)
    if sorted(s.get("Sid") for s in stmts) != sorted(MSK_STATEMENTS):
        problems.append(f"iam-policy-msk.json: statements {sorted(MSK_STATEMENTS)}")
    clusters = set()
    group = cfg["kafka"].get("group_id")
    topics = [t for t in cfg["kafka"].get("topics", []) if not t.startswith("^")]
    for s in stmts:
        want = MSK_STATEMENTS.get(s.get("Sid"))
        if not want:
            continue
        actions, kind = want
        where = f"iam-policy-msk.json {s.get('Sid')}"
        if set(as_list(s.get("Action", []))) != actions:
            problems.append(f"{where}: actions {sorted(as_list(s.get('Action', [])))}, expected {sorted(actions)}")
        names = []
        for r in as_list(s.get("Resource", [])):
            m = MSK_ARN_RE.fullmatch(str(r))
            if not m or m.group(3) != kind or (kind == "cluster") != (m.group(6) is None):
                problems.append(f"{where}: Resource {r!r} is not an MSK {kind} ARN")
                continue
            clusters.add(m.group(1, 2, 4, 5))
            names.append(m.group(6))
        if kind == "topic" and sorted(names) != sorted(topics):
            problems.append(f"{where}: topics {names}, the ConfigMap subscribes to {topics}")
        if kind == "group" and names != [group]:
            problems.append(f"{where}: group {names}, the ConfigMap's group_id is {group!r}")
    if len(clusters) > 1:
        problems.append(f"iam-policy-msk.json: resources of {len(clusters)} clusters; use one")
    actions = sorted(a for acts, _ in MSK_STATEMENTS.values() for a in acts)
    return f"MSK: {', '.join(actions)} on topics {topics} and group {group!r}"


# ---------------------------------------------------------------------------------- dockerfile


def cmd_dockerfile() -> None:
    text = DOCKERFILE.read_text()
    # Join continuation lines.
    lines = re.sub(r"\\\n", " ", text).splitlines()
    instr = [(l.split(None, 1)[0].upper(), l.split(None, 1)[1] if len(l.split(None, 1)) > 1 else "")
             for l in (x.strip() for x in lines) if l and not l.startswith("#")]
    args = {}
    for k, v in instr:
        if k == "ARG" and "=" in v:
            a, b = v.split("=", 1)
            args.setdefault(a.strip(), b.strip())
    stages = []
    for k, v in instr:
        if k == "FROM":
            image = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), v.split()[0])
            stages.append({"image": image, "instr": []})
        elif stages:
            stages[-1]["instr"].append((k, v))
    problems = []
    if len(stages) < 2:
        problems.append("not a multi-stage build")
    else:
        b, r = stages[0], stages[-1]
        if b["image"] != "rust:1.95-bookworm":
            problems.append(f"builder image is {b['image']}, expected rust:1.95-bookworm")
        if r["image"] != "debian:bookworm-slim":
            problems.append(f"runtime image is {r['image']}, expected debian:bookworm-slim")
        runs = [v for k, v in b["instr"] if k == "RUN"]
        build_idx = next((i for i, (k, v) in enumerate(b["instr"])
                          if k == "RUN" and "cargo build --release --locked" in v), None)
        if build_idx is None:
            problems.append("builder does not run `cargo build --release --locked`")
        elif "--no-default-features" not in b["instr"][build_idx][1]:
            problems.append("builder must build with --no-default-features (the image ships no test kit)")
        else:
            before = b["instr"][:build_idx]
            if not any(k == "ARG" and v.startswith("GIT_SHA") for k, v in before) or \
                    not any(k == "ENV" and re.match(r"GIT_SHA[= ]\$\{?GIT_SHA\}?", v) for k, v in before):
                problems.append("ARG GIT_SHA + ENV GIT_SHA=${GIT_SHA} must precede cargo build in the builder")
        del runs
        rt = dict()
        for k, v in r["instr"]:
            rt.setdefault(k, []).append(v)
        apt = " ".join(rt.get("RUN", []))
        for pkg in ("ca-certificates", "libssl3"):
            if pkg not in apt:
                problems.append(f"runtime does not install {pkg}")
        user = (rt.get("USER") or [""])[-1].split(":")[0]
        if user in ("", "0", "root"):
            problems.append("runtime runs as root (USER)")
        if "9464" not in " ".join(rt.get("EXPOSE", [])):
            problems.append("runtime does not EXPOSE 9464")
        ep = (rt.get("ENTRYPOINT") or [""])[-1]
        cmd = (rt.get("CMD") or [""])[-1]
        try:
            ep_j, cmd_j = json.loads(ep), json.loads(cmd)
        except json.JSONDecodeError:
            ep_j, cmd_j = None, None
            problems.append("ENTRYPOINT and CMD must use the JSON (exec) form")
        if ep_j is not None and ep_j != ["kafka-s3-sink"]:
            problems.append(f"ENTRYPOINT is {ep_j}")
        if cmd_j is not None and cmd_j != ["run", "--config", "/etc/kafka-s3-sink/config.toml"]:
            problems.append(f"CMD is {cmd_j}")
        if "HEALTHCHECK" in rt:
            problems.append("HEALTHCHECK is not wanted (Kubernetes probes do it)")
    # .dockerignore must keep what the build copies.
    pats = [p.strip() for p in DOCKERIGNORE.read_text().splitlines() if p.strip() and not p.startswith("#")]
    for needed in ("Cargo.toml", "Cargo.lock", "src/main.rs", "src/lib.rs"):
        excluded = False
        for p in pats:
            neg = p.startswith("!")
            pat = p[1:] if neg else p
            pat = pat.rstrip("/")
            if fnmatch.fnmatch(needed, pat) or needed.startswith(pat + "/"):
                excluded = not neg
        if excluded:
            problems.append(f".dockerignore excludes {needed}, which the build needs")
    for heavy in ("target", ".git"):
        if not any(p.rstrip("/") in (heavy, "/" + heavy) for p in pats):
            problems.append(f".dockerignore should exclude {heavy}/")
    fail_if(problems, "multi-stage rust:1.95-bookworm → debian:bookworm-slim, --locked, no test kit, GIT_SHA, non-root, "
                      "EXPOSE 9464, ENTRYPOINT/CMD, .dockerignore keeps Cargo.* and src/")


# ----------------------------------------------------------------------------------- operating


def cmd_operating() -> None:
    """docs/operations.md: the metrics table lists every metric,
    every alert is explained, and every `Runbook: FILE.md#anchor` of alerts.yml resolves."""
    doc = OPERATING
    text = doc.read_text()
    problems = []
    for name in catalogue():
        if f"`{name}`" not in text:
            problems.append(f"{doc.name}: metrics table lacks `{name}`")
    for g in yaml.safe_load(ALERTS.read_text())["groups"]:
        for r in g["rules"]:
            if r.get("alert") and r["alert"] not in text:
                problems.append(f"{doc.name}: alert {r['alert']} is not explained")

    def anchors(md: str) -> set[str]:
        out = set(re.findall(r'<a (?:name|id)="([^"]+)"', md))
        for h in re.findall(r"^#+\s+(.*)$", md, re.M):
            out.add(re.sub(r"[^a-z0-9 _-]", "", h.lower()).strip().replace(" ", "-"))
        return out

    links = set(re.findall(r"([\w./-]+\.md)#([a-z0-9_-]+)", ALERTS.read_text()))
    for f, a in sorted(links):
        target = ROOT / f
        if not target.exists():
            problems.append(f"alerts.yml links {f}, which does not exist")
        elif a not in anchors(target.read_text()):
            problems.append(f"alerts.yml links {f}#{a}, which has no such heading")
    fail_if(problems, f"{doc.relative_to(ROOT)}: metrics table covers the connector's catalogue, every alert explained, "
                      f"{len(links)} runbook links resolve")


def main() -> None:
    cmds = {
        "dashboard": cmd_dashboard,
        "dashboard-rules": cmd_dashboard_rules,
        "metric-names": cmd_metric_names,
        "alerts-coverage": cmd_alerts_coverage,
        "yaml": cmd_yaml,
        "compose": cmd_compose,
        "k8s": cmd_k8s,
        "kustomized": cmd_kustomized,
        "iam": cmd_iam,
        "dockerfile": cmd_dockerfile,
        "operating": cmd_operating,
    }
    if len(sys.argv) < 2 or sys.argv[1] not in cmds:
        raise SystemExit(f"usage: {sys.argv[0]} {{{'|'.join(cmds)}}} [args]")
    try:
        cmds[sys.argv[1]](*sys.argv[2:])
    except Failed as e:
        print(f"  {e}")
        sys.exit(1)


if __name__ == "__main__":
    main()
