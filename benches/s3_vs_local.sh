#!/usr/bin/env bash
# First backup of the same tree to a local repository and to the S3 test server on loopback
# (release build, warm page cache so both read the source alike). Prints wall seconds.
#
#   eval "$(scripts/s3-server.sh start)"; benches/s3_vs_local.sh [SOURCE] [RUNS]
#
# Needs PBAK_TEST_S3_ENDPOINT/PBAK_TEST_S3_BUCKET and AWS_* from s3-server.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
SRC="${1:-/var/tmp/bench/linux-source-6.12}"
RUNS="${2:-2}"
WORK="${PBAK_BENCH_DIR:-/var/tmp/pbak-s3-bench}"
: "${PBAK_TEST_S3_ENDPOINT:?start the S3 server first: eval \"\$(scripts/s3-server.sh start)\"}"
cargo build --release -q
PBAK="$PWD/target/release/pbak"
export PBAK_PASSWORD=bench PBAK_CACHE_DIR="$WORK/cache"
mkdir -p "$WORK"
tar -cf - -C "$SRC" . >/dev/null   # warm the page cache

secs() { local t0 t1; t0=$(date +%s.%N); "$@" >/dev/null; t1=$(date +%s.%N); echo "$t1 - $t0" | bc; }

for run in $(seq "$RUNS"); do
  rm -rf "$WORK/repo" "$WORK/cache"
  "$PBAK" -r "$WORK/repo" init --kdf-memory-mib 8 >/dev/null
  l=$(secs "$PBAK" -r "$WORK/repo" backup -q "$SRC")
  url="s3:$PBAK_TEST_S3_ENDPOINT/$PBAK_TEST_S3_BUCKET/bench-$$-$run"
  "$PBAK" -r "$url" init --kdf-memory-mib 8 >/dev/null
  s=$(secs "$PBAK" -r "$url" backup -q "$SRC")
  echo "run $run: local ${l} s, s3 ${s} s, ratio $(echo "scale=2; $s / $l" | bc)"
done
rm -rf "$WORK"
