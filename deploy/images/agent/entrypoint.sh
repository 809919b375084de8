#!/bin/sh
# PID 2 of the berth-agent image (tini is PID 1): starts containerd, waits
# for its socket, reads the join token from a file if asked to, runs
# berth-agent with the container's arguments, and on SIGTERM stops the agent
# first, then containerd. Running tasks live and die with this container:
# they are in its PID namespace.
set -u
SOCK=/run/containerd/containerd.sock
log() { echo "agent-entrypoint: $*" >&2; }
is_num() { case "$1" in ''|*[!0-9]*) return 1 ;; esac; }

mkdir -p /run/containerd /var/lib/containerd /tmp

# runc creates a cgroup per task container. Without --privileged Docker
# mounts the cgroup hierarchies read-only; with CAP_SYS_ADMIN they can be
# made writable again (see deploy/compose/docker-compose.yml for why the
# agent is not simply privileged).
for m in $(awk '$3 == "cgroup" || $3 == "cgroup2" {print $2}' /proc/mounts); do
    if ! touch "$m/.berth-rw-probe" 2>/dev/null; then
        mount -o remount,rw,bind "$m" 2>/dev/null \
            || log "warning: cannot make $m writable; tasks will not start (CAP_SYS_ADMIN missing?)"
    else
        rm -f "$m/.berth-rw-probe"
    fi
done

# cgroup v2: processes may not sit in a cgroup whose controllers are handed
# to children, so move everything already here into a leaf first (what
# docker-in-docker does). cgroup v1 needs nothing.
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
    mkdir -p /sys/fs/cgroup/init
    for pid in $(cat /sys/fs/cgroup/cgroup.procs); do
        echo "$pid" > /sys/fs/cgroup/init/cgroup.procs 2>/dev/null || true
    done
    sed -e 's/ / +/g' -e 's/^/+/' < /sys/fs/cgroup/cgroup.controllers \
        > /sys/fs/cgroup/cgroup.subtree_control 2>/dev/null \
        || log "warning: could not delegate cgroup controllers (not privileged?)"
fi

# Bridge-mode tasks: the CNI plugins write sysctls in this container's
# network namespace (portmap's route_localnet, the bridge's forwarding),
# which Docker's read-only /proc/sys refuses unless the container is
# privileged or has `--security-opt systempaths=unconfined`, which compose
# files cannot ask for. With CAP_SYS_ADMIN it can be made writable here, as
# the cgroup mounts are above; the container is nearly privileged already.
if awk '$2 == "/proc/sys" {print $4}' /proc/mounts | grep -q '^ro'; then
    mount -o remount,rw,bind /proc/sys 2>/dev/null \
        || log "warning: /proc/sys is read-only and cannot be made writable (CAP_SYS_ADMIN missing?); bridge-mode tasks will fail to start"
fi

containerd --config /etc/containerd/config.toml --log-level "${CONTAINERD_LOG_LEVEL:-warn}" &
CTRD=$!
i=0
until ctr --address "$SOCK" version >/dev/null 2>&1; do
    if ! kill -0 "$CTRD" 2>/dev/null; then
        log "containerd exited at start (is the container privileged, and /var/lib/containerd a volume?)"
        exit 1
    fi
    i=$((i + 1))
    if [ "$i" -ge 300 ]; then
        log "containerd did not answer on $SOCK within 30s"
        exit 1
    fi
    sleep 0.1
done
export BERTH_CONTAINERD_SOCK="${BERTH_CONTAINERD_SOCK:-$SOCK}"

