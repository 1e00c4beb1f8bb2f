#!/usr/bin/env bash
# Replays every attack of issue 11 ("Hostile input and hostile neighbours") against one pbak
# binary, at sizes that keep the whole run to a few minutes, and prints a PASS/FAIL table:
#   attack-restore-race.sh  root restores into a user's directory while the user swaps the
#                           restored entries for symlinks to root-only files (RACE_RUNS runs)
#   attack-source-swap.sh   backup while the user swaps files for FIFOs and symlinks, and
#                           directories for symlinks to a root-only directory (SWAP_RUNS runs);
#                           also that each snapshot node's xattrs are its own inode's
#   attack-deep.sh          backup, check, ls, restore of a tree as deep as PATH_MAX allows
#   attack-damage.sh        a garbage snapshot, stray files, a flipped bit in a pack, a garbage
#                           index file
#   attack-keys.sh          hostile and malformed key files, repository modes under umask 000,
#                           the password command's environment and timeout (a minute),
#                           --keep-within overflow, terminal escapes in `ls`
# Each script's header says what it asserts; each can be run alone at a larger scale.
#
# Run as root:  scripts/attack-all.sh
#   PBAK=/path/to/pbak   attack another build (default: this repository's target/debug/pbak,
#                        built if missing)
#   RACE_RUNS=100 SWAP_RUNS=30 DEEP_LEVELS=<PATH_MAX's>   the sizes used here
# Exit status: 1 if any attack failed.
set -euo pipefail
# shellcheck source=scripts/attack-lib.sh
. "$(dirname "$0")/attack-lib.sh"
attack_setup all
export PBAK
here=$ATTACK_REPO/scripts

scripts=(
  "attack-restore-race.sh ${RACE_RUNS:-100}"
  "attack-source-swap.sh ${SWAP_RUNS:-30}"
  "attack-deep.sh ${DEEP_LEVELS:-}"
  "attack-damage.sh"
  "attack-keys.sh"
)
table=()
for entry in "${scripts[@]}"; do
  read -r -a cmd <<<"$entry"
  log=$WORK/${cmd[0]%.sh}.log
  echo
  echo "=== ${cmd[*]}"
  t0=$SECONDS
  rc=0
  "$here/${cmd[0]}" "${cmd[@]:1}" 2>&1 | tee "$log" || rc=$?
  took=$((SECONDS - t0))
  passed=$(grep -c '^PASS ' "$log" || true)
  failed=$(grep -c '^FAIL ' "$log" || true)
  if [ "$rc" = 0 ]; then result=PASS; else result=FAIL; ATTACK_FAILED=1; fi
  table+=("$(printf '%s  %-30s %3d pass %3d fail %5ds' "$result" "${cmd[*]}" "$passed" "$failed" "$took")")
  while read -r line; do table+=("        $line"); done < <(grep '^FAIL ' "$log" || true)
done

echo
echo "=== issue 11 attacks against $PBAK"
printf '%s\n' "${table[@]}"
attack_finish
