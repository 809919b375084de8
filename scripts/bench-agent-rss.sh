#!/usr/bin/env bash
# Benchmark (not a test): resident memory of the real berth-agent while it
# runs N tasks through containerd, next to a `berthd dev` control plane.
# Prints the figures and rewrites the agent-rss section of docs/benchmarks.md.
#   scripts/bench-agent-rss.sh [N]        (default 20; needs root and containerd)
set -euo pipefail
cd "$(dirname "$0")/.."
tasks=${1:-20}
port=7690
work=$(mktemp -d /tmp/berth-agent-rss.XXXXXX)
triple="$(uname -m)-unknown-linux-gnu"

cleanup() {
    # Task containers outlive their agent by design; stop them here first.
    if [ -S "$work/data/containerd/containerd.sock" ]; then
        ctr --address "$work/data/containerd/containerd.sock" -n berth tasks ls -q 2>/dev/null |
            xargs -r -n1 ctr --address "$work/data/containerd/containerd.sock" -n berth tasks kill -s SIGKILL 2>/dev/null || true
        sleep 1
    fi
    pkill -f "berthd dev --data-dir $work" 2>/dev/null || true
    sleep 1
    for pid in $(pgrep -f "$work" || true); do kill -9 "$pid" 2>/dev/null || true; done
    sleep 1
    mount | awk -v w="$work" 'index($3, w) == 1 {print $3}' | xargs -r -n1 umount -l 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

cargo build --locked --release -q -p berth-server -p berth-cli -p berth-agent
RUSTFLAGS='-C target-feature=+crt-static' cargo build --locked --release -q -p berth-testapp \
    --target "$triple" --target-dir target/testapp-static
mkdir -p "$work/data/images"
target/release/berth-agent image pack --binary "target/testapp-static/$triple/release/berth-testapp" \
    --tag localhost/berth/hello:1 --out "$work/data/images/hello.tar" >/dev/null
target/release/berthd dev --data-dir "$work/data" --listen "127.0.0.1:$port" >"$work/dev.out" 2>"$work/dev.err" &

export BERTH_ENDPOINT=127.0.0.1:$port BERTH_CA_CERT=$work/data/pki/ca.crt
for _ in $(seq 100); do [ -s "$work/data/pki/admin.token" ] && break; sleep 0.2; done
BERTH_TOKEN=$(cat "$work/data/pki/admin.token"); export BERTH_TOKEN
berth=target/release/berth
for _ in $(seq 100); do
    $berth instance list -o json 2>/dev/null | grep -q '"ACTIVE"' && break
    sleep 0.3
done
agent_pid=$(pgrep -f "berth-agent --server 127.0.0.1:$port" | head -1)
rss() { awk '/VmRSS/ {print int($2/1024)}' "/proc/$1/status"; }
idle=$(rss "$agent_pid")
$berth taskdef register -f deploy/examples/hello.json >/dev/null
$berth task run --taskdef hello --count "$tasks" >/dev/null
for _ in $(seq 200); do
    running=$($berth task list --status RUNNING -o json | grep -c '"id"' || true)
    [ "$running" -ge "$tasks" ] && break
    sleep 0.3
done
[ "$running" -ge "$tasks" ] || { echo "only $running of $tasks tasks RUNNING" >&2; cat "$work/data/agent.log" >&2; exit 1; }
sleep 10
busy=$(rss "$agent_pid")
peak=$(awk '/VmHWM/ {print int($2/1024)}' "/proc/$agent_pid/status")

report="Measured $(date -u '+%Y-%m-%d %H:%M UTC') on $(nproc) cores, $(awk '/MemTotal/ {print int($2/1048576)}' /proc/meminfo) GiB, containerd $(containerd --version | awk '{print $3}'): \`scripts/bench-agent-rss.sh $tasks\` starts \`berthd dev\` (control plane and the real berth-agent on containerd), runs $tasks tasks of \`deploy/examples/hello.json\` and reads the agent's VmRSS after 10 s with all of them RUNNING.

| berth-agent | resident (MiB) | target |
|---|---:|---|
| registered, idle | $idle | |
| $tasks tasks RUNNING | $busy | < 30 |
| peak (VmHWM) | $peak | |"
echo "$report"
python3 - "$report" <<'EOF'
import sys, re
path = "docs/benchmarks.md"
text = open(path).read()
section = "<!-- agent-rss:begin -->\n## The real agent's memory\n\n" + sys.argv[1] + "\n<!-- agent-rss:end -->"
if "<!-- agent-rss:begin -->" in text:
    text = re.sub(r"<!-- agent-rss:begin -->.*?<!-- agent-rss:end -->", lambda m: section, text, flags=re.S)
else:
    text = text.rstrip("\n") + "\n\n" + section + "\n"
open(path, "w").write(text)
EOF
