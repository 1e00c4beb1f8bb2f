#!/usr/bin/env bash
# Replays issue 11's attacks on key files, repository files, secrets and the terminal (CI has
# them in tests/keys_files.rs, tests/misc_repo_files.rs and tests/misc_smaller.rs):
#   1. A planted key file with huge Argon2id parameters (4 GiB and 64 passes, a million
#      passes, 1,000 lanes), beside the real key and as the only key: refused within 5 s
#      with a message about its parameters (beside the real key, the repository still opens).
#   2. Empty, truncated, cut-short and non-JSON key files: reported as `malformed key file
#      keys/<id>`, never as a wrong password; with a second key, that one still opens.
#   3. A repository created and used (init, backup, key add, forget, prune) under `umask 000`:
#      every file 0600, every directory 0700; the cache's directories 0700.
#   4. Password and env files readable by others are refused; `key add` refuses an empty
#      password.
#   5. PBAK_PASSWORD_COMMAND does not see PBAK_PASSWORD, AWS_SECRET_ACCESS_KEY or
#      B2_ACCOUNT_KEY; a command that never finishes, and one that leaves a process holding
#      its output, are stopped after pbak's 60 s timeout (these two take a minute, in
#      parallel).
#   6. `forget --keep-within 99999999999999d` (and an absurd number of hours) is an error,
#      not a panic or an overflow.
#   7. `ls` on a terminal (`script -qc` gives it one) escapes control characters in names
#      (ESC, BEL, DEL, a C1 control, a newline) as `ls -b` does, and no raw control byte (nor
#      a lone 0x9b byte) reaches the terminal; piped and --json output is exact (for UTF-8).
# NOTE lines report what is safe but short of the promise (not failures).
#
# Run as root:  scripts/attack-keys.sh
#   PBAK=/path/to/pbak   attack another build (default: this repository's target/debug/pbak)
set -euo pipefail
# shellcheck source=scripts/attack-lib.sh
. "$(dirname "$0")/attack-lib.sh"
attack_setup keys

# run_timed LIMIT CMD…: run CMD under `timeout 120`, output in $WORK/out, status in $rc,
# seconds taken in $took; fails the attack when CMD crashed or took LIMIT seconds or more.
run_timed() {
  local limit=$1 t0
  shift
  t0=${EPOCHREALTIME/./}
  rc=0
  timeout 120 "$@" >"$WORK/out" 2>&1 || rc=$?
  took=$(((${EPOCHREALTIME/./} - t0) / 1000))
  ! crashed "$rc" || { tail -n 3 "$WORK/out" >&2; fail "$* crashed or hung (exit $rc)"; }
  [ "$took" -lt $((limit * 1000)) ] || fail "$* took $took ms (limit $limit s)"
}

# expect TEXT…: $WORK/out holds each TEXT (fixed strings).
expect() {
  local t
  for t in "$@"; do
    grep -qF -- "$t" "$WORK/out" || { sed 's/^/      | /' "$WORK/out" >&2; fail "no \"$t\" in the output"; }
  done
}

# refuse TEXT: $WORK/out does not hold TEXT.
refuse() {
  ! grep -qF -- "$1" "$WORK/out" || { sed 's/^/      | /' "$WORK/out" >&2; fail "\"$1\" in the output"; }
}

hostile_parameters() {
  local repo=$WORK/repo-kdf key planted params name
  init_repo "$repo"
  key=$(ls "$repo/keys")
  cp "$repo/keys/$key" "$WORK/good-key"
  planted=$(printf '0%.0s' $(seq 64))
  for params in '.m_cost_kib = 4194304 | .t_cost = 64' '.t_cost = 1000000' '.p_cost = 1000' \
    '.m_cost_kib = 4294967295'; do
    # Planted beside the real key: the repository still opens, with a warning.
    jq "$params" "$WORK/good-key" >"$repo/keys/$planted"
    run_timed 5 "$PBAK" -r "$repo" snapshots
    [ "$rc" = 0 ] || fail "a planted key ($params) stopped the real key from opening: $(tail -n 1 "$WORK/out")"
    # `key list` reads every key file (snapshots stops at the first that opens).
    run_timed 5 "$PBAK" -r "$repo" key list
    [ "$rc" = 0 ] || fail "key list with a planted key ($params) failed: $(tail -n 1 "$WORK/out")"
    expect "keys/$planted" "Argon2id parameters out of range"
    rm "$repo/keys/$planted"
    # As the only key: an error about its parameters, not a derivation.
    jq "$params" "$WORK/good-key" >"$repo/keys/$key"
    run_timed 5 "$PBAK" -r "$repo" snapshots
    [ "$rc" != 0 ] || fail "a key file with $params opened the repository"
    expect "malformed key file keys/$key" "Argon2id parameters out of range"
    refuse "wrong password"
    note "$params: refused in $took ms"
    cp "$WORK/good-key" "$repo/keys/$key"
  done
  name=$(ls "$repo/keys")
  [ "$name" = "$key" ] || fail "keys/ changed: $name"
}

