#!/usr/bin/env bash
# End-to-end TLS to the brokers through `[kafka.security]`: mutual TLS with a password-protected
# client key, against a real Kafka-protocol broker. A tansu broker (plaintext) sits behind a
# TLS-terminating proxy (e2e_helpers.py tls-proxy: server certificate for 127.0.0.1, client
# certificate required) and advertises the proxy's port, so every Kafka connection the connector
# makes is TLS. Certificates come from `openssl` at run time: a CA, a server certificate, a client
# certificate whose key is encrypted with a password (given to the connector as ${file:...}),
# and a second, unrelated CA.
#
#   1. the right CA + client certificate: check-config accepts the config without printing the
#      key password; the connector drains every produced record into S3 (moto) and exits 0 on
#      SIGTERM;
#   2. the wrong CA: `verify` fails, the connector's log names the certificate failure, and
#      nothing reaches S3;
#   3. no client certificate: the proxy refuses the handshake and nothing reaches S3;
#   4. S3 over TLS with a private CA: a second proxy (no client certificate) serves moto over
#      HTTPS with the same server certificate; with `ca_file` the connector drains every record
#      through it, without it the TLS handshake fails and nothing reaches S3.
#
#   bash tests/e2e/tls.sh
#
# Env: KAFKA_S3_SINK_BIN (default target/debug/kafka-s3-sink, built if missing), TLS_EVENTS
# (2000), TLS_KEEP_DIR (copy the logs and configs there on exit). Installs what is missing (tests/e2e/lib/common.sh). Only loopback; every wait has a
# deadline; every process started is stopped by its PID.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HELPERS="$REPO/tests/e2e/e2e_helpers.py"
BIN=${KAFKA_S3_SINK_BIN:-$REPO/target/debug/kafka-s3-sink}
EVENTS=${TLS_EVENTS:-2000}
TOPIC=events
PARTITIONS=3
KEY_PASSWORD=kss-e2e-client-key-pass
TMP=$(mktemp -d "${TMPDIR:-/tmp}/kss-tls.XXXXXX")
log() { printf 'tls: %s\n' "$*" >&2; }
fail() {
  log "FAIL: $*"
  exit 1
}
# shellcheck source=tests/e2e/lib/common.sh
. "$REPO/tests/e2e/lib/common.sh"
trap 'e2e_exit "$TMP" "${TLS_KEEP_DIR:-}"' EXIT
h() { python3 "$HELPERS" "$@"; }

command -v openssl >/dev/null || {
  log "installing openssl (apt)"
  apt-get install -y -q openssl >/dev/null
}
install_e2e_tools
if [ ! -x "$BIN" ]; then
  log "building $BIN"
  (cd "$REPO" && cargo build --quiet)
fi

