#!/usr/bin/env bash
# First backup of the same tree to a local repository and to the S3 test server on loopback
# (release build, warm page cache so both read the source alike). Prints wall seconds and
# peak RSS (GNU time's %M, file-backed mapped pages included).
#
#   eval "$(scripts/s3-server.sh start)"; benches/s3_vs_local.sh [SOURCE] [RUNS]
#   PBAK_BIN=/path/to/pbak benches/s3_vs_local.sh ...   # another build (no cargo build)
#
# Needs PBAK_TEST_S3_ENDPOINT/PBAK_TEST_S3_BUCKET and AWS_* from s3-server.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
SRC="${1:-/var/tmp/bench/linux-source-6.12}"
RUNS="${2:-2}"
WORK="${PBAK_BENCH_DIR:-/var/tmp/pbak-s3-bench}"
: "${PBAK_TEST_S3_ENDPOINT:?start the S3 server first: eval \"\$(scripts/s3-server.sh start)\"}"
if [[ -n "${PBAK_BIN:-}" ]]; then
  PBAK="$PBAK_BIN"
else
  cargo build --release -q
  PBAK="$PWD/target/release/pbak"
fi
[[ -x /usr/bin/time ]] || { echo "needs GNU time (apt-get install time)" >&2; exit 1; }
export PBAK_PASSWORD=bench PBAK_CACHE_DIR="$WORK/cache"
mkdir -p "$WORK"
tar -cf - -C "$SRC" . >/dev/null   # warm the page cache

# "SECONDS PEAK_RSS_MIB" of one command.
measure() {
  local t0 t1 kib
  t0=$(date +%s.%N)
  kib=$(/usr/bin/time -f %M "$@" 2>&1 >/dev/null | tail -1)
  t1=$(date +%s.%N)
  echo "$(echo "$t1 - $t0" | bc) $((kib / 1024))"
}

for run in $(seq "$RUNS"); do
  rm -rf "$WORK/repo" "$WORK/cache"
  "$PBAK" -r "$WORK/repo" init --kdf-memory-mib 8 >/dev/null
  read -r l lm < <(measure "$PBAK" -r "$WORK/repo" backup -q "$SRC")
  url="s3:$PBAK_TEST_S3_ENDPOINT/$PBAK_TEST_S3_BUCKET/bench-$$-$run"
  "$PBAK" -r "$url" init --kdf-memory-mib 8 >/dev/null
  read -r s sm < <(measure "$PBAK" -r "$url" backup -q "$SRC")
  echo "run $run: local ${l} s ${lm} MiB, s3 ${s} s ${sm} MiB," \
    "ratio wall $(echo "scale=2; $s / $l" | bc) rss $(echo "scale=2; $sm / $lm" | bc)"
done
rm -rf "$WORK"
