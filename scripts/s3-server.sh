#!/usr/bin/env bash
# Local S3-compatible server (moto, from PyPI) for pbak's S3 tests, on 127.0.0.1 only.
#
#   eval "$(bash s3-server.sh start)"   # install if missing, start, create bucket, print exports
#   bash s3-server.sh stop              # stop it (state is in memory: a restart is empty)
#   bash s3-server.sh status | exports
#
# Env: PBAK_S3_PORT (9000), PBAK_S3_BUCKET (pbak-test), PBAK_PYTHON (python3),
#      PBAK_S3_AUTH (1): 1 = moto verifies SigV4 against an IAM user it creates at start
#      (wrong keys -> 403); 0 = moto accepts any credentials (keys "testing"/"testing").
# Only the export lines go to stdout; progress and errors go to stderr.
set -euo pipefail

PORT="${PBAK_S3_PORT:-9000}"
BUCKET="${PBAK_S3_BUCKET:-pbak-test}"
AUTH="${PBAK_S3_AUTH:-1}"
PY="${PBAK_PYTHON:-python3}"
HOST=127.0.0.1
URL="http://$HOST:$PORT"
RUN_DIR="/tmp/pbak-s3-$PORT"
PIDFILE="$RUN_DIR/server.pid"
CREDS="$RUN_DIR/creds"          # "ACCESS_KEY SECRET_KEY"
CREDS_RO="$RUN_DIR/creds-ro"    # a read-only key (auth on only), for the permission-error test
CREDS_ND="$RUN_DIR/creds-nd"    # a key that may read, list and write but not delete (a backup host's)
LOG="/tmp/pbak-s3-server-$PORT.log"

VENV=/opt/pbak-moto
MOTO_VERSION=5.2.5

log() { echo "s3-server: $*" >&2; }

install_moto() {
  if [[ -x "$VENV/bin/moto_server" ]] && "$VENV/bin/python" -c 'import boto3, moto' 2>/dev/null; then
    return 0
  fi
  log "installing moto[s3]==$MOTO_VERSION into $VENV (~20 s)"
  rm -rf "$VENV"
  "$PY" -m venv "$VENV"
  # moto[s3] + flask + flask-cors is all moto_server needs for S3 (and IAM);
  # moto[server] pulls every service's deps and takes ~2x as long.
  "$VENV/bin/pip" install -q --disable-pip-version-check \
    "moto[s3]==$MOTO_VERSION" flask flask-cors boto3 >&2
}

