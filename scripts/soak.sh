#!/usr/bin/env bash
# The soak (not in CI): 100 leader kills with kill -9 under continuous
# writes from 4 clients, then 20 agent kills with tasks running, on real
# berthd and berth-agent processes and a private containerd. Prints the
# report and writes it to docs/soak.md. Run as root from the repository.
#   BERTH_SOAK_LEADER_KILLS=100 BERTH_SOAK_AGENT_KILLS=20 BERTH_SOAK_CLIENTS=4
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
set -a
eval "$(bash scripts/test-env.sh)"
set +a
cargo build --bins
log=$(mktemp)
started=$(date -u +%Y-%m-%dT%H:%MZ)
status=0
BERTH_SOAK_LEADER_KILLS=${BERTH_SOAK_LEADER_KILLS:-100} BERTH_SOAK_AGENT_KILLS=${BERTH_SOAK_AGENT_KILLS:-20} \
    cargo test -p berth-e2e --test soak -- --nocapture --test-threads 1 2>&1 | tee "$log" || status=$?
{
    echo "# Soak results"
    echo
    echo "Written by \`scripts/soak.sh\` (CI runs a short round of the same tests) on $started, at $(git rev-parse --short HEAD),"
    echo "on $(nproc) cores. Each line is one run of the test named in it (tests/tests/soak.rs):"
    echo "lost and duplicated must be 0; unavailability is the longest stretch without an"
    echo "acknowledged write around each leader kill, which includes the election and the"
    echo "clients' own retry pauses (20 ms), on a shared machine."
    echo
    echo '```'
    grep '^SOAK ' "$log" || echo "no SOAK line: the run failed (exit $status)"
    echo '```'
    echo
    echo "Exit status: $status"
} > docs/soak.md
cat docs/soak.md
exit $status
