#!/usr/bin/env bash
# One command to a running single-node Berth with a local agent: installs
# build prerequisites, builds, packs the example image (no registry needed),
# and starts `berthd dev` (data in ./.berth, API on 127.0.0.1:7400).
# containerd: the system one if its socket answers; otherwise containerd and
# runc are installed from the distribution and berthd dev runs a private one
# under ./.berth (root is needed for either).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
if ! command -v containerd >/dev/null 2>&1 || ! command -v runc >/dev/null 2>&1; then
    if [ ! -S /run/containerd/containerd.sock ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing containerd and runc" >&2
        as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
        as_root apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq containerd runc >/dev/null
    fi
fi
cargo build --locked --release -p berth-server -p berth-cli -p berth-agent -p berth-logd
# The example image: a tiny static program, packed as an OCI tarball that the
# local agent imports at start.
triple="$(uname -m)-unknown-linux-gnu"
RUSTFLAGS='-C target-feature=+crt-static' cargo build --locked --release -p berth-testapp \
    --target "$triple" --target-dir target/testapp-static
data_dir="${BERTH_DATA_DIR:-.berth}"
mkdir -p "$data_dir/images"
target/release/berth-agent image pack --binary "target/testapp-static/$triple/release/berth-testapp" \
    --tag localhost/berth/hello:1 --out "$data_dir/images/hello.tar" >/dev/null
echo "binaries: $(pwd)/target/release/{berthd,berth,berth-agent,berth-logd}" >&2
exec target/release/berthd dev "$@"
