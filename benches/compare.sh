#!/usr/bin/env bash
# Side-by-side comparison of pbak with restic and borg (Debian's packages) on the same data,
# same disk, one run, cold page cache before every step (needs root).
#
#   sudo benches/compare.sh [WORKDIR]       (default /var/tmp/pbak-compare)
#
# Corpus: Debian's linux-source-6.12 as version 1; version 2 is a deterministic edit of it
# (every 50th .c file gets a line appended, every 200th file is deleted, 100 new files).
# Steps: first backup, unchanged backup, incremental backup (v1 -> v2 in place), full restore,
# check --read-data, and forget + prune of the first snapshot (`--keep-last 2`; borg: prune +
# compact); plus the machine's ceilings: for the first backup tar | zstd -3 -T0, for the
# restore tar -x of an uncompressed tar of the same tree onto the same filesystem.
# Prints wall, CPU, peak RSS and repository size per step and tool, and pbak's ratios.
# rustic is measured when `rustic` is on PATH or RUSTIC names it (cargo install rustic-rs).
#
# BASE=/path/to/old/pbak adds the tool `pbak-base`: the same commands as `pbak` run with that
# binary (its own repository, restore dir), and prints pbak / pbak-base wall, CPU and RSS per step
# (for refactors: old and new binaries side by side in one run).
# FRESH_FS=1 restores (every tool's, and the tar -x ceiling) into a new ext4 filesystem made
# for each restore (a loop image under WORKDIR): right after `rm -rf` of a large tree an
# ext4 filesystem makes every tool wait on it, and which tool ran after which delete decides
# more than the tool (docs/performance.md, session 13).
# TOOLS="pbak pbak-base" (space separated, in that order) runs only these tools; default
# pbak [pbak-base] restic borg [rustic]. The ceiling is measured either way; peers' packages are
# installed only for the tools that run.
set -euo pipefail
W=${1:-/var/tmp/pbak-compare}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PBAK=${PBAK:-$ROOT/target/release/pbak}
BASE=${BASE:-}
RUSTIC=${RUSTIC:-$(command -v rustic || true)}
if [ -n "${TOOLS:-}" ]; then
  read -ra tools <<< "$TOOLS"
else
  tools=(pbak); [ -n "$BASE" ] && tools+=(pbak-base); tools+=(restic borg); [ -n "$RUSTIC" ] && tools+=(rustic)
fi
has_tool() { local t; for t in "${tools[@]}"; do [ "$t" = "$1" ] && return 0; done; return 1; }
for t in "${tools[@]}"; do
  case $t in
    pbak|restic|borg) ;;
    pbak-base) [ -x "$BASE" ] || { echo "pbak-base needs BASE=<old pbak binary> (got '${BASE}')" >&2; exit 2; } ;;
    rustic) [ -n "$RUSTIC" ] || { echo "rustic needs rustic on PATH or RUSTIC=<binary>" >&2; exit 2; } ;;
    *) echo "unknown tool '$t' in TOOLS (known: pbak pbak-base restic borg rustic)" >&2; exit 2 ;;
  esac
done
if has_tool pbak; then [ -x "$PBAK" ] || (cd "$ROOT" && cargo build --release --quiet); fi
pkgs=(); has_tool restic && pkgs+=(restic); has_tool borg && pkgs+=(borgbackup); pkgs+=(linux-source-6.12 zstd)
for p in "${pkgs[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$p" >/dev/null; }
done
mkdir -p "$W"
if [ ! -d "$W/v1/linux-source-6.12" ]; then
  mkdir -p "$W/v1" && tar -C "$W/v1" -xf /usr/src/linux-source-6.12.tar.xz
fi
if [ ! -d "$W/v2/linux-source-6.12" ]; then
  mkdir -p "$W/v2" && cp -a "$W/v1/linux-source-6.12" "$W/v2/"
  (cd "$W/v2/linux-source-6.12" &&
    find . -name '*.c' | LC_ALL=C sort | awk 'NR % 50 == 0' | while read -r f; do echo "/* v2 edit */" >> "$f"; done &&
    find . -type f | LC_ALL=C sort | awk 'NR % 200 == 0' | xargs rm -f &&
    mkdir -p v2-new && for i in $(seq 1 100); do head -c $((i * 1000)) /usr/share/common-licenses/GPL-2 > "v2-new/f$i"; done)
