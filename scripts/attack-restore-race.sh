#!/usr/bin/env bash
# Replays issue 11, defect 1 at a larger scale than CI affords (tests/restore_race.rs runs 40):
# root restores a snapshot into a directory owned by a local user (uid 1000), while that user
# swaps the restored directories for symlinks to a root-only 0700 directory and the restored
# files for symlinks to a root-only 0600 secret (and tries to hard-link the secret in).
#
# Asserts after every run: the secret's and the root-only directory's names, kinds, modes,
# owners, sizes, mtimes, ctimes (`stat -c '%a %u %g %s %Y %Z'`), contents (sha256sum) and
# extended attributes (the source's files carry 30 each) are unchanged, and the restore neither crashed nor hung (any other exit status is fine: pbak
# may refuse a swapped entry). Across all runs the attacker must have swapped something in,
# or the runs prove nothing.
#
# Run as root:  scripts/attack-restore-race.sh [RUNS]     (default 200 runs)
#   PBAK=/path/to/pbak   attack another build (default: this repository's target/debug/pbak)
#   SEED=N               run i uses seed N+i-1 (default: random, printed)
#   REPLAY=1             every run uses SEED itself. A failing run prints its seed; the seed
#                        fixes the attacker's choices, not the scheduler's, so replay it a few
#                        times: `SEED=<seed> REPLAY=1 scripts/attack-restore-race.sh 20`
#   VERBOSE=1            one line per run with restore's exit status and last message
#   XATTRS=N             extended attributes per source file and directory (default 30)
# The seed picks the attacker's timing (seed % 3: at once and without pause, after a short
# delay, or once restore starts handing entries to the user in its metadata pass), how many
# swaps it makes and which entries it picks.
set -euo pipefail
# shellcheck source=scripts/attack-lib.sh
. "$(dirname "$0")/attack-lib.sh"
RUNS=${1:-200}
SEED=${SEED:-$((RANDOM * 32768 + RANDOM))}
attack_setup restore-race

