#!/usr/bin/env bash
# Run every fuzz target for SECONDS (default 600) each, one after another, on stable Rust:
# the coverage instrumentation cargo-fuzz uses without its `-Zsanitizer=address` (pbak's
# decoders are safe Rust, so what libFuzzer hunts here is panics, hangs and blow-ups).
#   fuzz/run.sh [SECONDS] [TARGET...]
#   JOBS=2 fuzz/run.sh 600      # two targets at a time (one core each)
# Figures go to fuzz/results.txt (target, runs, corpus, coverage); crashes to fuzz/artifacts/.
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-600}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(sed -n 's/^name = "\(.*\)"/\1/p' Cargo.toml | grep -v '^pbak-fuzz$')
fi
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
 -Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks"
# An explicit --target keeps the flags off build scripts (they cannot link libFuzzer's hooks).
triple=$(rustc -vV | sed -n 's/^host: //p')
cargo build --release --bins --target "$triple"
RUSTFLAGS= cargo run --release --example seed_corpus
[ -n "${KEEP_RESULTS:-}" ] || : > results.txt
fuzz_one() {
    local t=$1 status=0 last
    mkdir -p "corpus/$t" "artifacts/$t" "logs"
    echo "== $t: ${secs}s"
    "./target/$triple/release/$t" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
        -artifact_prefix="artifacts/$t/" "corpus/$t" > "logs/$t.log" 2>&1 || status=$?
    last=$(grep -E '^#[0-9]+' "logs/$t.log" | tail -1 || true)
    echo "$t exit=$status $last" | tee -a results.txt
}
jobs=${JOBS:-1} running=0
for t in "${targets[@]}"; do
    if [ "$running" -ge "$jobs" ]; then
        wait -n || true
        running=$((running - 1))
    fi
    fuzz_one "$t" &
    running=$((running + 1))
done
wait