running() { [[ -f "$PIDFILE" ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }

answers() {
  # /moto-api/ is moto's own endpoint: not an AWS action, so it does not count against auth.
  local code
  code="$(curl -s -o /dev/null -m 2 -w '%{http_code}' "$URL/moto-api/" 2>/dev/null || true)"
  [[ "$code" == 200 ]]
}

print_exports() {
  local ak sk
  read -r ak sk <"$CREDS"
  cat <<EOF
export AWS_ACCESS_KEY_ID=$ak
export AWS_SECRET_ACCESS_KEY=$sk
export AWS_REGION=us-east-1
export PBAK_TEST_S3_ENDPOINT=$URL
export PBAK_TEST_S3_BUCKET=$BUCKET
EOF
  if [[ -s "$CREDS_RO" ]]; then
    read -r ak sk <"$CREDS_RO"
    echo "export PBAK_TEST_S3_RO_ACCESS_KEY_ID=$ak"
    echo "export PBAK_TEST_S3_RO_SECRET_ACCESS_KEY=$sk"
  fi
  if [[ -s "$CREDS_ND" ]]; then
    read -r ak sk <"$CREDS_ND"
    echo "export PBAK_TEST_S3_ND_ACCESS_KEY_ID=$ak"
    echo "export PBAK_TEST_S3_ND_SECRET_ACCESS_KEY=$sk"
  fi
}

# Fresh server: (auth on) create IAM user + key with s3:* while auth is still off,
# create the bucket, then switch SigV4 checking on for every later request.
setup_fresh() {
  "$VENV/bin/python" - "$URL" "$BUCKET" "$AUTH" "$CREDS" "$CREDS_RO" "$CREDS_ND" <<'PY' >&2
import json, sys, boto3
url, bucket, auth, creds, creds_ro, creds_nd = sys.argv[1], sys.argv[2], sys.argv[3] == "1", sys.argv[4], sys.argv[5], sys.argv[6]
kw = dict(endpoint_url=url, region_name="us-east-1",
          aws_access_key_id="testing", aws_secret_access_key="testing")
ak, sk = "testing", "testing"
if auth:
    iam = boto3.client("iam", **kw)
    iam.create_user(UserName="pbak")
    iam.put_user_policy(UserName="pbak", PolicyName="s3-all", PolicyDocument=json.dumps(
        {"Version": "2012-10-17",
         "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
    k = iam.create_access_key(UserName="pbak")["AccessKey"]
    ak, sk = k["AccessKeyId"], k["SecretAccessKey"]
    # A key that may read and list but not write or delete, as a B2 read-only application key.
    iam.create_user(UserName="pbak-ro")
    iam.put_user_policy(UserName="pbak-ro", PolicyName="s3-read", PolicyDocument=json.dumps(
        {"Version": "2012-10-17",
         "Statement": [{"Effect": "Allow", "Action": ["s3:GetObject", "s3:ListBucket",
                                                      "s3:GetBucketLocation"], "Resource": "*"}]}))
    r = iam.create_access_key(UserName="pbak-ro")["AccessKey"]
    with open(creds_ro, "w") as f:
        f.write(f"{r['AccessKeyId']} {r['SecretAccessKey']}\n")
    # A backup host's key: read, list and write, no delete (B2: no deleteFiles).
    iam.create_user(UserName="pbak-nodelete")
    iam.put_user_policy(UserName="pbak-nodelete", PolicyName="s3-no-delete", PolicyDocument=json.dumps(
        {"Version": "2012-10-17",
         "Statement": [{"Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject", "s3:ListBucket",
                                                      "s3:GetBucketLocation"], "Resource": "*"}]}))
    r = iam.create_access_key(UserName="pbak-nodelete")["AccessKey"]
    with open(creds_nd, "w") as f:
        f.write(f"{r['AccessKeyId']} {r['SecretAccessKey']}\n")
boto3.client("s3", **kw).create_bucket(Bucket=bucket)
with open(creds, "w") as f:
    f.write(f"{ak} {sk}\n")
PY
  if [[ "$AUTH" == 1 ]]; then
    curl -sf -o /dev/null -X POST -H 'Content-Type: text/plain' --data 0 "$URL/moto-api/reset-auth"
  fi
}

# Already running: make sure the (maybe new) bucket exists, with the stored keys.
ensure_bucket() {
  local ak sk
  read -r ak sk <"$CREDS"
  AWS_ACCESS_KEY_ID="$ak" AWS_SECRET_ACCESS_KEY="$sk" \
  "$VENV/bin/python" - "$URL" "$BUCKET" <<'PY' >&2
import sys, boto3
s3 = boto3.client("s3", endpoint_url=sys.argv[1], region_name="us-east-1")
try:
    s3.head_bucket(Bucket=sys.argv[2])
except Exception:
    s3.create_bucket(Bucket=sys.argv[2])
PY
}

start() {
  command -v curl >/dev/null || { log "curl is required"; return 1; }
  mkdir -p "$RUN_DIR"
  if running && answers && [[ -s "$CREDS" ]]; then
    log "already running (pid $(cat "$PIDFILE")) on $HOST:$PORT"
    ensure_bucket
  else
    if running; then stop; fi
    if curl -s -o /dev/null -m 2 "$URL/"; then log "port $PORT is taken by another process"; return 1; fi
    install_moto
    rm -f "$CREDS" "$CREDS_RO" "$CREDS_ND"
    setsid nohup "$VENV/bin/moto_server" -H "$HOST" -p "$PORT" >"$LOG" 2>&1 </dev/null &
    echo $! >"$PIDFILE"
    local deadline=$((SECONDS + 30))
    until answers; do
      if ! running; then log "moto_server exited; log tail:"; tail -n 20 "$LOG" >&2; return 1; fi
      if ((SECONDS >= deadline)); then log "no answer on $HOST:$PORT within 30 s"; tail -n 20 "$LOG" >&2; stop; return 1; fi
      sleep 0.2
    done
    setup_fresh || { log "setup failed; log tail:"; tail -n 20 "$LOG" >&2; stop; return 1; }
    log "moto up on $HOST:$PORT (pid $(cat "$PIDFILE"), auth=$AUTH, log $LOG)"
  fi
  print_exports
}

stop() {
  if [[ -f "$PIDFILE" ]]; then
    local pid
    pid="$(cat "$PIDFILE")"
    if kill -0 "$pid" 2>/dev/null; then
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
    fi
    log "stopped pid $pid"
  fi
  rm -f "$PIDFILE" "$CREDS" "$CREDS_RO" "$CREDS_ND"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) if running && answers; then log "running on $HOST:$PORT"; else log "not running"; exit 1; fi ;;
  exports) print_exports ;;
  *) echo "usage: $0 start|stop|status|exports" >&2; exit 2 ;;
esac
