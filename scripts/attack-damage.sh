#!/usr/bin/env bash
# Replays issue 11, defects 4 and 5 (one damaged object cost every command, or a whole
# restore) against a local repository, as tests/damage_snapshot.rs and tests/restore_damage.rs
# do in CI, with the damage placed by a seed:
#   1. A snapshot object overwritten with garbage, and stray `snapshots/README` and
#      `index/README` files: `snapshots` lists the others and warns naming each; the other
#      snapshots restore identically (`diff -r` against a copy of the source as it was);
#      `backup` still works; `check` exits non-zero naming the damaged object; `forget` by id
#      prefix refuses it, `forget <full id>` removes it; `check --read-data` is then clean.
#   2. One flipped bit in a data blob of a pack (SEED picks the blob, byte and bit): restore
#      exits non-zero, restores every other file exactly (content, mode, owner, mtime), leaves
#      `NAME.pbak-partial` for exactly the files that use the damaged blob and names them;
#      `check --read-data` exits non-zero naming the pack.
#   3. An index file overwritten with garbage: `prune` exits non-zero naming it and deletes
#      nothing (no pack, index file or snapshot).
# Every command runs with --no-cache, so what it reads is the damaged repository.
#
# Run as root:  scripts/attack-damage.sh
#   PBAK=/path/to/pbak   attack another build (default: this repository's target/debug/pbak)
#   SEED=N               where the bit flip lands (default: random, printed)
set -euo pipefail
# shellcheck source=scripts/attack-lib.sh
. "$(dirname "$0")/attack-lib.sh"
SEED=${SEED:-$((RANDOM * 32768 + RANDOM))}
attack_setup damage

nc() { "$PBAK" --no-cache "$@"; }

# expect_output FILE TEXT…: FILE holds each TEXT (fixed strings).
expect_output() {
  local f=$1 t
  shift
  for t in "$@"; do
    grep -qF -- "$t" "$f" || { sed 's/^/      | /' "$f" | head -n 20 >&2; fail "no \"$t\" in the output"; }
  done
}

damaged_snapshot() {
  local repo=$WORK/repo-snap src=$WORK/src-snap i rc bad target
  local -a ids
  export PBAK_REPOSITORY=$repo
  init_repo "$repo"
  mkdir "$src"
  for i in 0 1 2; do
    head -c 200000 /dev/urandom >"$src/f$i"
    printf "version $i %.0s" $(seq 100) >"$src/text"
    nc backup "$src" >/dev/null 2>&1
    cp -a "$src" "$WORK/src-snap-v$i"
  done
  mapfile -t ids < <(nc snapshots --json | jq -r 'sort_by(.time) | .[].id')
  [ "${#ids[@]}" = 3 ] || fail "expected 3 snapshots, got ${#ids[@]}"
  bad=${ids[1]}
  note "damaging snapshots/$bad (the second of three); adding snapshots/README and index/README"
  echo "garbage, not a sealed snapshot" >"$repo/snapshots/$bad"
  echo "not a snapshot" >"$repo/snapshots/README"
  echo "not an index file" >"$repo/index/README"

  nc snapshots >"$WORK/out" 2>&1 || fail "snapshots failed: $(tail -n 1 "$WORK/out")"
  expect_output "$WORK/out" "2 snapshots" "snapshots/$bad" "snapshots/README"
  [ "$(nc snapshots --json 2>/dev/null | jq length)" = 2 ] || fail "snapshots --json does not list the other 2"

  for i in 0 2; do
    target=$WORK/restore-snap-$i
    nc restore "${ids[$i]}" --target "$target" >"$WORK/out" 2>&1 ||
      fail "restore of snapshot ${ids[$i]} (undamaged) failed: $(tail -n 1 "$WORK/out")"
    diff -r "$WORK/src-snap-v$i" "$target$src" >&2 || fail "snapshot ${ids[$i]} restored differently"
  done
  note "the first and third snapshots restore identically"

  nc backup "$src" >"$WORK/out" 2>&1 || fail "backup beside the damage failed: $(tail -n 1 "$WORK/out")"
  expect_output "$WORK/out" "index/README"

  rc=0
  nc check >"$WORK/out" 2>&1 || rc=$?
  [ "$rc" != 0 ] || fail "check exited 0 with a damaged snapshot object"
  ! crashed "$rc" || fail "check crashed (exit $rc)"
  expect_output "$WORK/out" "snapshots/$bad"
  note "check exits $rc naming snapshots/$bad"

  nc forget --keep-last 1 >/dev/null 2>&1 || fail "forget --keep-last 1 failed"
  [ -e "$repo/snapshots/$bad" ] || fail "a keep rule removed the damaged snapshot"
  if nc forget "${bad:0:8}" >"$WORK/out" 2>&1; then fail "forget by id prefix took the damaged snapshot"; fi
  nc forget "$bad" >"$WORK/out" 2>&1 || fail "forget <full id> failed: $(tail -n 1 "$WORK/out")"
  [ ! -e "$repo/snapshots/$bad" ] || fail "forget <full id> left snapshots/$bad"
  note "forget <full id> removed it: $(grep -F removed "$WORK/out" | head -n 1)"

  nc check --read-data >"$WORK/out" 2>&1 || fail "check --read-data after forget: $(tail -n 3 "$WORK/out")"
  target=$WORK/restore-snap-latest
  nc restore latest --target "$target" >/dev/null 2>&1 || fail "restore latest failed"
  diff -r "$src" "$target$src" >&2 || fail "latest restored differently"
}

