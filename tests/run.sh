#!/usr/bin/env bash
# The whole test suite: installs what it needs, builds every binary once,
# then runs unit, storage-conformance and end-to-end tests.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
if [ -x scripts/test-env.sh ]; then
    # Private containerd and image registry for the runtime tests; it prints
    # the environment the tests read.
    env_lines="$(scripts/test-env.sh)"
    set -a
    eval "$env_lines"
    set +a
fi

cargo fmt --all -- --check
# Built once here; the end-to-end tests start these binaries.
cargo build --locked --workspace --bins
cargo test --locked --workspace --no-fail-fast