fi
DATA=$W/data/linux       # the live tree every tool backs up (same path for all steps)
export PBAK_PASSWORD=bench RESTIC_PASSWORD=bench RUSTIC_PASSWORD=bench BORG_PASSPHRASE=bench BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes
RES=$W/results.tsv; : > "$RES"

cold() { sync; echo 3 > /proc/sys/vm/drop_caches; }
measure() { # tool step repo cmd...
  local tool=$1 step=$2 repo=$3; shift 3
  cold
  /usr/bin/time -f "%e %U %S %M" -o "$W/time" "$@" > "$W/out.$tool.$step" 2>&1 || { echo "$tool $step failed:"; tail -5 "$W/out.$tool.$step"; }
  read -r wall user sys rss < <(tail -1 "$W/time")
  local size=0; [ -n "$repo" ] && size=$(du -sb "$repo" | cut -f1)
  printf '%s\t%s\t%s\t%.2f\t%s\t%s\n' "$tool" "$step" "$wall" "$(echo "$user + $sys" | bc)" "$rss" "$size" >> "$RES"
}
set_version() { mkdir -p "$W/data"; rsync -a --delete "$W/$1/linux-source-6.12/" "$DATA/"; }
# Where restores go: $W, or with FRESH_FS=1 a filesystem made anew by fresh_fs before each.
RDIR=$W
fresh_fs() {
  [ "${FRESH_FS:-}" = 1 ] || return 0
  RDIR=$W/mnt; mkdir -p "$RDIR"
  mountpoint -q "$RDIR" && umount "$RDIR"
  rm -f "$W/fresh.img"; truncate -s 8G "$W/fresh.img"
  mkfs.ext4 -q -F "$W/fresh.img" && mount -o loop "$W/fresh.img" "$RDIR"
}
trap '[ "${FRESH_FS:-}" = 1 ] && mountpoint -q "$W/mnt" && umount "$W/mnt"; true' EXIT

measure ceiling first_backup "" sh -c "tar -C '$W/v1' -cf - linux-source-6.12 | zstd -3 -T0 > /dev/null"
measure ceiling metadata_walk "" find "$W/v1/linux-source-6.12" -printf '%s %T@ %C@ %i\n'

run_tool() { # name init backup restore check
  local t=$1 repo=$W/repo-$1; rm -rf "$repo" "$W/restore-$t"
  fresh_fs
  set_version v1
  case $t in
    pbak|pbak-base)
            local bin=$PBAK; [ "$t" = pbak-base ] && bin=$BASE
            "$bin" -r "$repo" init >/dev/null
            B=("$bin" -r "$repo" backup -q "$DATA"); R=("$bin" -r "$repo" restore latest --target "$RDIR/restore-$t"); C=("$bin" -r "$repo" check --read-data)
            F=("$bin" -r "$repo" forget --keep-last 2 --prune) ;;
    restic) restic -r "$repo" init >/dev/null
            B=(restic -r "$repo" backup -q "$DATA"); R=(restic -r "$repo" restore latest --target "$RDIR/restore-$t"); C=(restic -r "$repo" check --read-data)
            F=(restic -r "$repo" forget --keep-last 2 --prune) ;;
    rustic) "$RUSTIC" -r "$repo" init >/dev/null 2>&1
            B=("$RUSTIC" -r "$repo" backup "$DATA"); R=("$RUSTIC" -r "$repo" restore latest "$RDIR/restore-$t"); C=("$RUSTIC" -r "$repo" check --read-data)
            F=("$RUSTIC" -r "$repo" forget --keep-last 2 --prune) ;;
    borg)   borg init -e repokey-blake2 "$repo" >/dev/null
            B=(sh -c "borg create --compression zstd,3 '$repo::{now:%H%M%S%f}' '$DATA'"); R=(sh -c 'mkdir -p "$1" && cd "$1" && borg extract "$2::$(borg list --last 1 --short "$2")"' _ "$RDIR/restore-$t" "$repo"); C=(borg check --verify-data "$repo")
            F=(sh -c 'borg prune --keep-last 2 "$1" && borg compact "$1"' _ "$repo") ;;
  esac
  measure "$t" first_backup "$repo" "${B[@]}"
  measure "$t" unchanged_backup "$repo" "${B[@]}"
  set_version v2
  measure "$t" incremental_backup "$repo" "${B[@]}"
  measure "$t" restore "$repo" "${R[@]}"
  measure "$t" check_read_data "$repo" "${C[@]}"
  diff -r --no-dereference "$DATA" "$RDIR/restore-$t$DATA" > /dev/null && echo "$t: restore identical" || echo "$t: RESTORE DIFFERS"
  rm -rf "$RDIR/restore-$t"
  measure "$t" forget_prune "$repo" "${F[@]}"
}
# The file-creation limit for the restore step: extracting an uncompressed tar of the same
# (v2) tree onto the same filesystem, cold caches.
set_version v2
tar -C "$W/data" -cf "$W/linux-v2.tar" linux
fresh_fs
rm -rf "$RDIR/tarx" && mkdir -p "$RDIR/tarx"
measure ceiling restore "" tar -C "$RDIR/tarx" -xf "$W/linux-v2.tar"
rm -rf "$RDIR/tarx" "$W/linux-v2.tar"

