# shellcheck shell=bash
# Shared by scripts/attack-*.sh (sourced, not run): the pbak binary under attack, a private
# work directory, and PASS/FAIL bookkeeping. See scripts/attack-all.sh for what the scripts do.
#
# Environment every attack script reads:
#   PBAK=/path/to/pbak   the binary to attack (default: target/debug/pbak of this repository,
#                        built with `cargo build` if missing)
#   KEEP=1               keep the work directory (printed) instead of deleting it on exit
#   VERBOSE=1            one line per run (restore-race, source-swap) with its exit status

ATTACK_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ATTACK_USER=1000 # the hostile local user (a numeric uid; it need not exist in /etc/passwd)
ATTACK_FAILED=0

# attack_setup NAME: refuse to run without root, find or build the binary, make $WORK.
attack_setup() {
  ATTACK_NAME=$1
  if [ "$(id -u)" != 0 ]; then
    echo "$ATTACK_NAME: must run as root: it restores and backs up as root next to a hostile" \
      "uid $ATTACK_USER process, with root-only files as the prize (try: sudo $0)" >&2
    exit 2
  fi
  for tool in setpriv timeout jq script sha256sum perl setfattr getfattr; do
    command -v "$tool" >/dev/null || { echo "$ATTACK_NAME: needs $tool" >&2; exit 2; }
  done
  if [ -z "${PBAK:-}" ]; then
    PBAK=$ATTACK_REPO/target/debug/pbak
    if [ ! -x "$PBAK" ]; then
      echo "$ATTACK_NAME: $PBAK missing, building it" >&2
      (cd "$ATTACK_REPO" && cargo build --quiet)
    fi
  fi
  [ -x "$PBAK" ] || { echo "$ATTACK_NAME: PBAK=$PBAK is not an executable" >&2; exit 2; }
  PBAK=$(realpath "$PBAK")
  # Short (deep trees are bounded by PATH_MAX), under /var/tmp (may be larger than /tmp), and
  # 0755 so that the uid-1000 attacker can reach the directories it is given.
  WORK=$(mktemp -d "/var/tmp/pbak-$ATTACK_NAME.XXXXXX")
  chmod 755 "$WORK"
  trap attack_cleanup EXIT
  trap 'exit 130' INT TERM
  export PBAK_PASSWORD="attack password" # fixed, to open a kept (KEEP=1) repository
  export PBAK_CACHE_DIR=$WORK/cache
  unset PBAK_PASSWORD_FILE PBAK_PASSWORD_COMMAND PBAK_REPOSITORY PBAK_ENV_FILE
  echo "$ATTACK_NAME: attacking $PBAK ($("$PBAK" --version 2>&1 | head -1)), work in $WORK"
}

attack_cleanup() {
  local pid
  # Only the processes this script started (attackers, swappers, what password commands left
  # behind), by the ids recorded in $WORK/pids.
  if [ -s "${WORK:-/nonexistent}/pids" ]; then
    while read -r pid; do kill "$pid" 2>/dev/null || true; done <"$WORK/pids"
  fi
  wait 2>/dev/null || true
  if [ -n "${WORK:-}" ] && [ -d "$WORK" ]; then
    if [ "${KEEP:-}" = 1 ]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
  fi
}

# pbak ARGS…: the binary under attack.
pbak() { "$PBAK" "$@"; }

# init_repo DIR [ARGS…]: a new repository with cheap key derivation.
init_repo() {
  local dir=$1
  shift
  pbak -r "$dir" init --kdf-memory-mib 1 --kdf-iterations 1 "$@" >/dev/null
}

# fail MESSAGE: inside an attack (a subshell): say why and end it as failed.
fail() {
  echo "    FAILED: $*" >&2
  exit 1
}

# note MESSAGE: a detail of the attack in progress.
note() { echo "    $*"; }

# run_attack NAME FUNCTION [ARGS…]: run one attack in a subshell with `set -e` in force (an
# unexpected error fails it, not the script), print its PASS/FAIL line with the time taken.
run_attack() {
  local name=$1 rc start took
  shift
  start=${EPOCHREALTIME/./}
  echo "--- $name"
  set +e
  (
    set -e
    "$@"
  )
  rc=$?
  set -e
  took=$(((${EPOCHREALTIME/./} - start) / 100000))
  took=$((took / 10)).$((took % 10))
  if [ "$rc" = 0 ]; then
    printf 'PASS  %-44s %6ss\n' "$name" "$took"
  else
    printf 'FAIL  %-44s %6ss\n' "$name" "$took"
    ATTACK_FAILED=1
  fi
}

# attack_finish: the script's exit status (1 when any attack failed).
attack_finish() {
  if [ "$ATTACK_FAILED" = 0 ]; then
    echo "$ATTACK_NAME: all attacks PASS"
  else
    echo "$ATTACK_NAME: some attacks FAIL (KEEP=1 keeps the work directory)"
  fi
  return "$ATTACK_FAILED"
}

# as_user CMD…: run CMD as the hostile uid, without root's groups.
as_user() {
  setpriv --reuid="$ATTACK_USER" --regid="$ATTACK_USER" --clear-groups "$@"
}

# outside_fingerprint PATH…: kind, mode, owner, group, size, mtime and ctime of every name at
# or below each PATH (not following symlinks), the sha256 of every regular file and every
# extended attribute. A restore that writes, chmods, chowns, sets an attribute on or adds
# anything there changes it.
outside_fingerprint() {
  find "$@" -exec stat -c '%n %F %a %u %g %s %Y %Z' {} + | sort
  find "$@" -type f -exec sha256sum {} + | sort
  getfattr -R -d -h -m - --absolute-names "$@" 2>/dev/null || true
}

# crashed RC: whether an exit status is a crash (abort, segfault, Rust panic) or a timeout.
crashed() {
  case $1 in 101 | 124 | 134 | 137 | 139) return 0 ;; *) return 1 ;; esac
}
