#!/usr/bin/env bash
# Reading through `pbak mount` against restoring, one run, cold caches before every step and a
# fresh mount (empty blob cache) for each read (needs root, fuse3, a release build):
#   - a 1 GiB incompressible file: `cat` from the mount vs `pbak restore` of it (target: the
#     mount at least 0.7x as fast, i.e. read/restore time <= 1.43)
#   - `find` over the mounted kernel tree vs `find` over a restored copy (target <= 3x)
#   - the first listing of `snapshots/` with 300 snapshots (target < 0.5 s)
#
#   sudo benches/mount.sh [WORKDIR]      (default /var/tmp/pbak-mount-bench; SRC= the tree)
set -euo pipefail
W=${1:-/var/tmp/pbak-mount-bench}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PBAK=${PBAK:-$ROOT/target/release/pbak}
SRC=${SRC:-/var/tmp/pbak-compare/v1/linux-source-6.12}
[ -x "$PBAK" ] || (cd "$ROOT" && cargo build --release --quiet)
[ -d "$SRC" ] || { echo "no source tree at $SRC (run benches/compare.sh once, or give SRC=)" >&2; exit 2; }
export PBAK_PASSWORD=bench PBAK_CACHE_DIR=$W/cache
cold() { sync; echo 3 > /proc/sys/vm/drop_caches; }
secs() { local t0 t1; t0=$(date +%s.%N); "$@" > /dev/null; t1=$(date +%s.%N); echo "$t1 - $t0" | bc; }
MPID=
mount_repo() { # repo
  mkdir -p "$W/mnt"
  "$PBAK" -r "$1" mount "$W/mnt" & MPID=$!
  for _ in $(seq 200); do [ -d "$W/mnt/snapshots" ] && return; sleep 0.05; done
  echo "mount did not come up" >&2; exit 1
}
unmount_repo() { kill -INT "$MPID"; wait "$MPID" || true; }
trap '[ -n "$MPID" ] && kill -INT "$MPID" 2>/dev/null; true' EXIT

rm -rf "$W"; mkdir -p "$W/big"
head -c 1G /dev/urandom > "$W/big/file"
R=$W/repo
"$PBAK" -r "$R" init --kdf-memory-mib 8 > /dev/null
"$PBAK" -r "$R" backup -q --host big "$W/big"
"$PBAK" -r "$R" backup -q --host kernel "$SRC"

cold
restore_big=$(secs "$PBAK" -r "$R" restore "latest:$W/big" --host big --target "$W/restored-big")
rm -rf "$W/restored-big"
mount_repo "$R"; cold
read_big=$(secs cat "$W/mnt/hosts/big/latest$W/big/file")
unmount_repo

"$PBAK" -r "$R" restore "latest:$SRC" --host kernel --target "$W/kcopy" > /dev/null
cold
find_copy=$(secs find "$W/kcopy" -printf '%s %T@ %m\n')
mount_repo "$R"; cold
find_mount=$(secs find "$W/mnt/hosts/kernel/latest$SRC" -printf '%s %T@ %m\n')
unmount_repo
rm -rf "$W/kcopy"

R3=$W/repo300
mkdir -p "$W/small" && echo one > "$W/small/f"
"$PBAK" -r "$R3" init --kdf-memory-mib 8 > /dev/null
for i in $(seq 300); do echo "$i" > "$W/small/f"; "$PBAK" -r "$R3" backup -q --host "h$((i % 5))" "$W/small"; done
mount_repo "$R3"
list300=$(secs ls "$W/mnt/snapshots")
n=$(ls "$W/mnt/snapshots" | wc -l)
unmount_repo

echo "1 GiB file: restore ${restore_big} s, cat from the mount ${read_big} s: mount speed $(echo "scale=2; $restore_big / $read_big" | bc)x of restore (target >= 0.7)"
echo "kernel tree: find on a restored copy ${find_copy} s, on the mount ${find_mount} s: $(echo "scale=2; $find_mount / $find_copy" | bc)x (target <= 3)"
echo "300 snapshots: first listing of snapshots/ ${list300} s ($n entries; target < 0.5)"
rm -rf "$W"
