#!/usr/bin/env bash
# Many more seeded interleavings than CI runs (issue 12): concurrent backups from several
# hosts, forget --prune and prune with short grace periods, SIGKILL at random points; after
# every run check finds no error and every reported snapshot restores identical.
#   scripts/interleave.sh [RUNS] [FIRST_SEED]     (default 1000 runs from seed 1)
# A failure prints its seed; rerun just it with `scripts/interleave.sh 1 SEED`.
set -euo pipefail
cd "$(dirname "$0")/.."
PBAK_INTERLEAVE_RUNS=${1:-1000} PBAK_INTERLEAVE_SEED=${2:-1} \
    cargo test --test interleave -- --nocapture
