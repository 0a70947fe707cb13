#!/usr/bin/env bash
# End-to-end AWS MSK IAM authentication (`[kafka.security] sasl_mechanism = "AWS_MSK_IAM"`)
# against a real Kafka-protocol broker. A tansu broker sits behind tests/e2e/msk_iam_front.py,
# which authenticates every connection as MSK does: SASL/OAUTHBEARER whose bearer token must be
# an MSK IAM token (SigV4-presigned kafka-cluster:Connect URL) for the region and the known AWS
# credentials, checked against the published signer (aws-msk-iam-sasl-signer-python) run on the
# token's own signing time; accepted connections are relayed to tansu, which advertises the
# front's port. The producer authenticates with the published Python signer itself.
#
#   1. the right credentials (environment, as the AWS default chain reads them, with a session
#      token): check-config warns about SASL without TLS (this test has no TLS) and prints no
#      credential; the connector drains every produced record into S3 (moto) and exits 0 on
#      SIGTERM; the front accepted its tokens; no credential in the debug log; `verify` reads
#      Kafka through the front with tokens of its own and finds the bucket complete;
#   1b. credentials from a credential_process that expire after 40 s: the token lives no longer
#      than they do, and librdkafka asks for the next one before it expires;
#   2. a wrong secret key: the front rejects the signature, the connector logs the broker's
#      reason and writes nothing;
#   3. no AWS credentials at all: the connector logs that the token has no credentials and
#      writes nothing.
#
#   bash tests/e2e/msk_iam.sh
#
# Env: KAFKA_S3_SINK_BIN (default target/debug/kafka-s3-sink, built if missing), MSK_EVENTS
# (2000), MSK_KEEP_DIR (copy the logs and configs there on exit). Installs what is missing
# (tests/e2e/lib/common.sh, and aws-msk-iam-sasl-signer-python 1.0.2). Only loopback; every wait
# has a deadline; every process started is stopped by its PID.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HELPERS="$REPO/tests/e2e/e2e_helpers.py"
BIN=${KAFKA_S3_SINK_BIN:-$REPO/target/debug/kafka-s3-sink}
EVENTS=${MSK_EVENTS:-2000}
TOPIC=events
PARTITIONS=3
REGION=us-west-2
ACCESS_KEY=AKIAKSSE2EEXAMPLE01
SECRET_KEY=kss-e2e-msk-secret-not-for-logs
SESSION_TOKEN=kss-e2e-msk-session-not-for-logs
TMP=$(mktemp -d "${TMPDIR:-/tmp}/kss-msk.XXXXXX")
log() { printf 'msk-iam: %s\n' "$*" >&2; }
fail() {
  log "FAIL: $*"
  exit 1
}
# shellcheck source=tests/e2e/lib/common.sh
. "$REPO/tests/e2e/lib/common.sh"
trap 'e2e_exit "$TMP" "${MSK_KEEP_DIR:-}"' EXIT
h() { python3 "$HELPERS" "$@"; }

install_e2e_tools
python3 -c 'import importlib.metadata as m, sys; sys.exit(m.version("aws-msk-iam-sasl-signer-python") != "1.0.2")' 2>/dev/null ||
  { log "installing aws-msk-iam-sasl-signer-python==1.0.2"; python3 -m pip install -q "aws-msk-iam-sasl-signer-python==1.0.2"; }
if [ ! -x "$BIN" ]; then
  log "building $BIN"
  (cd "$REPO" && cargo build --quiet)
fi

# ------------------------------------------------------------------ servers
KAFKA_PORT=$(h port)
FRONT_PORT=$(h port)
S3_PORT=$(h port)
S3_URL=http://127.0.0.1:$S3_PORT
start_tansu "$KAFKA_PORT" "$TMP/tansu.log" "$FRONT_PORT"
start_moto "$S3_PORT" "$TMP/moto.log"
tansu_topic "$KAFKA_PORT" "$TOPIC" "$PARTITIONS" "$TMP/topic.log"
python3 "$REPO/tests/e2e/msk_iam_front.py" "$FRONT_PORT" "$KAFKA_PORT" "$REGION" "$ACCESS_KEY" \
  "$SECRET_KEY" "$SESSION_TOKEN" 600 >"$TMP/front.log" 2>&1 &
