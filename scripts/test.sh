#!/usr/bin/env bash
# The whole test suite: installs missing Debian packages, then runs every test, including the
# ones that boot real QEMU. With CI set, a missing tool fails a test instead of skipping it.
# --no-fail-fast: every test binary runs even when an earlier one fails, so a red run shows
# all its failures at once.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo test --workspace --locked --no-fail-fast "$@"
