#!/usr/bin/env bash
# Prune at scale (issue 12): a repository of about a million blobs and thousands of snapshots,
# built by real backups, then prune measured with /usr/bin/time (wall, CPU, peak RSS) and the
# bytes read from the repository.
#
#   benches/prune-scale.sh [WORKDIR]          (default /var/tmp/pbak-prune-scale)
#
#   FILES=1000000   small files of distinct content (one blob each) in one big snapshot
#   SNAPS=3000      tiny snapshots before it, from 5 host names (one changed file each)
#   PBAK=...        the binary (default target/release/pbak); BASE=/old/pbak adds the same
#                   steps with an older binary in its own repository, side by side.
#
# The tree is two halves, data/a and data/b. Steps per binary: `prune` of an unchanged
# repository (nothing to do; run twice, the second is reported, then with `--dry-run`); then
# `forget` of two thirds of the tiny snapshots and of the big snapshot (a snapshot of data/a
# alone was taken after it), and a repacking `prune --delete-after 0s --max-unused 0` (packs
# of data/b are deleted whole; packs mixing kept and forgotten tiny snapshots are repacked);
# then one more prune, unchanged again. Results: WORKDIR/results.tsv (tool, step, wall s,
# CPU s, peak RSS KiB, KiB read from disk by the step: every cache dropped before each step,
# `--no-cache`; the step binary_alone is what loading the binary itself reads).
set -euo pipefail
W=${1:-/var/tmp/pbak-prune-scale}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PBAK=${PBAK:-$ROOT/target/release/pbak}
BASE=${BASE:-}
FILES=${FILES:-1000000}
SNAPS=${SNAPS:-3000}
export PBAK_PASSWORD=bench
mkdir -p "$W"

# The data: FILES files of 40-120 distinct bytes in directories of 1000, in two halves.
if [ "$(cat "$W/data.files" 2>/dev/null)" != "$FILES" ]; then
  rm -rf "$W/data" && mkdir -p "$W/data/a" "$W/data/b"
  python3 - "$W/data" "$FILES" <<'EOF2'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    d = os.path.join(root, "a" if i < n // 2 else "b", "d%04d" % (i // 1000))
    if i % 1000 == 0 or i == n // 2:
        os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "f%d" % i), "wb") as f:
        f.write(("file %d " % i).encode() * (4 + i % 9))
EOF2
  echo "$FILES" > "$W/data.files"
fi

RES=$W/results.tsv; : > "$RES"
measure() { # tool step cmd...
  local tool=$1 step=$2; shift 2
  sync; echo 3 > /proc/sys/vm/drop_caches
  /usr/bin/time -f "%e %U %S %M %I" -o "$W/time" "$@" > "$W/out.$tool.$step" 2>&1 ||
    { echo "$tool $step failed:"; tail -5 "$W/out.$tool.$step"; exit 1; }
  read -r wall user sys rss blocks < <(tail -1 "$W/time")
  printf '%s\t%s\t%s\t%.2f\t%s\t%s\n' "$tool" "$step" "$wall" "$(echo "$user + $sys" | bc)" "$rss" $((blocks / 2)) >> "$RES"
}

build() { # tool bin repo
  local t=$1 bin=$2 repo=$3 small=$W/small-$1
  if [ -f "$repo/.built-$FILES-$SNAPS" ]; then return; fi
  rm -rf "$repo" "$small" && mkdir -p "$small"
  "$bin" -r "$repo" -q init --kdf-memory-mib 8 --kdf-iterations 1 > /dev/null
  echo "building $t: $SNAPS tiny snapshots" >&2
  for i in $(seq 1 "$SNAPS"); do
    echo "snapshot $i" > "$small/changing"
    "$bin" -r "$repo" -q backup --host "host$((i % 5))" "$small" > /dev/null
  done
  echo "building $t: a snapshot of $FILES files" >&2
  "$bin" -r "$repo" -q backup --host big "$W/data" > /dev/null
  "$bin" -r "$repo" -q backup --host big "$W/data/a" > /dev/null
  touch "$repo/.built-$FILES-$SNAPS"
}

run_tool() { # tool bin
  local t=$1 bin=$2 repo=$W/repo-$1 work=$W/work-$1
  build "$t" "$bin" "$repo"
  rm -rf "$work" && cp -a "$repo" "$work"
  "$bin" -r "$work" -q prune > /dev/null
  measure "$t" binary_alone "$bin" --version
  measure "$t" unchanged_prune "$bin" -r "$work" -q --no-cache prune
  measure "$t" unchanged_prune_dry "$bin" -r "$work" -q --no-cache prune --dry-run
  for h in 0 1 2 3 4; do
    "$bin" -r "$work" -q forget --host "host$h" --keep-last $((SNAPS / 15)) > /dev/null
  done
  local big; big=$("$bin" -r "$work" --json snapshots --host big | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])')
  "$bin" -r "$work" -q forget "$big" > /dev/null
  # An older binary without two-phase prune deletes at once anyway.
  local now=(); "$bin" prune --help | grep -q -- --delete-after && now=(--delete-after 0s)
  measure "$t" repacking_prune "$bin" -r "$work" -q --no-cache prune "${now[@]}" --max-unused 0
  measure "$t" unchanged_prune_after "$bin" -r "$work" -q --no-cache prune
  "$bin" -r "$work" -q check > /dev/null
  du -sb "$work" | awk -v t="$t" '{print t " repository after: " $1 " bytes"}' >&2
}

run_tool pbak "$PBAK"
[ -n "$BASE" ] && run_tool pbak-base "$BASE"
printf 'tool\tstep\twall_s\tcpu_s\tpeak_rss_kib\tread_kib\n'
cat "$RES"