malformed_keys() {
  local repo=$WORK/repo-malformed key size kind k opened=""
  init_repo "$repo"
  key=$(ls "$repo/keys")
  cp "$repo/keys/$key" "$WORK/good-key"
  size=$(stat -c %s "$WORK/good-key")
  for kind in empty half 10-bytes version-only binary; do
    case $kind in
      empty) : >"$repo/keys/$key" ;;
      half) head -c $((size / 2)) "$WORK/good-key" >"$repo/keys/$key" ;;
      10-bytes) head -c 10 "$WORK/good-key" >"$repo/keys/$key" ;;
      version-only) echo '{"version": 1}' >"$repo/keys/$key" ;;
      binary) head -c 400 /dev/urandom >"$repo/keys/$key" ;;
    esac
    run_timed 5 "$PBAK" -r "$repo" snapshots
    [ "$rc" = 1 ] || fail "$kind key file: exit $rc, expected 1"
    expect "malformed key file keys/$key:"
    refuse "wrong password"
  done
  note "empty, half, 10-byte, version-only and binary key files: each named malformed"
  cp "$WORK/good-key" "$repo/keys/$key"
  # A second key: with one of the two truncated, the other still opens.
  printf 'second password' >"$WORK/pw2"
  chmod 600 "$WORK/pw2"
  PBAK_NEW_PASSWORD_FILE=$WORK/pw2 pbak -r "$repo" key add --kdf-memory-mib 1 --kdf-iterations 1 >/dev/null 2>&1
  for k in "$repo"/keys/*; do
    cp "$k" "$WORK/saved"
    head -c 10 "$WORK/saved" >"$k"
    if PBAK_PASSWORD_FILE=$WORK/pw2 "$PBAK" -r "$repo" snapshots >/dev/null 2>&1; then
      opened=$k
      break
    fi
    cp "$WORK/saved" "$k"
  done
  [ -n "$opened" ] || fail "with one of two keys truncated, the other did not open the repository"
  run_timed 5 "$PBAK" -r "$repo" snapshots
  [ "$rc" = 1 ] || fail "the truncated key's password: exit $rc"
  expect "malformed key file keys/${opened##*/}"
  note "with two keys, truncating one leaves the other working; its password is told it is malformed"
}

private_modes() {
  local repo=$WORK/repo-umask src=$WORK/src-umask cache=$WORK/cache-umask open
  mkdir -p "$src/sub"
  head -c 300000 /dev/urandom >"$src/a"
  echo bee >"$src/sub/b"
  printf 'second password' >"$WORK/pw-umask"
  chmod 600 "$WORK/pw-umask"
  (
    umask 000
    export PBAK_CACHE_DIR=$cache PBAK_REPOSITORY=$repo
    init_repo "$repo"
    pbak backup "$src" >/dev/null 2>&1
    echo more >"$src/c"
    pbak backup "$src" >/dev/null 2>&1
    PBAK_NEW_PASSWORD_FILE=$WORK/pw-umask pbak key add --kdf-memory-mib 1 --kdf-iterations 1 >/dev/null 2>&1
    pbak forget --keep-last 1 >/dev/null 2>&1
    pbak prune >/dev/null 2>&1
    pbak check --read-data >/dev/null 2>&1
  ) || fail "a command under umask 000 failed"
  for d in keys data index snapshots runs .tmp; do [ -d "$repo/$d" ] || fail "no $d/ in the repository"; done
  open=$(find "$repo" \( -type f ! -perm 600 \) -o \( -type d ! -perm 700 \) -printf '%m %p\n' | head -n 5)
  [ -z "$open" ] || fail "not private under umask 000: $open"
  open=$(find "$cache" -type d ! -perm 700 -printf '%m %p\n' | head -n 5)
  [ -z "$open" ] || fail "cache directories not 0700 under umask 000: $open"
  note "$(find "$repo" -type f | wc -l) files 0600, $(find "$repo" -type d | wc -l) directories 0700; cache directories 0700"
}

