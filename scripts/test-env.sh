#!/usr/bin/env bash
# Test environment for berth-agent's containerd tests: a PRIVATE containerd
# (own root, state, sockets; the CRI plugin off) and a private registry on a
# loopback port. Idempotent: what already answers is left as it is. Run as
# root. Prints the env lines the tests read, e.g.
#   eval "$(scripts/test-env.sh)"
# Everything lives under $BERTH_TEST_DIR (default /tmp/berth-test) so it never
# clashes with a system containerd or Docker's.
set -euo pipefail

BASE=${BERTH_TEST_DIR:-/tmp/berth-test}
CTRD_DIR=$BASE/containerd
SOCK=$CTRD_DIR/containerd.sock
REG_DIR=$BASE/registry
REG_ADDR=${BERTH_TEST_REGISTRY_ADDR:-127.0.0.1:5000}
# A second registry that demands basic auth (htpasswd), for the auth tests.
AUTH_DIR=$BASE/registry-auth
AUTH_ADDR=${BERTH_TEST_AUTH_REGISTRY_ADDR:-127.0.0.1:5001}
AUTH_USER=berth
AUTH_PASS=berth-test-password

log() { echo "test-env: $*" >&2; }

if [ "$(id -u)" != 0 ]; then
    log "must run as root (containerd and runc need it)"
    exit 1
fi

missing=()
command -v containerd >/dev/null || missing+=(containerd)
command -v runc >/dev/null || missing+=(runc)
command -v docker-registry >/dev/null || missing+=(docker-registry)
command -v htpasswd >/dev/null || missing+=(apache2-utils)
if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update >&2
    # policy-rc.d may refuse to start the packaged services; we start our own.
    apt-get install -y --no-install-recommends "${missing[@]}" >&2
fi

mkdir -p "$CTRD_DIR/root" "$CTRD_DIR/state" "$REG_DIR/data" "$AUTH_DIR/data"

containerd_up() { ctr --address "$SOCK" version >/dev/null 2>&1; }
# registry_up ADDR EXPECTED_STATUS
registry_up() {
    # bash's /dev/tcp keeps this free of curl/wget; the subshell keeps the
    # refused-connection noise out of the output.
    (
        addr=$1 host=${1%:*} port=${1##*:}
        exec 3<>"/dev/tcp/$host/$port" || exit 1
        printf 'GET /v2/ HTTP/1.0\r\nHost: %s\r\n\r\n' "$addr" >&3
        read -r -t 5 status <&3 || true
        [[ "$status" == *" $2"* ]]
    ) 2>/dev/null
}

if ! containerd_up; then
    cat > "$CTRD_DIR/config.toml" <<CFG
version = 2
root = "$CTRD_DIR/root"
state = "$CTRD_DIR/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$SOCK"
[ttrpc]
  address = "$SOCK.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
CFG
    log "starting containerd on $SOCK"
    setsid containerd --config "$CTRD_DIR/config.toml" \
        --root "$CTRD_DIR/root" --state "$CTRD_DIR/state" --address "$SOCK" \
        >>"$CTRD_DIR/containerd.log" 2>&1 < /dev/null &
    echo $! > "$CTRD_DIR/containerd.pid"
fi

if ! registry_up "$REG_ADDR" 200; then
    cat > "$REG_DIR/config.yml" <<CFG
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $REG_DIR/data
  delete:
    enabled: true
http:
  addr: $REG_ADDR
CFG
    log "starting docker-registry on $REG_ADDR"
    setsid docker-registry serve "$REG_DIR/config.yml" \
        >>"$REG_DIR/registry.log" 2>&1 < /dev/null &
    echo $! > "$REG_DIR/registry.pid"
fi

if ! registry_up "$AUTH_ADDR" 401; then
    htpasswd -Bbc "$AUTH_DIR/htpasswd" "$AUTH_USER" "$AUTH_PASS" 2>/dev/null
    cat > "$AUTH_DIR/config.yml" <<CFG
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $AUTH_DIR/data
  delete:
    enabled: true
http:
  addr: $AUTH_ADDR
auth:
  htpasswd:
    realm: berth-test
    path: $AUTH_DIR/htpasswd
CFG
    log "starting docker-registry with basic auth on $AUTH_ADDR"
    setsid docker-registry serve "$AUTH_DIR/config.yml" \
        >>"$AUTH_DIR/registry.log" 2>&1 < /dev/null &
    echo $! > "$AUTH_DIR/registry.pid"
fi

for _ in $(seq 1 100); do
    if containerd_up && registry_up "$REG_ADDR" 200 && registry_up "$AUTH_ADDR" 401; then
        echo "BERTH_TEST_CONTAINERD_SOCK=$SOCK"
        echo "BERTH_TEST_REGISTRY=$REG_ADDR"
        echo "BERTH_TEST_AUTH_REGISTRY=$AUTH_ADDR"
        echo "BERTH_TEST_AUTH_USER=$AUTH_USER"
        echo "BERTH_TEST_AUTH_PASSWORD=$AUTH_PASS"
        exit 0
    fi
    sleep 0.2
done
containerd_up || { log "containerd did not answer on $SOCK; see $CTRD_DIR/containerd.log"; tail -20 "$CTRD_DIR/containerd.log" >&2 || true; }
registry_up "$REG_ADDR" 200 || { log "registry did not answer on $REG_ADDR; see $REG_DIR/registry.log"; tail -20 "$REG_DIR/registry.log" >&2 || true; }
registry_up "$AUTH_ADDR" 401 || { log "auth registry did not answer on $AUTH_ADDR; see $AUTH_DIR/registry.log"; tail -20 "$AUTH_DIR/registry.log" >&2 || true; }
exit 1