# ------------------------------------------------------------------ certificates
PKI=$TMP/pki
mkdir -p "$PKI"
ossl() { openssl "$@" >>"$TMP/openssl.out" 2>&1 || fail "openssl $1 failed: $(tail -3 "$TMP/openssl.out")"; }
# ca NAME: a self-signed CA NAME.pem / NAME.key
ca() { ossl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=kss-e2e-$1" -keyout "$PKI/$1.key" -out "$PKI/$1.pem"; }
# leaf NAME EXT [KEY_OPTS...]: NAME.pem signed by ca, with the extensions in EXT
leaf() {
  local name=$1 ext=$2
  shift 2
  ossl req -newkey rsa:2048 "$@" -subj "/CN=kss-e2e-$name" -keyout "$PKI/$name.key" -out "$PKI/$name.csr"
  printf '%s\n' "$ext" >"$PKI/$name.ext"
  ossl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.pem" -CAkey "$PKI/ca.key" -CAcreateserial \
    -days 2 -extfile "$PKI/$name.ext" -out "$PKI/$name.pem"
}
ca ca
ca other-ca
leaf server "subjectAltName=IP:127.0.0.1,DNS:localhost" -nodes
leaf client "extendedKeyUsage=clientAuth" -passout "pass:$KEY_PASSWORD"
printf '%s\n' "$KEY_PASSWORD" >"$PKI/key-password"
grep -q ENCRYPTED "$PKI/client.key" || fail "the client key is not encrypted"
log "certificates made (CA, server for 127.0.0.1, client with an encrypted key, another CA)"

# ------------------------------------------------------------------ servers
KAFKA_PORT=$(h port)
TLS_PORT=$(h port)
S3_PORT=$(h port)
S3_URL=http://127.0.0.1:$S3_PORT
start_tansu "$KAFKA_PORT" "$TMP/tansu.log" "$TLS_PORT"
python3 "$HELPERS" tls-proxy "$TLS_PORT" "$KAFKA_PORT" "$PKI/server.pem" "$PKI/server.key" "$PKI/ca.pem" 600 >"$TMP/tls-proxy.log" 2>&1 &
PROXY_PID=$!
started "$PROXY_PID"
start_moto "$S3_PORT" "$TMP/moto.log"
S3_TLS_PORT=$(h port)
python3 "$HELPERS" tls-proxy "$S3_TLS_PORT" "$S3_PORT" "$PKI/server.pem" "$PKI/server.key" - 600 >"$TMP/s3-tls-proxy.log" 2>&1 &
S3_PROXY_PID=$!
started "$S3_PROXY_PID"
tansu_topic "$KAFKA_PORT" "$TOPIC" "$PARTITIONS" "$TMP/topic.log"
h wait-tcp 127.0.0.1 "$TLS_PORT" 15 || { alive "$PROXY_PID" tls-proxy; fail "tls-proxy not listening"; }
wait_moto "$S3_PORT"

"$BIN" gen-events --count "$EVENTS" >"$TMP/events.ndjson"
E2E_KAFKA_CONFIG=$(printf '{"security.protocol": "SSL", "ssl.ca.location": "%s", "ssl.certificate.location": "%s", "ssl.key.location": "%s", "ssl.key.password": "%s"}' \
  "$PKI/ca.pem" "$PKI/client.pem" "$PKI/client.key" "$KEY_PASSWORD")
export E2E_KAFKA_CONFIG
h produce "127.0.0.1:$TLS_PORT" "$TOPIC" "$TMP/events.ndjson" "$PARTITIONS" "$TMP/produced.json" 0 "$EVENTS" >/dev/null
unset E2E_KAFKA_CONFIG
log "produced $EVENTS events over TLS"

# config NAME SECURITY [ENDPOINT [DESTINATION_KEYS]]: $TMP/NAME.toml, reading over TLS with the
# [kafka.security] table SECURITY into the bucket tls-NAME at ENDPOINT (default: moto over HTTP)
config() {
  h create-bucket "$S3_URL" "tls-$1"
  connector_config "$TMP/$1.toml" "127.0.0.1:$TLS_PORT" "tls-$1" "$TOPIC" "${3:-$S3_URL}" "tls-$1" \
    "[kafka.security]
$2" "${4:-}"
}

# ------------------------------------------------------------------ 1. mutual TLS works
config good "protocol = \"ssl\"
ca_file = \"$PKI/ca.pem\"
cert_file = \"$PKI/client.pem\"
key_file = \"$PKI/client.key\"
key_password = \"\${file:$PKI/key-password}\""
"$BIN" check-config --config "$TMP/good.toml" >"$TMP/check-config.out" 2>&1 ||
  fail "check-config: $(cat "$TMP/check-config.out")"
! grep -q "$KEY_PASSWORD" "$TMP/check-config.out" || fail "check-config printed the key password"
NO_COLOR=1 KAFKA_S3_SINK_LOG=debug "$BIN" run --config "$TMP/good.toml" >"$TMP/good.log" 2>&1 &
GOOD_PID=$!
started "$GOOD_PID"
wait_records "$S3_URL" tls-good "$EVENTS" "$GOOD_PID" connector
kill -TERM "$GOOD_PID"
rc=0
wait "$GOOD_PID" || rc=$?
forget "$GOOD_PID"
[ "$rc" -eq 0 ] || fail "the connector exited $rc after SIGTERM"
! grep -q "$KEY_PASSWORD" "$TMP/good.log" || fail "the debug log shows the key password"
handshakes=$(grep -c "handshake ok, client kss-e2e-client" "$TMP/tls-proxy.log" || true)
log "mutual TLS: $RECORDS of $EVENTS records in S3, $handshakes TLS handshakes with the client certificate, exit 0 on SIGTERM"

# ------------------------------------------------------------------ 2, 3. refused
config wrong-ca "ca_file = \"$PKI/other-ca.pem\"
cert_file = \"$PKI/client.pem\"
key_file = \"$PKI/client.key\"
key_password = \"\${file:$PKI/key-password}\""
if "$BIN" verify --config "$TMP/wrong-ca.toml" >"$TMP/verify-wrong-ca.out" 2>&1; then
  fail "verify succeeded with the wrong CA"
fi
expect_refused "$TMP/wrong-ca.toml" "$TMP/wrong-ca.log" "$S3_URL" tls-wrong-ca "certificate verify failed"
log "wrong CA: $REFUSED"
config no-client-cert "ca_file = \"$PKI/ca.pem\""
# Under TLS 1.3 the broker refuses the missing certificate after the client's handshake is
# done: librdkafka reads either the broker's alert or, when the reset comes first, the reset in
# its first request (APIVERSION_QUERY).
expect_refused "$TMP/no-client-cert.toml" "$TMP/no-client-cert.log" "$S3_URL" tls-no-client-cert \
  "SSL connection closed by peer|certificate required|handshake failure|reset by peer .*APIVERSION_QUERY"
log "no client certificate: $REFUSED"

# ------------------------------------------------------------------ 4. S3 over TLS, private CA
MTLS="ca_file = \"$PKI/ca.pem\"
cert_file = \"$PKI/client.pem\"
key_file = \"$PKI/client.key\"
key_password = \"\${file:$PKI/key-password}\""
S3_TLS_URL=https://127.0.0.1:$S3_TLS_PORT
config s3-tls "$MTLS" "$S3_TLS_URL" "ca_file = \"$PKI/ca.pem\""
NO_COLOR=1 "$BIN" run --config "$TMP/s3-tls.toml" >"$TMP/s3-tls.log" 2>&1 &
S3_TLS_PID=$!
started "$S3_TLS_PID"
wait_records "$S3_URL" tls-s3-tls "$EVENTS" "$S3_TLS_PID" "connector (S3 over TLS)"
stopped "$S3_TLS_PID"
s3_handshakes=$(grep -c "handshake ok" "$TMP/s3-tls-proxy.log" || true)
[ "$s3_handshakes" -ge 1 ] || fail "no TLS connection reached the S3 proxy"
log "S3 over TLS with ca_file: $RECORDS of $EVENTS records in S3 through $S3_TLS_URL ($s3_handshakes TLS connections)"
config s3-untrusted "$MTLS" "$S3_TLS_URL"
expect_refused "$TMP/s3-untrusted.toml" "$TMP/s3-untrusted.log" "$S3_URL" tls-s3-untrusted "UnknownIssuer|certificate"
log "S3 over TLS without ca_file: $REFUSED"
log "ok"