FRONT_PID=$!
started "$FRONT_PID"
h wait-tcp 127.0.0.1 "$FRONT_PORT" 15 || { alive "$FRONT_PID" msk-iam-front; fail "the front is not listening"; }
wait_moto "$S3_PORT"

# The AWS default chain of every process below reads these, and nothing else.
export AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null AWS_EC2_METADATA_DISABLED=true
unset AWS_PROFILE AWS_ROLE_ARN AWS_WEB_IDENTITY_TOKEN_FILE AWS_CONTAINER_CREDENTIALS_FULL_URI AWS_CONTAINER_CREDENTIALS_RELATIVE_URI
# creds SECRET: the env(1) assignments of the test's credentials with SECRET as the secret key
creds() { printf '%s\n' "AWS_ACCESS_KEY_ID=$ACCESS_KEY" "AWS_SECRET_ACCESS_KEY=$1" "AWS_SESSION_TOKEN=$SESSION_TOKEN"; }
mapfile -t GOOD_CREDS < <(creds "$SECRET_KEY")
mapfile -t WRONG_CREDS < <(creds "wrong-$SECRET_KEY")

"$BIN" gen-events --count "$EVENTS" >"$TMP/events.ndjson"
env "${GOOD_CREDS[@]}" E2E_MSK_IAM_REGION=$REGION \
  python3 "$HELPERS" produce "127.0.0.1:$FRONT_PORT" "$TOPIC" "$TMP/events.ndjson" "$PARTITIONS" "$TMP/produced.json" 0 "$EVENTS" >/dev/null
grep -q "accepted" "$TMP/front.log" || fail "the producer's tokens were not accepted: $(tail -3 "$TMP/front.log")"
log "produced $EVENTS events through the front with the published signer's tokens"

# config NAME: $TMP/NAME.toml, authenticating with AWS_MSK_IAM, writing to the bucket msk-NAME
config() {
  h create-bucket "$S3_URL" "msk-$1"
  connector_config "$TMP/$1.toml" "127.0.0.1:$FRONT_PORT" "msk-$1" "$TOPIC" "$S3_URL" "msk-$1" "[kafka.security]
protocol = \"sasl_plaintext\"
sasl_mechanism = \"AWS_MSK_IAM\"
aws_region = \"$REGION\""
}
clean() { ! grep -qE "$SECRET_KEY|$SESSION_TOKEN" "$1" || fail "$2 shows an AWS credential"; }

# ------------------------------------------------------------------ 1. the right credentials
config good
env "${GOOD_CREDS[@]}" "$BIN" check-config --config "$TMP/good.toml" >"$TMP/check-config.log" 2>&1 ||
  fail "check-config: $(cat "$TMP/check-config.log")"
grep -q "warning: kafka.security.protocol" "$TMP/check-config.log" || fail "no warning about SASL without TLS"
grep -q 'sasl_mechanism = "AWS_MSK_IAM"' "$TMP/check-config.log" || fail "check-config does not show the mechanism"
clean "$TMP/check-config.log" check-config
accepted_before=$(grep -c "accepted" "$TMP/front.log" || true)
env "${GOOD_CREDS[@]}" NO_COLOR=1 KAFKA_S3_SINK_LOG=debug "$BIN" run --config "$TMP/good.toml" >"$TMP/good.log" 2>&1 &
GOOD_PID=$!
started "$GOOD_PID"
wait_records "$S3_URL" msk-good "$EVENTS" "$GOOD_PID" connector
kill -TERM "$GOOD_PID"
rc=0
wait "$GOOD_PID" || rc=$?
forget "$GOOD_PID"
[ "$rc" -eq 0 ] || fail "the connector exited $rc after SIGTERM"
clean "$TMP/good.log" "the debug log"
grep -q "MSK IAM token built" "$TMP/good.log" || fail "the connector built no MSK IAM token"
accepted=$(($(grep -c "accepted" "$TMP/front.log" || true) - accepted_before))
[ "$accepted" -ge 1 ] || fail "the front accepted no token from the connector"
rejected=$(grep -c "rejected" "$TMP/front.log" || true)
[ "$rejected" -eq 0 ] || fail "the front rejected a token: $(grep rejected "$TMP/front.log" | head -3)"
env "${GOOD_CREDS[@]}" NO_COLOR=1 "$BIN" verify --config "$TMP/good.toml" >"$TMP/verify.log" 2>&1 ||
  fail "verify (reading Kafka with MSK IAM tokens) found the bucket incomplete or failed: $(tail -5 "$TMP/verify.log")"
