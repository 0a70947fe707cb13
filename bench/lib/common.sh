# Shared by bench/run.sh and bench/ab.sh (sourced, after tests/e2e/lib/common.sh): the exit trap,
# the cached input, the s3s-fs server process and the config of a connector draining tansu.
# Expects REPO, OUT, log and fail; S3S_BIN (the binary serving `s3-server`) defaults to the
# release kafka-s3-sink-bench.

# Stops every process started (by PID) and removes the S3 servers' folders on any exit.
bench_cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  stop_all
  rm -rf "$OUT"/s3fs*/
  exit "$rc"
}
trap bench_cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# bench_input N DIR: generates N events into DIR/gen-events-N.ndjson once (the repository's
# generator, `kafka-s3-sink gen-events` (KAFKA_S3_SINK_BIN, default the release build), seed 42;
# builds the release binary if it is missing)
# and prints the path
bench_input() {
  local events="$2/gen-events-$1.ndjson" gen="${KAFKA_S3_SINK_BIN:-$REPO/target/release/kafka-s3-sink}"
  if [ ! -s "$events" ]; then
    [ -x "$gen" ] || (cd "$REPO" && cargo build --release --quiet --bin kafka-s3-sink)
    log "generating $1 events into $events"
    "$gen" gen-events --count "$1" --seed 42 --out "$events.tmp"
    mv "$events.tmp" "$events"
  fi
  printf '%s\n' "$events"
}

# start_s3s ROOT BUCKET: starts the s3s-fs server process; sets S3S_PID and S3S_URL
start_s3s() {
  rm -rf "$1" "$1.hello" # a stale .hello would pass the check below
  "${S3S_BIN:-$REPO/target/release/kafka-s3-sink-bench}" s3-server --root "$1" --bucket "$2" \
    >"$1.hello" 2>"$1.log" &
  S3S_PID=$!
  started "$S3S_PID"
  local i
  for i in $(seq 100); do [ -s "$1.hello" ] && break; sleep 0.1; done
  [ -s "$1.hello" ] || fail "s3-server did not start (see $1.log)"
  S3S_URL=$(head -1 "$1.hello" | python3 -c 'import json,sys;print(json.load(sys.stdin)["endpoint"])')
}

# drain_config FILE GROUP BUCKET [KAFKA_PROPERTY_LINES]: the connector's config for draining
# $TOPIC from the tansu broker on $KAFKA_PORT into the s3s-fs server at $S3S_URL, serving
# /metrics on $HTTP_PORT
drain_config() {
  cat >"$1" <<CONF
[kafka]
brokers = "127.0.0.1:$KAFKA_PORT"
group_id = "$2"
topics = ["$TOPIC"]
session_timeout_ms = 6000

[kafka.properties]
${4:-}

[pipeline]
drain_deadline_secs = 5
shutdown_deadline_secs = 120

[http]
listen = "127.0.0.1:$HTTP_PORT"

[[destinations]]
name = "bench"
bucket = "$3"
region = "us-east-1"
endpoint = "$S3S_URL"
force_path_style = true

[destinations.credentials]
access_key_id = "local-access-key"
secret_access_key = "local-secret-key"
CONF
}