# The attacker, run as uid 1000 with `bash -c`: until STOP exists (or 10 s), walk TARGET and
# swap what restore made for symlinks: directories to ROOTDIR, everything else to SECRET.
# SEED % 3 picks when it starts: at once (and then without pause or limit), after DELAY_MS,
# or once the first entry of TARGET is the user's; the latter two make only 1 to 4 swaps, so
# that the restore gets on to its later passes. SEED / 3 % 3 picks what it swaps: anything,
# only non-directories, or only directories.
attacker() {
  local target=$1 rootdir=$2 secret=$3 stop=$4 seed=$5 delay_ms=$6
  local deadline=$((SECONDS + 10)) max n=0 d p r aside mode=$((seed % 3)) kinds=$((seed / 3 % 3))
  local -a stack
  RANDOM=$seed
  shopt -s nullglob dotglob
  case $mode in
    0) ;;
    1) sleep "$((delay_ms / 1000)).$(printf '%03d' $((delay_ms % 1000)))" ;;
    *) # until restore chowns a first entry to the user (its metadata pass has begun)
      while [ ! -e "$stop" ] && ((SECONDS <= deadline)); do
        for p in "$target"/*; do [ -O "$p" ] && break 2; done
      done ;;
  esac
  if ((mode == 0)); then max=1000000; else max=$((1 + seed % 4)); fi
  while [ ! -e "$stop" ] && ((SECONDS <= deadline && n < max)); do
    stack=("$target")
    while ((${#stack[@]} && n < max)); do
      d=${stack[-1]}
      unset 'stack[-1]'
      for p in "$d"/*; do
        [ -L "$p" ] && continue
        [ -e "$p" ] || continue
        r=$RANDOM
        if [ -d "$p" ]; then
          if ((kinds == 1 || r % 2 == 0)); then
            stack+=("$p")
            continue
          fi
        elif ((kinds == 2)); then
          continue
        fi
        ((r % 3 != 0)) || continue
        # In the metadata pass, go for what restore has not handed over yet.
        if ((mode == 2)) && [ -O "$p" ]; then continue; fi
        aside=$p.aside$r
        if mv -T -- "$p" "$aside" 2>/dev/null; then
          if [ -d "$aside" ]; then ln -s "$rootdir" "$p"; else ln -s "$secret" "$p"; fi 2>/dev/null || true
          n=$((n + 1))
          # Sometimes put the original back, so that later passes meet it again.
          if ((r % 5 == 0)); then
            rm -f "$p"
            mv -T -- "$aside" "$p" 2>/dev/null || true
          fi
        fi
        # Refused by fs.protected_hardlinks; were it allowed, restore must not write to it.
        ln "$secret" "$p.hl" 2>/dev/null || true
        ((n < max)) || break
      done
    done
  done
}

# The source: directories nested three deep, files, symlinks and a FIFO, all the user's (so
# that restore hands the restored directories to the user once their metadata is set).
src=$WORK/src
for a in 0 1 2 3; do
  for b in 0 1 2; do
    d=$src/d$a/e$b/f
    mkdir -p "$d"
    for i in 0 1 2 3 4 5; do
      head -c 3000 /dev/urandom >"$d/file$i"
      echo "$a$b$i" >"$src/d$a/top$b$i"
    done
    ln -s file0 "$d/link"
  done
  echo plain >"$src/plain$a"
  # Some bulk, so that writing the contents keeps the create and metadata passes apart.
  head -c $((2 << 20)) /dev/urandom >"$src/d$a/bulk"
done
mkfifo "$src/fifo"
# Extended attributes on every file and directory, which restore sets one by one: wider
# windows between its steps for the swaps to fall into.
value=$(printf 'x%.0s' $(seq 100))
find "$src" \( -type f -o -type d \) -print | while read -r f; do
  echo "# file: $f"
  for ((k = 0; k < ${XATTRS:-30}; k++)); do echo "user.a$k=\"$value\""; done
  echo
done >"$WORK/xattrs"
setfattr --restore="$WORK/xattrs" || echo "restore-race: (no extended attributes: narrower windows)"
chown -R "$ATTACK_USER:$ATTACK_USER" "$src"

# The prize, outside the target: a root-only directory and a root-only secret.
rootdir=$WORK/rootdir
secret=$WORK/secret
make_prize() {
  rm -rf "$rootdir" "$secret"
  mkdir -m 700 "$rootdir"
  echo "root only" >"$rootdir/inside"
  install -m 600 /dev/null "$secret"
  echo "the secret" >"$secret"
}
make_prize
mkdir "$WORK/t"

repo=$WORK/repo
init_repo "$repo"
pbak -r "$repo" backup "$src" >/dev/null 2>&1

race() {
  local before after run seed target stop apid rc swaps swapped=0 nonzero=0 changed=0 t0 ms delay
  # Three unraced restores first: they must be exact, and their median time scales the
  # attacker's delays.
  for run in 1 2 3; do
    t0=${EPOCHREALTIME/./}
    pbak -r "$repo" restore "latest:$src" --target "$WORK/t/plain" >/dev/null 2>&1
    echo $(((${EPOCHREALTIME/./} - t0) / 1000 + 1)) >>"$WORK/times"
    if ! diff -r --no-dereference -x fifo "$src" "$WORK/t/plain" || [ ! -p "$WORK/t/plain/fifo" ]; then
      fail "an unraced restore differs from the source"
    fi
    rm -rf "$WORK/t/plain"
  done
  ms=$(sort -n "$WORK/times" | sed -n 2p)
  before=$(outside_fingerprint "$rootdir" "$secret")
  note "$RUNS raced restores, seeds $SEED..$((SEED + (${REPLAY:-0} == 1 ? 0 : RUNS - 1))); an unraced restore takes $ms ms"
  for ((run = 1; run <= RUNS; run++)); do
    seed=$((SEED + (${REPLAY:-0} == 1 ? 0 : run - 1)))
    delay=$((seed * 7919 % (ms * 6 / 5)))
    target=$WORK/t/$run
    stop=$WORK/t/stop$run
    mkdir "$target"
    chown "$ATTACK_USER:$ATTACK_USER" "$target"
    as_user bash -c "$(declare -f attacker); attacker \"\$@\"" attacker \
      "$target" "$rootdir" "$secret" "$stop" "$seed" "$delay" &
    apid=$!
    echo "$apid" >>"$WORK/pids"
    rc=0
    timeout 120 "$PBAK" -r "$repo" restore "latest:$src" --target "$target" \
      >"$WORK/out" 2>"$WORK/err" || rc=$?
    touch "$stop"
    wait "$apid" || true
    swaps=$(find "$target" -type l -lname "$WORK/*" | wc -l)
    swapped=$((swapped + swaps))
    [ "$rc" = 0 ] || nonzero=$((nonzero + 1))
    [ "${VERBOSE:-}" != 1 ] || note "run $run seed $seed: exit $rc, $swaps swapped; $(tail -n 1 "$WORK/err")"
    after=$(outside_fingerprint "$rootdir" "$secret")
    if [ "$after" != "$before" ] || crashed "$rc"; then
      changed=$((changed + 1))
      echo "    run $run, seed $seed (replay: PBAK=$PBAK SEED=$seed REPLAY=1 $0 20): restore exit $rc" >&2
      diff <(echo "$before") <(echo "$after") | grep '^[<>]' | head -n 8 | sed 's/^/      /' >&2 || true
      tail -n 5 "$WORK/err" | sed 's/^/      restore: /' >&2
      make_prize # a fresh prize for the next runs
      before=$(outside_fingerprint "$rootdir" "$secret")
    fi
    rm -rf "$target" "$stop"
  done
  note "$RUNS runs: $nonzero restores exited non-zero, $swapped entries found swapped for symlinks"
  [ "$changed" = 0 ] || fail "$changed of $RUNS runs changed something outside the target (or crashed/hung)"
  [ "$swapped" -gt 0 ] || fail "the attacker never swapped anything in: the runs prove nothing"
}

run_attack "restore into a user's dir, swapped for symlinks" race
attack_finish