clean "$TMP/verify.log" "verify's output"
log "right credentials: $RECORDS of $EVENTS records in S3, $accepted connections authenticated with the connector's tokens, exit 0 on SIGTERM; verify (its own consumer, its own tokens) finds the bucket complete"

# ------------------------------------------------------------------ 1b. refresh
# Credentials from a profile's credential_process that expire 40 s after they are issued: each
# token lives only as long as its credentials, so librdkafka asks for a new one at 80 % of that.
printf '%s\n' "import datetime, json" \
  "exp = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=40)" \
  "print(json.dumps({'Version': 1, 'AccessKeyId': '$ACCESS_KEY', 'SecretAccessKey': '$SECRET_KEY'," \
  "                  'SessionToken': '$SESSION_TOKEN', 'Expiration': exp.strftime('%Y-%m-%dT%H:%M:%SZ')}))" \
  >"$TMP/creds.py"
printf '[default]\ncredential_process = python3 %s\n' "$TMP/creds.py" >"$TMP/aws-config"
config refresh
env AWS_CONFIG_FILE="$TMP/aws-config" NO_COLOR=1 "$BIN" run --config "$TMP/refresh.toml" >"$TMP/refresh.log" 2>&1 &
REFRESH_PID=$!
started "$REFRESH_PID"
wait_records "$S3_URL" msk-refresh "$EVENTS" "$REFRESH_PID" "connector (refresh)"
deadline=$((SECONDS + 60))
while [ "$(grep -c "MSK IAM token built" "$TMP/refresh.log" || true)" -lt 2 ]; do
  alive "$REFRESH_PID" "connector (refresh)"
  [ "$SECONDS" -lt "$deadline" ] || fail "no second token within 60 s of credentials that expire after 40 s"
  sleep 1
done
stopped "$REFRESH_PID"
mapfile -t built < <(grep "MSK IAM token built" "$TMP/refresh.log" | head -n2)
first_at=$(date -d "${built[0]:0:26}" +%s%3N)
first_exp=$(grep -o "expires_ms=[0-9]*" <<<"${built[0]}" | cut -d= -f2)
second_at=$(date -d "${built[1]:0:26}" +%s%3N)
second_exp=$(grep -o "expires_ms=[0-9]*" <<<"${built[1]}" | cut -d= -f2)
lifetime=$(((first_exp - first_at) / 1000))
[ "$lifetime" -le 41 ] || fail "the first token lives ${lifetime} s, longer than its credentials (40 s)"
[ "$second_at" -lt "$first_exp" ] || fail "the second token was asked for after the first expired"
[ "$second_exp" -gt "$first_exp" ] || fail "the second token does not outlive the first"
clean "$TMP/refresh.log" "the refresh run's log"
log "refresh: credentials that expire after 40 s give a token of ${lifetime} s; the next one came $(((second_at - first_at) / 1000)) s later, before it expired"

# ------------------------------------------------------------------ 2, 3. refused
# (an authentication failure is fatal to the consumer: it exits 1, and the pod restarts, with
# the reason in its log)
config wrong-secret
expect_refused "$TMP/wrong-secret.toml" "$TMP/wrong-secret.log" "$S3_URL" msk-wrong-secret \
  "MSK IAM token rejected: signature does not match" "${WRONG_CREDS[@]}"
clean "$TMP/wrong-secret.log" "the wrong secret's log"
grep -q "rejected: signature does not match" "$TMP/front.log" || fail "the front did not reject the wrong signature"
log "wrong secret key: $REFUSED"
config no-credentials
expect_refused "$TMP/no-credentials.toml" "$TMP/no-credentials.log" "$S3_URL" msk-no-credentials \
  "AWS credentials for MSK IAM"
log "no credentials: $REFUSED"
log "ok"