readable_secrets() {
  local repo=$WORK/repo-files
  init_repo "$repo"
  install -m 644 /dev/null "$WORK/pw-open"
  printf '%s' "$PBAK_PASSWORD" >"$WORK/pw-open"
  run_timed 5 "$PBAK" -r "$repo" --password-file "$WORK/pw-open" snapshots
  [ "$rc" != 0 ] || fail "a password file readable by others was used"
  chmod 600 "$WORK/pw-open"
  run_timed 5 "$PBAK" -r "$repo" --password-file "$WORK/pw-open" snapshots
  [ "$rc" = 0 ] || fail "a private password file was refused: $(tail -n 1 "$WORK/out")"
  install -m 640 /dev/null "$WORK/env-open"
  echo "AWS_SECRET_ACCESS_KEY=x" >"$WORK/env-open"
  run_timed 5 "$PBAK" -r "$repo" --env-file "$WORK/env-open" snapshots
  [ "$rc" != 0 ] || fail "an env file readable by its group was used"
  : >"$WORK/pw-empty"
  chmod 600 "$WORK/pw-empty"
  PBAK_NEW_PASSWORD_FILE=$WORK/pw-empty run_timed 5 "$PBAK" -r "$repo" key add
  [ "$rc" != 0 ] || fail "key add accepted an empty password"
  expect "empty password refused"
  [ "$(find "$repo/keys" -type f | wc -l)" = 1 ] || fail "key add with an empty password added a key"
  note "0644 password file and 0640 env file refused, empty new password refused"
}

password_command() {
  local repo=$WORK/repo-cmd seen=$WORK/cmd-env cmd p1 p2 r1=0 r2=0 t0 t1 t2 pid left=""
  init_repo "$repo"
  cmd="env >'$seen'; printf '%s\n' '$PBAK_PASSWORD'"
  PBAK_PASSWORD="not this one" AWS_SECRET_ACCESS_KEY=aws-secret B2_ACCOUNT_KEY=b2-secret \
    PBAK_PASSWORD_COMMAND=$cmd run_timed 10 "$PBAK" -r "$repo" snapshots
  [ "$rc" = 0 ] || fail "the password command's password did not open: $(tail -n 1 "$WORK/out")"
  [ -s "$seen" ] || fail "the password command did not run"
  for t in PBAK_ AWS_ B2_ "not this one" aws-secret b2-secret; do
    ! grep -qF -- "$t" "$seen" || fail "$t reached the password command: $(grep -F -- "$t" "$seen")"
  done
  grep -q '^PATH=' "$seen" || fail "PATH did not reach the password command"
  note "the password command saw $(wc -l <"$seen") variables, none of PBAK_*, AWS_*, B2_*"

  # Two commands that never hand over a password, in parallel: one that never finishes, one
  # that prints one but leaves a process holding its output. Both must fail after ~60 s.
  t0=$SECONDS
  PBAK_PASSWORD_COMMAND="echo \$\$ >'$WORK/hang.sh'; sleep 600 & echo \$! >'$WORK/hang.child'; wait" \
    timeout 120 "$PBAK" -r "$repo" snapshots >"$WORK/hang.out" 2>&1 &
  p1=$!
  PBAK_PASSWORD_COMMAND="(sleep 600 & echo \$! >'$WORK/held.child'); printf '%s\n' '$PBAK_PASSWORD'" \
    timeout 120 "$PBAK" -r "$repo" snapshots >"$WORK/held.out" 2>&1 &
  p2=$!
  wait "$p1" || r1=$?
  t1=$((SECONDS - t0))
  wait "$p2" || r2=$?
  t2=$((SECONDS - t0))
  for f in hang.child held.child; do
    if [ -s "$WORK/$f" ]; then cat "$WORK/$f" >>"$WORK/pids"; fi
  done
  [ "$r1" != 124 ] || fail "pbak still waited for a hung password command after 120 s"
  [ "$r1" != 0 ] || fail "a password command that never finished opened the repository"
  grep -q 'did not finish within' "$WORK/hang.out" || fail "hung command: $(tail -n 1 "$WORK/hang.out")"
  pid=$(cat "$WORK/hang.sh")
  ! kill -0 "$pid" 2>/dev/null || fail "the hung password command's shell ($pid) is still running"
  [ "$r2" != 124 ] || fail "pbak still waited for a held-open output after 120 s"
  [ "$r2" != 0 ] || fail "a password command whose output stayed open was accepted"
  grep -q 'keeps its output open' "$WORK/held.out" || fail "held-open output: $(tail -n 1 "$WORK/held.out")"
  note "a hung command stopped after $t1 s, a held-open output refused after $t2 s"
  for f in hang.child held.child; do
    pid=$(cat "$WORK/$f" 2>/dev/null || true)
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then left+=" $f:$pid"; fi
  done
  if [ -n "$left" ]; then
    note "NOTE: processes the password commands started outlive pbak's timeout:$left (pbak kills" \
      "the shell, not its process group); this script kills them"
  fi
}

