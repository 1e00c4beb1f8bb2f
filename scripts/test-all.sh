#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what the tests need (Debian packages), checks
# formatting and lints, and runs every test. Needs root for loop devices, mounts and device nodes.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"

need=(btrfs-progs rsync attr acl util-linux python3-venv faketime tzdata fuse3 systemd nix-bin groff-base)
missing=()
for p in "${need[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# Loop devices for the Btrfs tests (a fresh VM may have only the control device).
$SUDO modprobe loop 2>/dev/null || true
$SUDO modprobe btrfs 2>/dev/null || true

# A real S3 server (moto from PyPI, in /opt/pbak-moto) on 127.0.0.1 for tests/s3.rs.
s3_env=$(./scripts/s3-server.sh start)
eval "$s3_env"
# prometheus_client's own parser checks the metrics file of `pbak status` (tests/accounting.rs).
/opt/pbak-moto/bin/python -c 'import prometheus_client' 2>/dev/null ||
  /opt/pbak-moto/bin/pip install -q --disable-pip-version-check prometheus_client >&2
trap './scripts/s3-server.sh stop >/dev/null 2>&1 || true' EXIT

cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings
if [ "$(id -u)" = 0 ]; then
  cargo test --all-targets
else
  cargo test --all-targets --no-run
  $SUDO -E env "PATH=$PATH" cargo test --all-targets
fi