for t in "${tools[@]}"; do run_tool "$t"; done

STEPS="first_backup unchanged_backup incremental_backup restore check_read_data forget_prune"
tw=8; for t in "${tools[@]}"; do [ ${#t} -gt $tw ] && tw=${#t}; done
echo
printf '%-*s %-20s %8s %8s %9s %10s\n' $tw tool step wall_s cpu_s rss_MB repo_MB
while IFS=$'\t' read -r tool step wall cpu rss size; do
  printf '%-*s %-20s %8s %8s %9d %10d\n' $tw "$tool" "$step" "$wall" "$cpu" $((rss / 1024)) $((size / 1048576))
done < "$RES"
if has_tool pbak; then
  echo
  echo "pbak wall-time ratio to each peer (lower is better):"
  for step in $STEPS; do
    p=$(awk -v s=$step '$1=="pbak" && $2==s {print $3}' "$RES")
    line="  $step:"
    for t in "${tools[@]}"; do
      [ "$t" = pbak ] || [ "$t" = pbak-base ] && continue
      o=$(awk -v t=$t -v s=$step '$1==t && $2==s {print $3}' "$RES")
      [ -n "$o" ] && [ -n "$p" ] && line="$line $t $(echo "scale=2; $p / $o" | bc)x"
    done
    c=$(awk -v s=$step '$1=="ceiling" && $2==s {print $3}' "$RES")
    [ -n "$c" ] && [ -n "$p" ] && line="$line ceiling($([ "$step" = restore ] && echo 'tar -x' || echo 'tar|zstd')) $(echo "scale=2; $p / $c" | bc)x"
    echo "$line"
  done
  echo
  echo "bytes the unchanged backup added to the repository (target: a few KiB):"
  for t in "${tools[@]}"; do
    awk -v t=$t '$1==t && $2=="first_backup" {a=$6} $1==t && $2=="unchanged_backup" {b=$6} END {if (b != "") printf "  %s: %d\n", t, b - a}' "$RES"
  done
  echo
  echo "pbak peak RSS ratio to the lowest peer (target <= 0.75):"
  for step in $STEPS; do
    awk -v s=$step '$2==s && $1!="ceiling" && $1!="pbak-base" {if ($1=="pbak") p=$5; else if (m=="" || $5<m) {m=$5; mt=$1}}
      END {if (m && p != "") printf "  %s: %.2fx (pbak %d MB, lowest %s %d MB)\n", s, p/m, p/1024, mt, m/1024}' "$RES"
  done
fi
if has_tool pbak && has_tool pbak-base; then
  echo
  echo "pbak / pbak-base (new / old binary; > 1.05 is more than 5% worse):"
  printf '  %-20s %7s %7s %7s\n' step wall cpu rss
  for step in $STEPS; do
    awk -v s=$step '$2==s && $1=="pbak" {nw=$3; nc=$4; nr=$5; n=1} $2==s && $1=="pbak-base" {ow=$3; oc=$4; orss=$5; o=1}
      function r(a, b) { return b > 0 ? sprintf("%.3f", a / b) : "-" }
      END {if (n && o) printf "  %-20s %7s %7s %7s%s\n", s, r(nw, ow), r(nc, oc), r(nr, orss), (ow > 0 && nw / ow > 1.05) ? "   wall > 5% slower" : ""}' "$RES"
  done
fi
