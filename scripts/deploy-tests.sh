#!/usr/bin/env bash
# The deployment tests, for CI machines with Docker (run as root): builds
# the static binaries and FROM-scratch images, runs the compose cluster's
# smoke test, then the agent installer's end-to-end test, the check of
# berthd's systemd unit (with the static berthd just built) and that unit
# installed as documented under systemd as PID 1 in a host-like container.
# Each cleans up after itself, also on failure. About 6 minutes once the
# caches are warm (the first run also debootstraps a Debian rootfs for the
# installer tests).
set -euo pipefail
cd "$(dirname "$0")/.."

deploy/images/build.sh
deploy/compose/smoke.sh --skip-build
deploy/install/test-install.sh
BERTHD=$(ls target/static/*/release/berthd | head -1) deploy/install/test-berthd-unit.sh
deploy/install/test-berthd-systemd.sh
