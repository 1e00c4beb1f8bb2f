#!/usr/bin/env bash
# Build pbak, back up a directory into a fresh local repository, restore it and compare.
# Usage: scripts/demo.sh [DIR]   (default: /usr/share/doc)
set -euo pipefail
cd "$(dirname "$0")/.."
src=$(realpath "${1:-/usr/share/doc}")
cargo build --release --quiet
pbak=$PWD/target/release/pbak
work=$(mktemp -d /tmp/pbak-demo.XXXXXX)
# A password file private to you; pbak refuses one that others can read.
install -m 600 /dev/null "$work/password" && echo "demo password $(date +%s%N)" > "$work/password"
export PBAK_REPOSITORY="$work/repo" PBAK_PASSWORD_FILE="$work/password"
set -x
"$pbak" init
"$pbak" backup "$src"
"$pbak" backup "$src"          # unchanged: reuses everything
"$pbak" snapshots
"$pbak" restore latest --target "$work/restore" --verify
diff -r --no-dereference "$src" "$work/restore$src"
"$pbak" check --read-data
set +x
echo "OK: $src backed up to $work/repo and restored identically into $work/restore"