if [ -z "${BERTH_JOIN_TOKEN:-}" ] && [ -n "${BERTH_JOIN_TOKEN_FILE:-}" ]; then
    identity="${BERTH_AGENT_DATA_DIR:-/var/lib/berth-agent/identity}/identity.json"
    wait_s=${BERTH_JOIN_TOKEN_WAIT:-300}
    i=0
    # Without an identity the agent cannot start without a token: wait for
    # it. With one the token is only a fallback (expired certificate).
    while [ ! -s "$BERTH_JOIN_TOKEN_FILE" ] && [ ! -f "$identity" ]; do
        if [ "$i" -ge "$wait_s" ]; then
            log "no join token in $BERTH_JOIN_TOKEN_FILE after ${wait_s}s and no identity in $identity"
            kill -TERM "$CTRD" 2>/dev/null
            exit 1
        fi
        [ $((i % 15)) -eq 0 ] && log "waiting for the join token in $BERTH_JOIN_TOKEN_FILE"
        i=$((i + 1))
        sleep 1
    done
    if [ -s "$BERTH_JOIN_TOKEN_FILE" ]; then
        BERTH_JOIN_TOKEN=$(cat "$BERTH_JOIN_TOKEN_FILE")
        export BERTH_JOIN_TOKEN
    fi
fi
# berth-agent reads BERTH_JOIN_TOKEN_FILE itself as --token-file and deletes
# that file once registered; here the file is the bootstrap service's, shared
# by every agent of the compose cluster, so the agent gets the token only.
unset BERTH_JOIN_TOKEN_FILE

# BERTH_REGISTRY_FORWARD="PORT=HOST:PORT ...": plain TCP forwarders from
# this container's port PORT to HOST:PORT, so that tasks may name a private
# registry as localhost:PORT/..., which the agent always reaches over plain
# HTTP (deploy/examples use localhost:5000). Without it, a plain-HTTP
# registry must be named insecure for the agent.
FORWARDERS=
for fw in ${BERTH_REGISTRY_FORWARD:-}; do
    port=${fw%%=*}
    target=${fw#*=}
    thost=${target%:*}
    tport=${target##*:}
    if ! is_num "$port" || ! is_num "$tport" || [ -z "$thost" ] || [ "$target" = "$tport" ]; then
        log "ignoring BERTH_REGISTRY_FORWARD entry $fw (want PORT=HOST:PORT)"
        continue
    fi
    nc -ll -p "$port" -e nc "$thost" "$tport" &
    FORWARDERS="$FORWARDERS $!"
    log "forwarding localhost:$port to $target"
done

berth-agent "$@" &
AGENT=$!
stopping=0
trap 'stopping=1; kill -TERM "$AGENT" 2>/dev/null' TERM INT
while kill -0 "$AGENT" 2>/dev/null; do
    if [ "$stopping" = 0 ] && ! kill -0 "$CTRD" 2>/dev/null; then
        log "containerd exited; stopping the agent"
        stopping=1
        kill -TERM "$AGENT" 2>/dev/null
    fi
    sleep 1 &
    wait $! 2>/dev/null
done
wait "$AGENT"
rc=$?
[ "$stopping" = 0 ] && log "berth-agent exited with status $rc"

# The container is going away, and its tasks with it (they live in its PID
# namespace): stop them the way a host shutdown would, SIGTERM first, so
# runc removes their cgroups. Their containerd records stay for the agent
# to reconcile on the next start.
NS=${BERTH_CONTAINERD_NAMESPACE:-berth}
tasks=$(ctr --address "$SOCK" -n "$NS" tasks ls -q 2>/dev/null)
if [ -n "$tasks" ]; then
    log "stopping $(echo "$tasks" | wc -l) task container(s)"
    for t in $tasks; do ctr --address "$SOCK" -n "$NS" tasks kill -s SIGTERM "$t" >/dev/null 2>&1; done
    i=0
    while [ "$i" -lt 100 ] && ctr --address "$SOCK" -n "$NS" tasks ls 2>/dev/null | grep -q RUNNING; do
        i=$((i + 1))
        sleep 0.1
    done
    for t in $tasks; do ctr --address "$SOCK" -n "$NS" tasks delete -f "$t" >/dev/null 2>&1; done
fi
for pid in $FORWARDERS; do kill "$pid" 2>/dev/null; done
kill -TERM "$CTRD" 2>/dev/null
i=0
while kill -0 "$CTRD" 2>/dev/null && [ "$i" -lt 100 ]; do
    i=$((i + 1))
    sleep 0.1
done
exit "$rc"
