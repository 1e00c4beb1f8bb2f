#!/usr/bin/env bash
# Issue 15's target for a resumed restore: "a resumed restore after 90% was written takes at
# most 20% of a full one". Restores a tree into an empty target (the full run), deletes every
# tenth file of it (sorted list, deterministic), then times `restore --overwrite if-changed`
# into the same target (the resumed run: it compares size and mtime of the 90% that is
# there, and writes the 10% that is not); the same again with `--verify` (it reads every
# chunk of the 90% before keeping it, and re-reads the 10% it wrote). A last if-changed run
# with nothing missing shows the cost of the quick check alone. Prints seconds, the ratios,
# and what each run wrote.
#
#   benches/restore-resume.sh [WORKDIR]        (default /var/tmp/pbak-restore-resume)
#   PBAK=/path/to/pbak   SRC=DIR (default: a generated tree of FILES files of random bytes,
#   60% of them 4–60 KiB, 40% 0.5–4 MiB; FILES=3000)
#   DROP=1 drops the page cache before each run (root only; pointless on tmpfs)
set -euo pipefail
W=${1:-/var/tmp/pbak-restore-resume}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PBAK=${PBAK:-$ROOT/target/release/pbak}
FILES=${FILES:-3000}
[ -x "$PBAK" ] || (cd "$ROOT" && cargo build --release --quiet)
rm -rf "$W" && mkdir -p "$W"
export PBAK_PASSWORD=bench PBAK_CACHE_DIR=$W/cache
SRC=${SRC:-}
if [ -z "$SRC" ]; then
  SRC=$W/src
  echo "generating $FILES files in $SRC..."
  python3 - "$SRC" "$FILES" <<'EOF'
import os, random, sys
root, n = sys.argv[1], int(sys.argv[2])
rnd = random.Random(15)
for i in range(n):
    d = os.path.join(root, f"d{i % 30:02}", f"e{i % 7}")
    os.makedirs(d, exist_ok=True)
    size = rnd.randint(4 << 10, 60 << 10) if i % 5 < 3 else rnd.randint(512 << 10, 4 << 20)
    with open(os.path.join(d, f"f{i:05}"), "wb") as f:
        f.write(rnd.randbytes(size))  # incompressible: no restore shortcut from dedup or zstd
EOF
fi
"$PBAK" -q -r "$W/repo" init --kdf-memory-mib 8 >/dev/null
"$PBAK" -q -r "$W/repo" backup "$SRC" >/dev/null
T=$W/target
cold() { if [ "${DROP:-0}" = 1 ]; then sync; echo 3 >/proc/sys/vm/drop_caches; fi; }
# run LABEL ARGS...: one timed restore; prints "label seconds written skipped bytes".
run() {
  local label=$1
  shift
  cold
  /usr/bin/time -f "%e %M" -o "$W/time" "$PBAK" -r "$W/repo" --json restore latest --target "$T" "$@" >"$W/out"
  python3 - "$label" "$W/time" "$W/out" <<'EOF'
import json, sys
label, t, o = sys.argv[1:]
secs, kb = open(t).read().split()[-2:]
s = json.load(open(o))["summary"]
print(f"{label:<22} {float(secs):7.2f} s  {int(kb) // 1024:5} MB  wrote {s['written']:6} files ({s['bytes'] / 2**20:8.1f} MiB), skipped {s['skipped']:6}")
EOF
  cut -d' ' -f1 "$W/time" | tail -n 1 >"$W/secs-$label"
}
echo "pbak: $PBAK; source: $(find "$SRC" -type f | wc -l) files, $(du -sh "$SRC" | cut -f1)"
run full
total=$(find "$T" -type f | wc -l)
find "$T" -type f | sort | awk 'NR % 10 == 0' | xargs -d '\n' rm -f
echo "deleted $((total - $(find "$T" -type f | wc -l))) of $total restored files"
run resumed --overwrite if-changed
diff -r "$SRC" "$T$SRC" >/dev/null && echo "diff -r: the resumed target equals the source"
find "$T" -type f | sort | awk 'NR % 10 == 0' | xargs -d '\n' rm -f
run resumed-verify --overwrite if-changed --verify
run unchanged --overwrite if-changed
python3 -c "
f, r, v, u = (float(open('$W/secs-' + k).read()) for k in ('full', 'resumed', 'resumed-verify', 'unchanged'))
print(f'resumed / full = {r / f:.0%} (target: at most 20%); with --verify {v / f:.0%}; quick check alone {u / f:.0%}')"