# The files of directory DIR of snapshot latest, one line each: NAME BLOB-ID…
file_blobs() {
  nc cat tree "latest:$1" | jq -r '
    def hex: . as $n | "0123456789abcdef" as $h
      | $h[($n / 16 | floor):($n / 16 | floor) + 1] + $h[($n % 16):($n % 16) + 1];
    .tree.nodes[] | select(.kind == "File")
    | ([.name[]] | implode) + " " + (.content | map(map(hex) | join("")) | join(" "))'
}

flipped_bit() {
  local repo=$WORK/repo-pack src=$WORK/src-pack target=$WORK/restore-pack d i rc
  local blob pack off len pos bit byte path rel good=0 partial=0 expected=0
  export PBAK_REPOSITORY=$repo
  init_repo "$repo" --pack-size-mib 1
  for d in 0 1 2 3; do
    mkdir -p "$src/d$d"
    for i in $(seq 0 9); do
      head -c 100000 /dev/urandom >"$src/d$d/f$i"
      chmod $((640 + i % 2 * 4)) "$src/d$d/f$i"
      touch -d "2020-01-0$((d + 1)) 12:00:0$i" "$src/d$d/f$i"
    done
    touch -d 2019-05-05 "$src/d$d"
  done
  nc backup "$src" >/dev/null 2>&1
  # Every data blob: "BLOB PACK OFFSET LENGTH"; SEED picks one, a byte in it and a bit.
  for i in "$repo"/index/*; do nc cat index "${i##*/}"; done | jq -r '.[] | .pack as $p | .blobs[]
    | select(.type == "Data") | "\(.id) \($p) \(.offset) \(.length)"' | sort >"$WORK/blobs"
  read -r blob pack off len < <(sed -n "$((SEED % $(wc -l <"$WORK/blobs") + 1))p" "$WORK/blobs")
  pos=$((off + SEED / 7 % len))
  bit=$((SEED % 8))
  path=$repo/data/${pack:0:2}/$pack
  byte=$(od -An -tu1 -j "$pos" -N 1 "$path" | tr -d ' ')
  printf '%b' "\\0$(printf '%03o' $((byte ^ (1 << bit))))" | dd of="$path" bs=1 seek="$pos" conv=notrunc status=none
  note "seed $SEED: flipped bit $bit of byte $pos of pack $pack (in blob ${blob:0:16}…)"

  for d in 0 1 2 3; do file_blobs "$src/d$d" | sed "s|^|d$d/|"; done >"$WORK/file-blobs"
  rc=0
  nc restore "latest:$src" --target "$target" >"$WORK/out" 2>"$WORK/err" || rc=$?
  ! crashed "$rc" || fail "restore crashed (exit $rc)"
  [ "$rc" != 0 ] || fail "restore exited 0 although a file's data is damaged"
  expect_output "$WORK/err" "pbak-partial"
  for d in 0 1 2 3; do
    for i in $(seq 0 9); do
      rel=d$d/f$i
      if grep -q "^$rel .*$blob" "$WORK/file-blobs"; then
        expected=$((expected + 1))
        [ ! -e "$target/$rel" ] || fail "$rel uses the damaged blob but was restored as if whole"
        [ -f "$target/$rel.pbak-partial" ] || fail "no $rel.pbak-partial for a file with damaged data"
        grep -qF "$rel" "$WORK/err" || grep -qF '…' "$WORK/err" || fail "restore does not name $rel"
        partial=$((partial + 1))
      else
        [ -f "$target/$rel" ] || fail "$rel (undamaged) was not restored"
        cmp -s "$src/$rel" "$target/$rel" || fail "$rel (undamaged) restored with other content"
        [ "$(stat -c '%a %u %g %s %Y' "$src/$rel")" = "$(stat -c '%a %u %g %s %Y' "$target/$rel")" ] ||
          fail "$rel (undamaged) restored with other metadata"
        good=$((good + 1))
      fi
    done
    [ "$(stat -c '%a %u %g %Y' "$src/d$d")" = "$(stat -c '%a %u %g %Y' "$target/d$d")" ] ||
      fail "d$d restored with other metadata"
  done
  [ "$expected" -gt 0 ] || fail "no file uses blob $blob: the attack proves nothing"
  [ "$(find "$target" -name '*.pbak-partial' | wc -l)" = "$partial" ] || fail "other files left partial"
  note "restore exit $rc: $good files exact, $partial left .pbak-partial ($(grep -m 1 -o 'the data of [^:]*' "$WORK/err" || true))"

  rc=0
  nc check --read-data >"$WORK/out" 2>&1 || rc=$?
  [ "$rc" != 0 ] || fail "check --read-data exited 0 with a flipped bit"
  ! crashed "$rc" || fail "check crashed (exit $rc)"
  expect_output "$WORK/out" "${pack:0:8}"
  note "check --read-data exits $rc naming the pack"
}

