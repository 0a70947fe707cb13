# shellcheck shell=bash
# The Iceberg readers the table scripts of tests/e2e/ check the connector's tables with, each in
# a venv of its own under target/e2e/iceberg/ (installed when missing, PyPI only; one install
# serves every script):
#   - pyiceberg 0.12.0 with the extras pyiceberg-core, sql-sqlite, pyarrow (without
#     pyiceberg-core, partitioned reads fail), its resolved dependencies pinned, and boto3;
#   - DuckDB 1.5.5 with the PyPI packages duckdb-extension-{iceberg,avro,httpfs} 1.5.5, which
#     carry the extensions (loaded from their files: nothing is downloaded) and pin duckdb 1.5.5.
# python3 -m venv needs Debian's python3-venv where the interpreter is Debian's: installed with
# apt when missing. The sourcing script defines log() and fail() and sets REPO.

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
