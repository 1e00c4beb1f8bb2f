#!/usr/bin/env bash
# SIGKILL at random points of backup, forget, prune and repair, more runs than CI (issue 12):
# after every kill check finds no error, every reported snapshot restores identical, and the
# next `prune --delete-after 0s` leaves a repository that `check --read-data` passes.
#   scripts/kill-points.sh [RUNS] [FIRST_SEED]     (default 100 runs from seed 1)
# A failure prints its seed; rerun just it with `scripts/kill-points.sh 1 SEED`.
set -euo pipefail
cd "$(dirname "$0")/.."
PBAK_KILL_RUNS=${1:-100} PBAK_KILL_SEED=${2:-1} \
    cargo test --test kill_points -- --nocapture