damaged_index() {
  local repo=$WORK/repo-index src=$WORK/src-index i victim before after rc=0
  export PBAK_REPOSITORY=$repo
  init_repo "$repo"
  mkdir "$src"
  for i in 0 1; do
    head -c 300000 /dev/urandom >"$src/f"
    nc backup "$src" >/dev/null 2>&1
  done
  nc forget --keep-last 1 >/dev/null 2>&1
  victim=$(cd "$repo" && find index -type f | sort | head -n 1)
  echo garbage >"$repo/$victim"
  before=$(cd "$repo" && find data index snapshots -type f | sort)
  nc prune >"$WORK/out" 2>&1 || rc=$?
  after=$(cd "$repo" && find data index snapshots -type f | sort)
  ! crashed "$rc" || fail "prune crashed (exit $rc)"
  [ "$rc" != 0 ] || fail "prune exited 0 with a damaged index file"
  expect_output "$WORK/out" "${victim#index/}"
  [ "$before" = "$after" ] || fail "prune deleted something although it could not read $victim"
  note "prune exits $rc naming $victim, nothing deleted"
}

run_attack "damage: garbage snapshot, stray README files" damaged_snapshot
run_attack "damage: one flipped bit in a pack" flipped_bit
run_attack "damage: garbage index file, then prune" damaged_index
attack_finish
