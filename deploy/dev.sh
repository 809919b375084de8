#!/usr/bin/env bash
# One command to a running single-node Berth: installs build prerequisites,
# builds, and starts `berthd dev` (data in ./.berth, API on 127.0.0.1:7400).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
cargo build --locked --release -p berth-server -p berth-cli
echo "binaries: $(pwd)/target/release/berthd and $(pwd)/target/release/berth" >&2
exec target/release/berthd dev "$@"
