#!/usr/bin/env bash
# The whole test suite: installs missing Debian packages, then runs every test, including the
# ones that boot real QEMU. With CI set, a missing tool fails a test instead of skipping it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo test --workspace --locked "$@"
