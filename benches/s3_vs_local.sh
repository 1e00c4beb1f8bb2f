#!/usr/bin/env bash
# First backup of the same tree to a local repository and to an S3 server on loopback, then a
# restore of that snapshot from each into a fresh directory (release build, warm page cache so
# both read the source, and the restores the repository or the server's files, alike). Prints
# wall seconds and peak RSS (GNU time's %M, file-backed mapped pages included) and the S3/local
# ratios; each restore is checked against the source with `diff -r`, outside the timing.
#
#   PBAK_BENCH_SERVER=s3rver benches/s3_vs_local.sh [SOURCE] [RUNS]   # starts and stops the server
#   eval "$(scripts/s3-server.sh start)"; benches/s3_vs_local.sh ...   # or a server already up:
#   eval "$(scripts/s3rver.sh start)"; benches/s3_vs_local.sh ...      #   its exports are used
#   PBAK_BIN=/path/to/pbak benches/s3_vs_local.sh ...   # another build (no cargo build)
#   PBAK_BENCH_CONNECTIONS="10 20" ...   # one more S3 restore per value of --connections
#   PBAK_BENCH_RESTORE_DIR=/mnt/x ...   # restore there (default: under PBAK_BENCH_DIR)
#   PBAK_BENCH_FRESH_FS=1 ...   # each restore into a new ext4 loop filesystem (needs root)
#   PBAK_BENCH_COLD=1 ...       # drop the page cache before each restore (needs root): both
#                               # read the packs from disk, pbak directly or through the server
#
# Odd runs restore from the local repository first, even runs from S3 first: the second of two
# restores into one filesystem pays for the first one's writeback and full inode tables.
#
# Restored trees (RUNS x 2 copies of SOURCE, more with PBAK_BENCH_CONNECTIONS) stay until the
# end. On ext4 without a journal (this workplace's /var/tmp) creating files within 60 s of
# deleting others, 360 s while their inode table blocks are dirty, scans the deleted inodes
# (ext4's recently_deleted): a restore after `rm -rf` of another took 2-4x as long, all of it
# system time. There, restore into a journaled filesystem, e.g. a loop-mounted image:
#   truncate -s 16G /var/tmp/r.img; mkfs.ext4 -q /var/tmp/r.img; mount -o loop /var/tmp/r.img /mnt/x
#
# moto (scripts/s3-server.sh) is too slow to benchmark with; s3rver (scripts/s3rver.sh: npm,
# files on disk under /var/tmp) is the one to use. On loopback the server's CPU is taken from
# the same cores as pbak's.
# Needs PBAK_TEST_S3_ENDPOINT/PBAK_TEST_S3_BUCKET and AWS_* from either script, or
# PBAK_BENCH_SERVER=s3rver|moto to start one (and stop it at the end).
set -euo pipefail
cd "$(dirname "$0")/.."
SRC="$(realpath "${1:-/var/tmp/bench/linux-source-6.12}")"
RUNS="${2:-2}"
WORK="${PBAK_BENCH_DIR:-/var/tmp/pbak-s3-bench}"
RESTORED="${PBAK_BENCH_RESTORE_DIR:-$WORK}/pbak-restore-$$"
case "${PBAK_BENCH_SERVER:-}" in
  "") ;;
  s3rver | moto)
    server="scripts/s3rver.sh"
    [[ "$PBAK_BENCH_SERVER" == moto ]] && server="scripts/s3-server.sh"
    eval "$(bash "$server" start)"
    trap 'bash "$server" stop' EXIT
    ;;
  *) echo "PBAK_BENCH_SERVER: s3rver or moto" >&2; exit 2 ;;
esac
: "${PBAK_TEST_S3_ENDPOINT:?start the S3 server first: eval \"\$(scripts/s3rver.sh start)\", or set PBAK_BENCH_SERVER}"
if [[ -n "${PBAK_BIN:-}" ]]; then
  PBAK="$PBAK_BIN"
else
  cargo build --release -q
  PBAK="$PWD/target/release/pbak"
fi
[[ -x /usr/bin/time ]] || { echo "needs GNU time (apt-get install time)" >&2; exit 1; }
export PBAK_PASSWORD=bench PBAK_CACHE_DIR="$WORK/cache"
mkdir -p "$WORK" "$RESTORED"
tar -cf - -C "$SRC" . >/dev/null   # warm the page cache
echo "source $SRC: $(du -sb "$SRC" | cut -f1) bytes, $(find "$SRC" | wc -l) entries;" \
  "server $PBAK_TEST_S3_ENDPOINT; connections ${PBAK_CONNECTIONS:-default}"

