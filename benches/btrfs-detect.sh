#!/usr/bin/env bash
# snapshot-backup with change detection from Btrfs generations vs the same backup with a full
# metadata scan (--full-scan), on a Btrfs loop device holding linux-source-6.12 (needs root).
#
#   sudo benches/btrfs-detect.sh [WORKDIR]      (default /var/tmp/pbak-btrfs-detect)
#
# Two repositories (one per mode) start from the same first backup of the subvolume. Then, for
# N = 10, 100, 1000, 10000: append a line to N files (every (total/N)-th of the sorted file
# list, deterministic), drop the page cache, time `snapshot-backup` in each mode. Last, the
# subvolume is doubled (a reflink copy of the tree, ~2x the files), both modes take a backup of
# that, and the 100-file step is repeated: generation detection's time should stay flat while
# the full scan's doubles. Prints a table of wall seconds (and what each run read).
set -euo pipefail
W=${1:-/var/tmp/pbak-btrfs-detect}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PBAK=${PBAK:-$ROOT/target/release/pbak}
SRC=${SRC:-/var/tmp/bench/linux-source-6.12}
[ "$(id -u)" = 0 ] || { echo "run as root: loop devices, mount and drop_caches need it" >&2; exit 1; }
[ -x "$PBAK" ] || (cd "$ROOT" && cargo build --release --quiet)
if [ ! -d "$SRC" ]; then
  dpkg -s linux-source-6.12 >/dev/null 2>&1 || { apt-get update -qq; apt-get install -y -qq linux-source-6.12 >/dev/null; }
  mkdir -p "$(dirname "$SRC")" && tar -C "$(dirname "$SRC")" -xf /usr/src/linux-source-6.12.tar.xz
fi
command -v mkfs.btrfs >/dev/null || { apt-get update -qq; apt-get install -y -qq btrfs-progs >/dev/null; }

MNT=$W/mnt SV=$W/mnt/linux
cleanup() {
  umount "$MNT" 2>/dev/null || true
  [ -n "${LOOP:-}" ] && losetup -d "$LOOP" 2>/dev/null || true
}
trap cleanup EXIT
cleanup
rm -rf "$W" && mkdir -p "$MNT"
truncate -s 8G "$W/img" && mkfs.btrfs -q "$W/img"
LOOP=$(losetup --find --show "$W/img")
mount -o noatime "$LOOP" "$MNT" # the general preset; relatime would count every first directory listing as a change
btrfs -q subvolume create "$SV"
echo "copying $SRC into the subvolume..."
cp -a "$SRC/." "$SV/"
export PBAK_PASSWORD=bench
for m in gen scan; do "$PBAK" -r "$W/repo-$m" init --kdf-memory-mib 8 >/dev/null; done

cold() { sync; echo 3 > /proc/sys/vm/drop_caches; }
# run MODE LABEL: one timed snapshot-backup; appends "label mode wall files_read detection".
run() {
  local m=$1 label=$2 flag=()
  [ "$m" = scan ] && flag=(--full-scan)
  sleep 1 # local snapshot names have one-second resolution
  cold
  /usr/bin/time -f "%e" -o "$W/time" "$PBAK" -r "$W/repo-$m" snapshot-backup --json "${flag[@]}" \
    --snapshot-dir "$MNT/snaps-$m" "$SV" > "$W/out.json"
  python3 - "$label" "$m" "$(tail -1 "$W/time")" "$W/out.json" >> "$W/results.tsv" <<'EOF'
import json, sys
label, mode, wall, path = sys.argv[1:]
v = json.load(open(path))
print(f"{label}\t{mode}\t{wall}\t{v['files_new'] + v['files_changed']}\t{v['total_files']}\t{v['change_detection']}")
EOF
}
edit() { # N: append a line to N files spread evenly over the sorted file list
  local n=$1
  (cd "$SV" && find . -type f | LC_ALL=C sort > "$W/files" &&
    awk -v n="$n" -v t="$(wc -l < "$W/files")" 'NR % int(t / n) == 0 && c < n { print; c++ }' "$W/files" |
    while IFS= read -r f; do echo "/* pbak bench $n */" >> "$f"; done)
}

: > "$W/results.tsv"
# The two modes take turns going first (FIRST=scan starts with the scan): with the same order
# in every step, 10,000 changed files took 1.20x of the scan with detection first and 0.90x
# with the scan first, both being the same scan after the cut-over (session 14). Run it with
# both orders and compare the means.
order=(gen scan)
[ "${FIRST:-gen}" = scan ] && order=(scan gen)
both() { for m in "${order[@]}"; do run "$m" "$1"; done; order=("${order[1]}" "${order[0]}"); }
both first
for n in 10 100 1000 10000; do
  edit "$n"
  both "$n"
done
echo "doubling the subvolume (reflink copy of the tree)..."
mkdir "$SV/copy"; shopt -s dotglob
for e in "$SV"/*; do [ "$e" = "$SV/copy" ] || cp -a --reflink=always "$e" "$SV/copy/"; done
both doubled
edit 100
both "100-of-2x"

echo
printf '%-10s %-6s %8s %10s %10s  %s\n' step mode wall_s files_read total_files detection
while IFS=$'\t' read -r label mode wall read total det; do
  printf '%-10s %-6s %8s %10s %10s  %s\n' "$label" "$mode" "$wall" "$read" "$total" "$det"
done < "$W/results.tsv"
echo
python3 - "$W/results.tsv" <<'EOF'
import sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
t = {(r[0], r[1]): float(r[2]) for r in rows}
for label in ["10", "100", "1000", "10000", "doubled", "100-of-2x"]:
    g, s = t[(label, "gen")], t[(label, "scan")]
    print(f"{label:>10} changed: generation {g:.2f} s, full scan {s:.2f} s, ratio {g / s:.2f}")
EOF
