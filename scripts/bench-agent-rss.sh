#!/usr/bin/env bash
# Benchmark (not a test): resident memory of the real berth-agent while it
# runs N tasks through containerd, next to a `berthd dev` control plane, and
# of the tasks' log drivers (berth-logd, one per container, children of the
# shims). Prints the figures, checks them against the targets (agent plus
# all drivers' share at most 20 MiB with 20 tasks; each driver's share at
# most 1 MiB) and rewrites the agent-rss section of docs/benchmarks.md.
#   scripts/bench-agent-rss.sh [N]        (default 20; needs root and containerd)
# Honors CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
tasks=${1:-20}
port=7690
work=$(mktemp -d /tmp/berth-agent-rss.XXXXXX)
triple="$(uname -m)-unknown-linux-gnu"
target=${CARGO_TARGET_DIR:-target}

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

cargo build --locked --release -q -p berth-server -p berth-cli -p berth-agent -p berth-logd
RUSTFLAGS='-C target-feature=+crt-static' cargo build --locked --release -q -p berth-testapp \
    --target "$triple" --target-dir target/testapp-static
mkdir -p "$work/data/images"
"$target/release/berth-agent" image pack --binary "target/testapp-static/$triple/release/berth-testapp" \
    --tag localhost/berth/hello:1 --out "$work/data/images/hello.tar" >/dev/null
"$target/release/berthd" dev --data-dir "$work/data" --listen "127.0.0.1:$port" >"$work/dev.out" 2>"$work/dev.err" &

export BERTH_ENDPOINT=127.0.0.1:$port BERTH_CA_CERT=$work/data/pki/ca.crt
for _ in $(seq 100); do [ -s "$work/data/pki/admin.token" ] && break; sleep 0.2; done
BERTH_TOKEN=$(cat "$work/data/pki/admin.token"); export BERTH_TOKEN
berth=$target/release/berth
for _ in $(seq 100); do
    $berth instance list -o json 2>/dev/null | grep -q '"ACTIVE"' && break
    sleep 0.3
done
agent_pid=$(pgrep -f "berth-agent --server 127.0.0.1:$port" | head -1)
# KiB from /proc/PID/smaps_rollup: Rss, Pss (shared pages divided among the
# processes that map them) and Anonymous (heap, stacks; the rest of Rss is
# file-backed: the binary's and libraries' pages).
smaps() { awk -v f="$2:" '$1 == f {print $2}' "/proc/$1/smaps_rollup"; }
mib() { awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; }
idle=$(smaps "$agent_pid" Rss)
$berth taskdef register -f deploy/examples/hello.json >/dev/null
$berth task run --taskdef hello --count "$tasks" >/dev/null
for _ in $(seq 200); do
    running=$($berth task list --status RUNNING -o json | grep -c '"id"' || true)
    [ "$running" -ge "$tasks" ] && break
    sleep 0.3
done
[ "$running" -ge "$tasks" ] || { echo "only $running of $tasks tasks RUNNING" >&2; cat "$work/data/agent.log" >&2; exit 1; }
sleep 10
busy=$(smaps "$agent_pid" Rss)
busy_pss=$(smaps "$agent_pid" Pss)
busy_anon=$(smaps "$agent_pid" Anonymous)
peak=$(awk '/VmHWM/ {print $2}' "/proc/$agent_pid/status")
threads=$(awk '/Threads/ {print $2}' "/proc/$agent_pid/status")
# This run's drivers: their log files are under its data dir.
drivers=$(pgrep -f "berth-logd .*$work" || true)
n=0 d_rss=0 d_pss=0 d_anon=0
for pid in $drivers; do
    r=$(smaps "$pid" Rss) p=$(smaps "$pid" Pss) a=$(smaps "$pid" Anonymous)
    [ -n "$r" ] || continue
    n=$((n + 1)) d_rss=$((d_rss + r)) d_pss=$((d_pss + p)) d_anon=$((d_anon + a))
done
[ "$n" -ge "$tasks" ] || { echo "found $n berth-logd processes for $tasks tasks" >&2; exit 1; }
total=$((busy + d_pss))
met() { awk -v a="$1" -v b="$2" 'BEGIN {print (a <= b) ? "yes" : "**no**"}'; }
per_pss=$((d_pss / n))

report="Measured $(date -u '+%Y-%m-%d %H:%M UTC') on $(nproc) cores, $(awk '/MemTotal/ {print int($2/1048576)}' /proc/meminfo) GiB, containerd $(containerd --version | awk '{print $3}'): \`scripts/bench-agent-rss.sh $tasks\` starts \`berthd dev\` (control plane and the real berth-agent on containerd), runs $tasks tasks of \`deploy/examples/hello.json\` and, 10 s after all of them are RUNNING, reads /proc/PID/smaps_rollup of the agent and of the $n \`berth-logd\` log drivers (one per container, children of the shims). RSS counts every page a process maps; PSS divides each shared page (the driver's binary and libc, mapped by all $n) among the processes that share it, so the drivers' PSS is their combined real cost; anonymous memory is private (heap, stacks), the rest of RSS is file-backed.

| process | RSS (MiB) | PSS (MiB) | anonymous (MiB) | target | met |
|---|---:|---:|---:|---|---|
| berth-agent, registered, idle | $(mib "$idle") | | | | |
| berth-agent, $tasks tasks RUNNING ($threads threads) | $(mib "$busy") | $(mib "$busy_pss") | $(mib "$busy_anon") | | |
| berth-agent, peak (VmHWM) | $(mib "$peak") | | | | |
| one berth-logd (mean of $n) | $(mib $((d_rss / n))) | $(mib "$per_pss") | $(mib $((d_anon / n))) | PSS at most 1 MiB | $(met "$per_pss" 1024) |
| all $n berth-logd | $(mib "$d_rss") | $(mib "$d_pss") | $(mib "$d_anon") | | |
| agent RSS + all drivers' PSS | $(mib "$total") | | | at most 20 MiB | $(met "$total" 20480) |"
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
