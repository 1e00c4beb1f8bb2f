#!/usr/bin/env bash
# Build damaged local repositories, one kind of damage each, for trying `pbak check` and
# `pbak repair` by hand; tests/repair.rs builds its fixtures with this script too.
#
# Usage: scripts/damage-fixtures.sh OUTDIR [FIXTURE...]   (default: every fixture)
#   index-deleted          one index file deleted
#   index-truncated        one index file cut to half its length
#   pack-deleted           one data pack deleted
#   pack-bit-flipped       one bit flipped in the header of one data pack
#   blob-bit-flipped       one bit flipped inside one data blob (the middle of the first
#                          chunk of DAMAGE_FILE, else of the first data pack's blob area):
#                          only reading the data finds it
#   tree-missing           the tree pack of the first backup deleted and that snapshot
#                          forgotten: the second snapshot's unchanged subtrees are gone
#   snapshot-tree-missing  the tree pack of the second backup deleted: its root tree is gone
# Each lands in OUTDIR/FIXTURE/repo, with OUTDIR/FIXTURE/DAMAGE saying what was done (its
# last word is the object changed). The tree fixtures' second backup excludes one file,
# named in OUTDIR/FIXTURE/EXCLUDED, so it has new trees of its own.
#
# Environment: SRC, the directory backed up (default: a small generated tree in
# OUTDIR/src); DAMAGE_FILE, a file of SRC whose first chunk (or its pack) the pack and
# blob fixtures damage (default: the first data pack by name); PBAK, the binary (default: target/debug/pbak,
# built if missing);
# PBAK_PASSWORD (default "pbak-fixtures", also written to OUTDIR/password). Needs python3.
# Every command runs with --no-cache, so no local cache holds a copy of what was damaged.
set -euo pipefail
[ $# -ge 1 ] || { sed -n '2,/^set /{/^#/p}' "$0" >&2; exit 2; }
out=$(mkdir -p "$1" && realpath "$1"); shift
fixtures=("$@")
[ ${#fixtures[@]} -gt 0 ] || fixtures=(index-deleted index-truncated pack-deleted pack-bit-flipped blob-bit-flipped tree-missing snapshot-tree-missing)
root=$(cd "$(dirname "$0")/.." && pwd)
pbak=${PBAK:-$root/target/debug/pbak}
[ -x "$pbak" ] || (cd "$root" && cargo build --quiet)
unset PBAK_PASSWORD_FILE PBAK_PASSWORD_COMMAND PBAK_REPOSITORY
export PBAK_PASSWORD=${PBAK_PASSWORD:-pbak-fixtures}
install -m 600 /dev/null "$out/password" && printf '%s\n' "$PBAK_PASSWORD" > "$out/password"

if [ -z "${SRC:-}" ]; then
  SRC=$out/src
  if [ ! -d "$SRC" ]; then
    mkdir -p "$SRC/dir/sub" "$SRC/docs"
    head -c 3000000 /dev/urandom > "$SRC/dir/big.bin"
    for i in $(seq 1 20); do head -c $((i * 20000)) /dev/urandom > "$SRC/docs/file$i"; done
    seq 1 100000 > "$SRC/dir/sub/numbers"
    echo hello > "$SRC/small.txt"
  fi
fi
SRC=$(realpath "$SRC")

p() { "$pbak" --no-cache -q -r "$repo" "$@"; }

# Pack ids (hex), from every index file: `packs kind Data|Tree`, the packs of that kind;
# `packs blob HEX`, the packs holding that blob; `packs place HEX`, "PACK OFFSET LENGTH" of
# each copy of that blob.
packs() {
  for f in "$repo"/index/*; do p cat index "$(basename "$f")"; done |
    python3 -c '
import json, sys
dec, text, (mode, want) = json.JSONDecoder(), sys.stdin.read(), sys.argv[1:]
found, i = set(), 0
while i < len(text):
    if text[i].isspace():
        i += 1
        continue
    index, i = dec.raw_decode(text, i)
    for pk in index:
        b = pk["blobs"]
        if mode == "place":
            found.update("%s %d %d" % (pk["pack"], x["offset"], x["length"]) for x in b if x["id"] == want)
        elif (b and b[0]["type"] == want) if mode == "kind" else any(x["id"] == want for x in b):
            found.add(pk["pack"])
print("\n".join(sorted(found)))
' "$1" "$2"
}

# The first chunk of $DAMAGE_FILE (a file of $SRC), as hex.
damage_file_blob() {
  local blob
  blob=$(p cat tree "latest:$(dirname "$DAMAGE_FILE")" | python3 -c '
import json, sys
name = sys.argv[1].encode("utf-8", "surrogateescape")
for n in json.load(sys.stdin)["tree"]["nodes"]:
    if bytes(n["name"]) == name and n["content"]:
        print(bytes(n["content"][0]).hex())
' "$(basename "$DAMAGE_FILE")")
  [ -n "$blob" ] || { echo "DAMAGE_FILE $DAMAGE_FILE holds no data in the snapshot" >&2; exit 1; }
  echo "$blob"
}

# The data pack to damage: the one holding the first chunk of $DAMAGE_FILE if set, else the
# first by name.
victim_data_pack() {
  [ -n "${DAMAGE_FILE:-}" ] || { packs kind Data | head -1; return; }
  packs blob "$(damage_file_blob)" | head -1
}

pack_path() { echo "data/${1:0:2}/$1"; }

# A fresh repository in $dir/repo with one backup of $SRC (1 MiB packs: several of them).
fresh() {
  dir=$out/$1 repo=$out/$1/repo
  rm -rf "$dir" && mkdir -p "$dir"
  p init --kdf-memory-mib 1 --kdf-iterations 1 --pack-size-mib 1 >/dev/null
  p backup "$SRC" >/dev/null
}

# A second backup without one file, so the root tree and the excluded file's ancestors are
# new while every other subtree is shared with the first backup.
second_backup() {
  excluded=$(find "$SRC" -mindepth 2 -type f | LC_ALL=C sort | head -1)
  [ -n "$excluded" ] || excluded=$(find "$SRC" -type f | LC_ALL=C sort | head -1)
  printf '%s\n' "$excluded" > "$dir/EXCLUDED"
  p backup --exclude "$excluded" "$SRC" >/dev/null
}

damage() { local f=$1; shift; printf '%s\n' "$*" > "$dir/DAMAGE"; echo "$f: $*" >&2; }

for f in "${fixtures[@]}"; do
  case $f in
    index-deleted)
      fresh "$f"
      victim=$(cd "$repo" && find index -type f | LC_ALL=C sort | head -1)
      rm "$repo/$victim"
      damage "$f" deleted "$victim" ;;
    index-truncated)
      fresh "$f"
      victim=$(cd "$repo" && find index -type f | LC_ALL=C sort | head -1)
      truncate -s $(($(stat -c %s "$repo/$victim") / 2)) "$repo/$victim"
      damage "$f" truncated "$victim" ;;
    pack-deleted)
      fresh "$f"
      victim=$(pack_path "$(victim_data_pack)")
      rm "$repo/$victim"
      damage "$f" deleted "$victim" ;;
    pack-bit-flipped)
      fresh "$f"
      victim=$(pack_path "$(victim_data_pack)")
      python3 - "$repo/$victim" <<'EOF'
import sys
path = sys.argv[1]
b = bytearray(open(path, "rb").read())
hlen = int.from_bytes(b[-4:], "little")
b[len(b) - 4 - hlen // 2] ^= 0x10  # one bit in the middle of the sealed header
open(path, "wb").write(bytes(b))
EOF
      damage "$f" flipped one bit in the header of "$victim" ;;
    blob-bit-flipped)
      fresh "$f"
      at=
      if [ -n "${DAMAGE_FILE:-}" ]; then
        read -r pack offset length < <(packs place "$(damage_file_blob)" | head -1)
        at=$((offset + length / 2))
      else
        pack=$(packs kind Data | head -1)
      fi
      victim=$(pack_path "$pack")
      at=$(python3 - "$repo/$victim" "$at" <<'EOF'
import sys
path, at = sys.argv[1], sys.argv[2]
b = bytearray(open(path, "rb").read())
if not at:  # the middle of the blob area
    at = (len(b) - 4 - int.from_bytes(b[-4:], "little")) // 2
b[int(at)] ^= 0x10
open(path, "wb").write(bytes(b))
print(at)
EOF
)
      damage "$f" flipped one bit at byte "$at" of "$victim" ;;
    tree-missing | snapshot-tree-missing)
      fresh "$f"
      first_trees=$(packs kind Tree)
      first=$(p snapshots --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])')
      second_backup
      new_trees=$(comm -13 <(echo "$first_trees") <(packs kind Tree))
      if [ "$f" = tree-missing ]; then
        p forget "$first" >/dev/null
        victims=$first_trees
      else
        victims=$new_trees
      fi
      names=()
      for t in $victims; do names+=("$(pack_path "$t")"); rm "$repo/${names[-1]}"; done
      damage "$f" deleted the tree packs "${names[@]}" ;;
    *)
      echo "unknown fixture $f" >&2; exit 2 ;;
  esac
done
echo "fixtures in $out (password in $out/password)" >&2