keep_within() {
  local repo=$WORK/repo-forget w
  init_repo "$repo"
  for w in 99999999999999d 999999999999999999999999h; do
    run_timed 5 "$PBAK" -r "$repo" forget --keep-within "$w"
    [ "$rc" != 0 ] || fail "forget --keep-within $w succeeded"
    refuse "panicked"
    expect "too long"
    note "forget --keep-within $w: exit $rc, $(grep -o 'too long.*' "$WORK/out" | head -n 1)"
  done
  run_timed 5 "$PBAK" -r "$repo" forget --keep-within 100000y
  [ "$rc" = 0 ] || fail "forget --keep-within 100000y (the limit) failed"
}

terminal_escapes() {
  local repo=$WORK/repo-ls src=$WORK/src-ls evil nl c1 out
  evil=$'a\e]0;owned\ab\e[2Jc\\d'
  nl=$'new\nline\x7f'
  c1=$'c1-\xc2\x9b-end' # U+009B, a one-character CSI, in UTF-8
  raw=$'raw-\x9b-end'     # the byte 0x9b alone (not UTF-8)
  mkdir "$src"
  for n in "$evil" "$nl" "$c1" "$raw"; do echo x >"$src/$n"; done
  init_repo "$repo"
  pbak -r "$repo" backup "$src" >/dev/null 2>&1
  # Piped: exact bytes.
  pbak -r "$repo" ls latest >"$WORK/out"
  grep -qF -- "$evil" "$WORK/out" || fail "piped ls does not print the name exactly"
  pbak -r "$repo" --json ls latest | jq -r .path >"$WORK/json"
  grep -qxF -- "$src/$evil" "$WORK/json" || fail "ls --json does not give the name exactly"
  if ! grep -qF -- "$raw" "$WORK/out"; then
    note "NOTE: piped ls and ls --json print a name that is not UTF-8 lossily (U+FFFD), not exactly"
  fi
  # On a terminal.
  script -qec "'$PBAK' -r '$repo' ls latest" /dev/null >"$WORK/out" </dev/null ||
    fail "ls under script failed: $(tail -n 2 "$WORK/out")"
  out=$(tr -d '\r' <"$WORK/out")
  grep -qF -- 'a\033]0;owned\ab\033[2Jc\\d' <<<"$out" || { cat -v "$WORK/out" >&2; fail "ESC/BEL/backslash not escaped as ls -b does"; }
  grep -qF -- 'new\nline\177' <<<"$out" || { cat -v "$WORK/out" >&2; fail "newline/DEL not escaped"; }
  grep -qF -- 'c1-\302\233-end' <<<"$out" || { cat -v "$WORK/out" >&2; fail "a C1 control (U+009B) not escaped"; }
  if LC_ALL=C grep -q $'[\x01-\x08\x0b-\x0c\x0e-\x1f\x7f\x9b]' <<<"$out"; then
    cat -v "$WORK/out" >&2
    fail "raw control bytes reached the terminal"
  fi
  note "on a terminal: $(grep -F 'owned' <<<"$out" | head -n 1)"
  if ! grep -qF -- 'raw-\233-end' <<<"$out"; then
    note "NOTE: a name with the byte 0x9b (not UTF-8) is shown as $(grep -a 'raw-' <<<"$out" | sed 's|.*/||'), not" \
      "raw-\\233-end as ls -b shows it (no control byte reaches the terminal; names are not exact)"
  fi
}

run_attack "keys: huge Argon2id parameters refused" hostile_parameters
run_attack "keys: empty/truncated keys named malformed" malformed_keys
run_attack "repo: files 0600, dirs 0700 under umask 000" private_modes
run_attack "secrets: open password/env files refused" readable_secrets
run_attack "secrets: password command env and timeout" password_command
run_attack "forget: --keep-within overflow is an error" keep_within
run_attack "ls: control characters escaped on a tty" terminal_escapes
attack_finish
