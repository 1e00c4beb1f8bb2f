#!/usr/bin/env bash
# A faster local S3-compatible server for benchmarks: s3rver (npm, Node, objects as files on
# disk), on 127.0.0.1 only. moto (scripts/s3-server.sh) stays the server of the tests: it
# checks SigV4 and IAM rights; s3rver checks only that the access key is its own (S3RVER)
# and never verifies a SigV4 signature.
#
#   eval "$(bash scripts/s3rver.sh start)"   # install if missing, start, create bucket, print exports
#   bash scripts/s3rver.sh stop              # stop it and remove its data directory
#   bash scripts/s3rver.sh status | exports
#
# Env: PBAK_S3_PORT (4568), PBAK_S3_BUCKET (pbak-test),
#      PBAK_S3RVER_DIR (/var/tmp/pbak-s3rver-data: on disk, as a real store would be, not tmpfs).
# Only the export lines go to stdout; progress and errors go to stderr.
set -euo pipefail

PORT="${PBAK_S3_PORT:-4568}"
BUCKET="${PBAK_S3_BUCKET:-pbak-test}"
DATA="${PBAK_S3RVER_DIR:-/var/tmp/pbak-s3rver-data}"
HOST=127.0.0.1
URL="http://$HOST:$PORT"
PREFIX=/opt/pbak-s3rver
VERSION=3.7.1
BIN="$PREFIX/node_modules/.bin/s3rver"
PIDFILE="/tmp/pbak-s3rver-$PORT.pid"
LOG="/tmp/pbak-s3rver-$PORT.log"

log() { echo "s3rver: $*" >&2; }

install() {
  [[ -x "$BIN" ]] && return 0
  command -v npm >/dev/null || { log "needs node and npm (apt-get install nodejs npm)"; return 1; }
  log "installing s3rver@$VERSION into $PREFIX (~5 s)"
  npm install -s --prefix "$PREFIX" "s3rver@$VERSION" >&2
}

running() { [[ -f "$PIDFILE" ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }
answers() { [[ "$(curl -s -o /dev/null -m 2 -w '%{http_code}' "$URL/" 2>/dev/null || true)" == 200 ]]; }

print_exports() {
  cat <<EOF
export AWS_ACCESS_KEY_ID=S3RVER
export AWS_SECRET_ACCESS_KEY=S3RVER
export AWS_REGION=us-east-1
export PBAK_TEST_S3_ENDPOINT=$URL
export PBAK_TEST_S3_BUCKET=$BUCKET
EOF
}

start() {
  command -v curl >/dev/null || { log "curl is required"; return 1; }
  if running && answers; then
    log "already running (pid $(cat "$PIDFILE")) on $HOST:$PORT"
    # The (maybe new) bucket: a HEAD, else a PUT creates it.
    curl -sf -o /dev/null -I "$URL/$BUCKET" || curl -sf -o /dev/null -X PUT "$URL/$BUCKET" ||
      { log "cannot create bucket $BUCKET"; return 1; }
  else
    if curl -s -o /dev/null -m 2 "$URL/"; then log "port $PORT is taken by another process"; return 1; fi
    install
    mkdir -p "$DATA"
    # --silent: no log line per request (the server's CPU shares the machine with pbak's).
    setsid nohup node "$BIN" -d "$DATA" -a "$HOST" -p "$PORT" --silent \
      --configure-bucket "$BUCKET" >"$LOG" 2>&1 </dev/null &
    echo $! >"$PIDFILE"
    local deadline=$((SECONDS + 20))
    until answers; do
      if ! running; then log "s3rver exited; log tail:"; tail -n 20 "$LOG" >&2; return 1; fi
      if ((SECONDS >= deadline)); then log "no answer on $HOST:$PORT within 20 s"; stop; return 1; fi
      sleep 0.2
    done
    log "s3rver $VERSION up on $HOST:$PORT (pid $(cat "$PIDFILE"), data $DATA, log $LOG)"
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
  rm -f "$PIDFILE"
  rm -rf "$DATA"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) if running && answers; then log "running on $HOST:$PORT"; else log "not running"; exit 1; fi ;;
  exports) print_exports ;;
  *) echo "usage: $0 start|stop|status|exports" >&2; exit 2 ;;
esac
