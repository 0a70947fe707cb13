# shellcheck shell=bash
# Shared by the Iceberg table scripts of tests/e2e/ (iceberg, s3tables, rest, glue): the
# destination's Parquet columns, a connector run until every offset is committed, and the
# readers they check the connector's tables with, each in a venv of its own under
# target/e2e/iceberg/ (installed when missing, PyPI only; one install serves every script):
#   - pyiceberg 0.12.0 with the extras pyiceberg-core, sql-sqlite, pyarrow (without
#     pyiceberg-core, partitioned reads fail), its resolved dependencies pinned, and boto3;
#   - DuckDB 1.5.5 with the PyPI packages duckdb-extension-{iceberg,avro,httpfs} 1.5.5, which
#     carry the extensions (loaded from their files: nothing is downloaded) and pin duckdb 1.5.5.
# python3 -m venv needs Debian's python3-venv where the interpreter is Debian's: installed with
# apt when missing. The sourcing script defines log(), fail() and h() (tests/e2e/e2e_helpers.py)
# and sets REPO (and, for table_drain, the variables it names).

ICEBERG_VENVS="$REPO/target/e2e/iceberg"
PYICEBERG_VERSION=0.12.0
DUCKDB_VERSION=1.5.5

# venv_with DIR CHECK PACKAGES...: a venv at DIR where the Python code CHECK exits 0, with
# PACKAGES installed by pip when it does not.
venv_with() {
  local dir=$1 check=$2
  shift 2
  if [ -x "$dir/bin/python" ] && "$dir/bin/python" -c "$check" 2>/dev/null; then return 0; fi
  log "installing $* in $dir"
  if ! python3 -m venv "$dir" 2>/dev/null; then
    command -v apt-get >/dev/null || fail "python3 -m venv failed and there is no apt-get"
    apt-get install -y -q python3-venv >/dev/null ||
      { apt-get update -q >/dev/null && apt-get install -y -q python3-venv >/dev/null; }
    python3 -m venv "$dir" || fail "python3 -m venv $dir failed"
  fi
  "$dir/bin/python" -m pip install -q "$@" || fail "pip install $* failed"
  "$dir/bin/python" -c "$check" || fail "$dir: $* installed but the check fails"
}

# install_pyiceberg: $ICEBERG_VENVS/pyiceberg
install_pyiceberg() {
  venv_with "$ICEBERG_VENVS/pyiceberg" \
    "import importlib.metadata as m, sys, pyiceberg.catalog.sql, pyiceberg.io.pyarrow, pyiceberg_core, boto3
sys.exit(m.version('pyiceberg') != '$PYICEBERG_VERSION')" \
    "pyiceberg[pyiceberg-core,sql-sqlite,pyarrow]==$PYICEBERG_VERSION" "pyiceberg-core==0.10.1" \
    "pyarrow==26.0.1" "SQLAlchemy==2.1.9" "boto3==1.43.11"
}

# install_duckdb: $ICEBERG_VENVS/duckdb
install_duckdb() {
  venv_with "$ICEBERG_VENVS/duckdb" \
    "import duckdb, sys, duckdb_extension_iceberg, duckdb_extension_avro, duckdb_extension_httpfs
sys.exit(duckdb.__version__ != '$DUCKDB_VERSION')" \
    "duckdb==$DUCKDB_VERSION" "duckdb-extension-iceberg==$DUCKDB_VERSION" \
    "duckdb-extension-avro==$DUCKDB_VERSION" "duckdb-extension-httpfs==$DUCKDB_VERSION"
}

# table_columns: the destination's Parquet columns, after its `[destinations.batch]` header
# (connector_config ends there): message_id <- messageId, event_type <- type, ts <- timestamp.
table_columns() {
  cat <<'COLUMNS'
format = "parquet"

[[destinations.parquet.columns]]
name = "message_id"
path = "messageId"
type = "string"
required = true

[[destinations.parquet.columns]]
name = "event_type"
path = "type"
type = "string"

[[destinations.parquet.columns]]
name = "ts"
path = "timestamp"
type = "timestamp"
required = true

COLUMNS
}

# table_drain LOG: runs the connector ($BIN with $CONFIG, with the environment AWS_ENV adds)
# until the group $GROUP's committed offsets of $TOPIC ($PARTITIONS partitions at $BROKER) equal
# the producer's end offsets in $TMP/state.json (120 s), then SIGTERM; it must exit 0 within
# 40 s, with no panic and no ERROR line in LOG
table_drain() {
  local logf=$1 pid rc deadline committed
  env "${AWS_ENV[@]}" NO_COLOR=1 "$BIN" run --config "$CONFIG" >>"$logf" 2>&1 &
  pid=$!
  started "$pid"
  deadline=$((SECONDS + 120))
  while :; do
    alive "$pid" connector
    committed=$(h committed "$BROKER" "$GROUP" "$TOPIC" "$PARTITIONS" 2>>"$TMP/harness.log") || committed='{}'
    h offsets-equal "$TMP/state.json" "$committed" && break
    [ "$SECONDS" -lt "$deadline" ] ||
      fail "committed offsets $committed after 120 s, end offsets $(cat "$TMP/state.json")"
    sleep 1
  done
  log "every offset committed: $committed (t+$((SECONDS - START))s)"
  kill -TERM "$pid"
  deadline=$((SECONDS + 40))
  while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.2; done
  kill -0 "$pid" 2>/dev/null && fail "the connector still runs 40 s after SIGTERM"
  rc=0
  wait "$pid" || rc=$?
  forget "$pid"
  [ "$rc" -eq 0 ] || fail "the connector exited $rc after SIGTERM"
  ! grep -q 'panicked' "$logf" || fail "the connector panicked: $(grep -m1 panicked "$logf")"
  ! grep -q ' ERROR ' "$logf" || fail "the connector logged an error: $(grep -m1 ' ERROR ' "$logf" | cut -c1-400)"
}
