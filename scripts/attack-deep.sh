#!/usr/bin/env bash
# Replays issue 11, defect 3 (a tree 550 levels deep aborted the backup: a walk thread ran
# out of stack) at the depth a local user can really build, larger than CI's 600 and 1,800
# levels (tests/backup_deep.rs): LEVELS nested directories named `d`, a file every 100
# levels and one at the bottom.
#
# Asserts, each its own PASS/FAIL line: `backup`, `check`, `ls`, `restore` and a second
# `backup` (which walks the first snapshot's trees as its parent) neither crash (abort 134,
# segfault 139, panic 101) nor hang, and exit 0; the snapshot is not partial; `ls` lists every
# level and the bottom file; the restored tree equals the source (type, mode, owner, size,
# mtime and path of every entry, sha256 of every file: `find -printf` listings compared).
#
# Run as root:  scripts/attack-deep.sh [LEVELS]
#   LEVELS defaults to 2000, or fewer if PATH_MAX (4096) cannot name the restored bottom file
#   with one-letter names (the restore target adds the source's path again).
#   PBAK=/path/to/pbak   attack another build (default: this repository's target/debug/pbak)
set -euo pipefail
# shellcheck source=scripts/attack-lib.sh
. "$(dirname "$0")/attack-lib.sh"
attack_setup deep

src=$WORK/s
target=$WORK/t
restored=$target$src
# The longest name: the restored bottom file, $restored + "/d" * LEVELS + "/bottom".
max=$(((4095 - ${#restored} - 7) / 2))
LEVELS=${1:-$((max < 2000 ? max : 2000))}
if [ "$LEVELS" -gt "$max" ]; then
  echo "deep: note: $LEVELS levels are more than PATH_MAX lets name below $restored ($max);" \
    "tools that take whole paths may fail" >&2
fi
repo=$WORK/r
export PBAK_REPOSITORY=$repo

# LEVELS nested `d`, a file `f` every 100 levels, `bottom` at the bottom. mkdir -p and the
# writes use whole paths (all below PATH_MAX).
p=$src
mkdir "$p"
for ((i = 0; i < LEVELS; i++)); do
  p+=/d
  if ((i % 100 == 0)); then
    mkdir -p "$p"
    echo "level $i" >"$p/f"
  fi
done
mkdir -p "$p"
echo "the deepest file" >"$p/bottom"
note "$LEVELS levels, the bottom file's name has $((${#p} + 7)) bytes (${#restored} more once restored)"

# Type, mode, owner, size (files), mtime and relative path of every entry, and the sha256 of
# every file (find walks any depth; sha256sum gets relative names, below PATH_MAX).
listing() {
  (
    cd "$1"
    find . \( -type d -printf '%y %m %u:%g - %T@ %P\n' \) -o -printf '%y %m %u:%g %s %T@ %P\n'
    find . -type f -exec sha256sum {} +
  ) | LC_ALL=C sort
}

# deep_step NAME CMD…: run pbak CMD (under a timeout) and require exit 0, no crash.
deep_step() {
  local rc=0
  timeout 600 "$PBAK" "$@" >"$WORK/out" 2>"$WORK/err" || rc=$?
  if crashed "$rc"; then
    tail -n 5 "$WORK/err" >&2
    fail "pbak $1 crashed or hung (exit $rc)"
  elif [ "$rc" != 0 ]; then
    tail -n 5 "$WORK/err" >&2
    fail "pbak $1 exited $rc"
  fi
}

backup_deep() {
  init_repo "$repo"
  deep_step backup --json "$src"
  [ "$(jq -r .partial "$WORK/out")" = false ] || fail "the snapshot is partial: $(tail -n 3 "$WORK/err")"
}

check_deep() { deep_step check; }

ls_deep() {
  deep_step ls latest
  grep -q '/d/bottom$' "$WORK/out" || fail "ls misses the bottom file"
  local n
  n=$(wc -l <"$WORK/out")
  [ "$n" -ge "$LEVELS" ] || fail "ls listed $n lines for $LEVELS levels"
}

restore_deep() {
  deep_step restore latest --target "$target"
  local a b
  a=$(listing "$src")
  b=$(listing "$restored")
  if [ "$a" != "$b" ]; then
    diff <(echo "$a") <(echo "$b") | head -n 6 | cut -c 1-200 >&2
    fail "the restored tree differs from the source"
  fi
  [ "$(cat "$restored/${p#"$src/"}/bottom")" = "the deepest file" ] || fail "the bottom file differs"
}

second_backup_deep() {
  deep_step backup --json "$src"
  [ "$(jq -r .partial "$WORK/out")" = false ] || fail "the second snapshot is partial"
}

run_attack "deep: backup of $LEVELS levels" backup_deep
run_attack "deep: check" check_deep
run_attack "deep: ls" ls_deep
run_attack "deep: restore, equal to the source" restore_deep
run_attack "deep: second backup (parent's trees)" second_backup_deep
attack_finish