# "SECONDS PEAK_RSS_MIB" of one command.
measure() {
  local t0 t1 kib
  t0=$(date +%s.%N)
  kib=$(/usr/bin/time -f %M "$@" 2>&1 >/dev/null | tail -1)
  t1=$(date +%s.%N)
  echo "$(echo "$t1 - $t0" | bc) $((kib / 1024))"
}

# The ratios of S3 ($1 s, $2 MiB) to local ($3 s, $4 MiB), and the peak RSS difference.
ratios() {
  printf 'ratio wall %s rss %s (%+d MiB)\n' "$(echo "scale=2; $1 / $3" | bc)" "$(echo "scale=2; $2 / $4" | bc)" "$(($2 - $4))"
}

# Restore the latest snapshot of repository $1 into the new directory $2 (extra pbak
# options after it), timed; then check it against the source. Prints measure's line only
# when the restore matches, so a caller's `read` fails (and the script stops) when not.
restore() {
  local repo="$1" out="$2" m
  shift 2
  if [[ "${PBAK_BENCH_FRESH_FS:-}" == 1 ]]; then
    mountpoint -q "$FRESH" && umount "$FRESH"
    rm -f "$WORK/fresh.img"; truncate -s 8G "$WORK/fresh.img"
    mkfs.ext4 -q -F "$WORK/fresh.img" && mount -o loop "$WORK/fresh.img" "$FRESH"
    out="$FRESH/$(basename "$out")"
  fi
  sync   # the previous restore's dirty pages are not written back during this one
  [[ "${PBAK_BENCH_COLD:-}" == 1 ]] && echo 3 >/proc/sys/vm/drop_caches
  m=$(measure "$PBAK" -r "$repo" "$@" restore -q latest -t "$out")
  diff -r --no-dereference "$SRC" "$out$SRC" >&2 || { echo "restore from $repo differs from $SRC" >&2; return 1; }
  echo "$m"
}
FRESH="$WORK/mnt"
if [[ "${PBAK_BENCH_FRESH_FS:-}" == 1 ]]; then
  mkdir -p "$FRESH"
  trap 'mountpoint -q "$FRESH" && umount "$FRESH"; ${server:+bash "$server" stop}' EXIT
fi

for run in $(seq "$RUNS"); do
  rm -rf "$WORK/repo" "$WORK/cache"   # (~100 files: too few to slow the restores)
  "$PBAK" -r "$WORK/repo" init --kdf-memory-mib 8 >/dev/null
  read -r l lm < <(measure "$PBAK" -r "$WORK/repo" backup -q "$SRC")
  url="s3:$PBAK_TEST_S3_ENDPOINT/$PBAK_TEST_S3_BUCKET/bench-$$-$run"
  "$PBAK" -r "$url" init --kdf-memory-mib 8 >/dev/null
  read -r s sm < <(measure "$PBAK" -r "$url" backup -q "$SRC")
  echo "run $run backup: local ${l} s ${lm} MiB, s3 ${s} s ${sm} MiB, $(ratios "$s" "$sm" "$l" "$lm")"
  if ((run % 2)); then
    read -r l lm < <(restore "$WORK/repo" "$RESTORED/$run-local")
    read -r s sm < <(restore "$url" "$RESTORED/$run-s3")
  else
    read -r s sm < <(restore "$url" "$RESTORED/$run-s3")
    read -r l lm < <(restore "$WORK/repo" "$RESTORED/$run-local")
  fi
  echo "run $run restore: local ${l} s ${lm} MiB, s3 ${s} s ${sm} MiB, $(ratios "$s" "$sm" "$l" "$lm")"
  for c in ${PBAK_BENCH_CONNECTIONS:-}; do
    read -r s sm < <(restore "$url" "$RESTORED/$run-s3-$c" --connections "$c")
    echo "run $run restore --connections $c: s3 ${s} s ${sm} MiB, $(ratios "$s" "$sm" "$l" "$lm")"
  done
done
[[ "${PBAK_BENCH_FRESH_FS:-}" == 1 ]] && mountpoint -q "$FRESH" && umount "$FRESH"
rm -rf "$WORK" "$RESTORED"
