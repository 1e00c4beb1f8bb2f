#!/usr/bin/env bash
# Scaling of the unchanged backup with the number of files (needs root for drop_caches).
#
#   sudo benches/scaling.sh [WORKDIR] [SIZES]     (default /var/tmp/pbak-scaling, "250000 500000 1000000")
#
# Grows one synthetic tree of small files (1,000 files per directory, 100-4,000 bytes each,
# deterministic content) to each size in turn, backs it up, then measures an unchanged backup
# with a cold page cache: wall time, CPU and peak RSS. Linear growth shows as constant
# seconds per million files, and a constant marginal RSS per million files (the growth in RSS
# from the previous size; the first row has no previous size).
set -euo pipefail
W=${1:-/var/tmp/pbak-scaling}
SIZES=${2:-"250000 500000 1000000"}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PBAK=${PBAK:-$ROOT/target/release/pbak}
[ -x "$PBAK" ] || (cd "$ROOT" && cargo build --release --quiet)
export PBAK_PASSWORD=bench PBAK_REPOSITORY=$W/repo PBAK_CACHE_DIR=$W/cache
mkdir -p "$W/tree"
[ -d "$W/repo" ] || "$PBAK" init -q > /dev/null

grow() { # make files 0..N-1 (existing ones are kept)
  python3 - "$W/tree" "$1" <<'EOF'
import os, sys, random
root, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    d = os.path.join(root, "d%04d" % (i // 1000))
    p = os.path.join(d, "f%04d" % (i % 1000))
    if i % 1000 == 0:
        os.makedirs(d, exist_ok=True)
    if not os.path.exists(p):
        r = random.Random(i)
        with open(p, "wb") as f:
            f.write(r.randbytes(r.randint(100, 4000)))
EOF
}

printf '%10s %8s %8s %8s %12s %18s\n' files wall_s cpu_s rss_MB s_per_Mfile marginal_MB_per_Mf
prev_n=0; prev_rss=0
for n in $SIZES; do
  grow "$n"
  "$PBAK" backup -q "$W/tree" > /dev/null
  sync; echo 3 > /proc/sys/vm/drop_caches
  /usr/bin/time -f "%e %U %S %M" -o "$W/time" "$PBAK" backup -q "$W/tree" > /dev/null
  read -r wall user sys rss < "$W/time"
  awk -v n="$n" -v w="$wall" -v u="$user" -v s="$sys" -v r="$rss" -v pn="$prev_n" -v pr="$prev_rss" \
    'BEGIN { m = pn ? sprintf("%.1f", (r - pr) / 1024 * 1e6 / (n - pn)) : "-";
             printf "%10d %8.2f %8.2f %8d %12.2f %18s\n", n, w, u + s, r / 1024, w * 1e6 / n, m }'
  prev_n=$n; prev_rss=$rss
done
