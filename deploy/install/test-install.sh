#!/usr/bin/env bash
# End-to-end test of deploy/install/install-agent.sh on host-like machines:
# containers made from a debootstrap'ed Debian rootfs (imported with
# `docker import`, so nothing is pulled from a registry), against a
# one-server control plane (berth/berthd image) on a private network.
#
#   A. a host running systemd as PID 1:
#      - bad tokens (malformed, CA digest mismatch) and an unreachable server
#        are refused with clear errors, before anything is installed
#      - install with --containerd-install (apt), the agent binary and its
#        log driver berth-logd downloaded from the control plane: instance
#        ACTIVE, id printed; the unit passes
#        `systemd-analyze verify`; agent.toml is 0600; the join token is in
#        no file on the host once registered
#      - a task from an image imported on the host runs, its logs are
#        readable (written by the installed berth-logd), and it keeps
#        running while the agent is stopped
#      - the installer installed the CNI plugins (Debian's
#        containernetworking-plugins): a bridge-mode task answers HTTP on
#        its dynamic host port
#      - re-run: same instance, nothing restarted, the token not written again
#      - uninstall: service, binaries, config and identity gone
#   B. a host without systemd:
#      - without --no-systemd: a clear error; without containerd and without
#        --containerd-install: a clear error
#      - --binary without a berth-logd beside it: a clear error
#      - --no-systemd --containerd-install --binary (berth-logd beside it):
#        foreground agent ACTIVE; re-run leaves the running agent alone;
#        uninstall stops it
#
# Needs root, docker, and debootstrap (installed with apt when missing); a
# Debian mirror must be reachable the first time (the rootfs is cached in
# target/test-host and as the image berth/test-host:bookworm). The mirror is
# DEBIAN_MIRROR if set, else the one this host's apt uses (its sources list:
# /etc/apt/sources.list, /etc/apt/sources.list.d/*.list and *.sources), so
# the test works wherever apt works; no address is built in. Builds the
# static binaries and the berthd image with deploy/images/build.sh when
# they are missing. Every wait is bounded; everything it starts is removed
# at the end, also on failure (--keep leaves it for debugging).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
KEEP=0
for arg in "$@"; do
    case "$arg" in
        --keep) KEEP=1 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "test-install: unknown argument $arg" >&2; exit 2 ;;
    esac
done

case "$(uname -m)" in
    x86_64) TRIPLE=x86_64-unknown-linux-gnu ;;
    aarch64) TRIPLE=aarch64-unknown-linux-gnu ;;
    *) echo "test-install: unsupported architecture $(uname -m)" >&2; exit 1 ;;
esac
BIN_DIR=$ROOT/target/static/$TRIPLE/release
P=berth-install-test
NET=$P-net
CP=$P-cp
HOST_A=$P-host-a
HOST_B=$P-host-b
WORK=$(mktemp -d /tmp/berth-install-test.XXXXXX)
TEST_NAME=test-install
# shellcheck source=deploy/test-lib.sh
. "$ROOT/deploy/test-lib.sh"
# shellcheck source=deploy/install/host-lib.sh
. "$ROOT/deploy/install/host-lib.sh"

[ "$(id -u)" = 0 ] || fail "run as root (debootstrap and privileged containers need it)"
command -v docker >/dev/null || fail "docker is missing"
docker info >/dev/null 2>&1 || fail "cannot talk to the Docker daemon"

cleanup() {
    local rc=$?
    set +e
    if [ $rc -ne 0 ]; then
        echo "---- control plane log (last 30 lines) ----" >&2
        docker logs --tail 30 "$CP" 2>&1 | sed 's/^/  cp: /' >&2
    fi
    if [ "$KEEP" = 1 ]; then
        log "--keep: containers $CP $HOST_A $HOST_B and network $NET are left running"
    else
        docker rm -f -v "$CP" "$HOST_A" "$HOST_B" >/dev/null 2>&1
        docker volume rm "$P-a-containerd" "$P-b-containerd" >/dev/null 2>&1
        docker network rm "$NET" >/dev/null 2>&1
    fi
    rm -rf "$WORK"
    [ $rc -eq 0 ] && log "PASSED"
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# expect_fail DESCRIPTION PATTERN COMMAND...: COMMAND must fail and say PATTERN.
expect_fail() {
    local what=$1 pattern=$2
    shift 2
    if "$@" >"$WORK/out" 2>&1; then
        fail "$what: succeeded, but should have failed: $(tail -3 "$WORK/out")"
    fi
    grep -q -- "$pattern" "$WORK/out" || fail "$what: failed without saying '$pattern': $(tail -3 "$WORK/out")"
    log "ok: $what is refused: $(grep -m1 -- "$pattern" "$WORK/out" | cut -c1-160)"
}


# ------------------------------------------------------------ prerequisites
STEP=prerequisites
if [ ! -x "$BIN_DIR/berthd" ] || [ ! -x "$BIN_DIR/berth-agent" ] || [ ! -x "$BIN_DIR/berth-logd" ] || ! docker image inspect berth/berthd:dev >/dev/null 2>&1; then
    log "building the static binaries and the berthd image"
    "$ROOT/deploy/images/build.sh" --only berthd
fi

STEP="host image"
ensure_host_image

# ------------------------------------------------------------ control plane
STEP="control plane"
docker rm -f -v "$CP" "$HOST_A" "$HOST_B" >/dev/null 2>&1 || true
docker network rm "$NET" >/dev/null 2>&1 || true
docker network create "$NET" >/dev/null
mkdir -p "$WORK/pki"
"$BIN_DIR/berthd" pki init --dir "$WORK/ca" >/dev/null
"$BIN_DIR/berthd" pki issue --dir "$WORK/ca" --node-id 1 --host "$CP" --host 127.0.0.1 --out "$WORK/pki" >/dev/null
docker run -d --name "$CP" --network "$NET" --network-alias "$CP" -e NO_COLOR=1 \
    -v "$WORK/pki:/pki:ro" berth/berthd:dev serve \
    --node-id 1 --data-dir /data --listen 0.0.0.0:7400 --advertise "$CP:7400" \
    --initial-cluster "1=$CP:7400" --pki-dir /pki --health-listen 0.0.0.0:7480 >/dev/null
cp_ready() { docker exec "$CP" berthd health --url http://127.0.0.1:7480/readyz; }
wait_for "control plane ready" 60 cp_ready
cli() {
    timeout 60 docker exec -e BERTH_ENDPOINT=127.0.0.1:7400 -e BERTH_CA_CERT=/pki/ca.crt \
        -e "BERTH_TOKEN=$(cat "$WORK/pki/admin.token")" "$CP" berth "$@"
}
# One token per host, each good for one registration (the default).
TOKEN=$(cli activation create --cluster default --expires 1h 2>/dev/null) \
    || fail "berth activation create failed"
TOKEN_B=$(cli activation create --cluster default --expires 1h 2>/dev/null) \
    || fail "berth activation create failed"
log "join tokens for activations $(echo "$TOKEN" | cut -d- -f2) and $(echo "$TOKEN_B" | cut -d- -f2)"
cli activation describe "$(echo "$TOKEN" | cut -d- -f2)" -o json | json 'd["maxRegistrations"]' | grep -qx 1 \
    || fail "an activation created without --max-registrations allows more than one registration"
# no_token_on HOST-FUNCTION TOKEN: the token's secret is in no file the
# installer or the agent keeps.
no_token_on() {
    local secret
    secret=$(echo "$2" | cut -d- -f3)
    if $1 grep -rqs -- "$secret" /etc/berth /var/lib/berth-agent; then
        fail "the join token is still on the host: $($1 grep -rls -- "$secret" /etc/berth /var/lib/berth-agent)"
    fi
    $1 test ! -e /etc/berth/join-token || fail "/etc/berth/join-token is still there after registration"
}
SERVER=$CP:7400
instance_status() { cli instance describe "$1" -o json | json 'd["status"]'; }

# -------------------------------------------------------- A: systemd host
STEP="host A (systemd) start"
docker volume create "$P-a-containerd" >/dev/null
docker run -d --name "$HOST_A" --hostname host-a --network "$NET" "${HOSTLIKE[@]}" \
    --tmpfs /run --tmpfs /run/lock --tmpfs /tmp \
    -v "$P-a-containerd:/var/lib/containerd" \
    -v "$ROOT/deploy/install:/berth-install:ro" \
    "$HOST_IMAGE" sh -c "$REMOUNT; exec /sbin/init" >/dev/null
wait_for "systemd running in host A" 90 systemd_up "$HOST_A"
in_a() { timeout 300 docker exec "$HOST_A" "$@"; }
install_a() { in_a /berth-install/install-agent.sh "$@"; }

STEP="host A refusals"
expect_fail "a malformed token" "malformed" install_a --server "$SERVER" --token BERTH1-nothex-xx-yy
WRONG=${TOKEN%-*}-$(printf '0%.0s' $(seq 1 64))
expect_fail "a token pinning another CA" "is not the one the join token pins" install_a --server "$SERVER" --token "$WRONG"
expect_fail "an unreachable server" "cannot reach any control-plane server" install_a --server "$CP:1" --token "$TOKEN"
for f in /usr/local/bin/berth-agent /usr/local/bin/berth-logd; do
    in_a test ! -e "$f" || fail "a refused install left $f behind"
done

STEP="host A install"
install_a --server "$SERVER" --token "$TOKEN" --attribute zone=test --attribute rack=7 \
    --containerd-install >"$WORK/a1.out" 2>"$WORK/a1.err" \
    || fail "install failed: $(tail -15 "$WORK/a1.err")"
ID_A=$(tail -1 "$WORK/a1.out")
# By digest: `docker exec` passes no stdin without -i.
[ "$(in_a sha256sum /usr/local/bin/berth-logd | cut -d' ' -f1)" = "$(sha256sum "$BIN_DIR/berth-logd" | cut -d' ' -f1)" ] \
    || fail "/usr/local/bin/berth-logd is not the control plane's berth-logd"
grep -q "berth-logd matches its published SHA-256" "$WORK/a1.err" \
    || fail "the installer did not check berth-logd against its published SHA-256"
log "ok: berth-logd downloaded, checked and installed beside berth-agent"
[ -n "$ID_A" ] || fail "the installer printed no instance id"
log "host A is instance $ID_A"
[ "$(instance_status "$ID_A")" = ACTIVE ] || fail "instance $ID_A is $(instance_status "$ID_A"), not ACTIVE"
# The installer's --attribute is the agent's report: seen as agent.NAME.
cli instance describe "$ID_A" -o json | json 'd["attributes"]' | grep -q '"agent.zone": "test"' \
    || fail "instance $ID_A lacks the agent-reported attribute agent.zone=test"
in_a systemd-analyze verify /etc/systemd/system/berth-agent.service >"$WORK/verify" 2>&1 \
    || fail "systemd-analyze verify: $(cat "$WORK/verify")"
log "ok: systemd-analyze verify berth-agent.service"
[ "$(in_a stat -c %a /etc/berth/agent.toml)" = 600 ] || fail "/etc/berth/agent.toml is not mode 0600"
no_token_on in_a "$TOKEN"
log "ok: the join token is in no file on host A once it is registered"
in_a systemctl is-enabled --quiet berth-agent.service || fail "berth-agent.service is not enabled"
[ "$(in_a curl -fsS --cacert /etc/berth/ca.crt "https://$SERVER/downloads/install-agent.sh" | head -1)" = '#!/usr/bin/env bash' ] \
    || fail "https://$SERVER/downloads/install-agent.sh does not serve the installer"
log "ok: the control plane serves the installer at /downloads/install-agent.sh"
diff <(in_a /berth-install/install-agent.sh --print-unit) "$ROOT/deploy/install/berth-agent.service" >/dev/null \
    || fail "the unit embedded in install-agent.sh differs from deploy/install/berth-agent.service"

STEP="host A task"
# A real task on the installed agent, from an image imported on the host
# (no registry): it must survive `systemctl stop berth-agent` (KillMode=process).
(cd "$ROOT" && RUSTFLAGS='-C target-feature=+crt-static' cargo build --locked --release -q \
    -p berth-testapp --target "$TRIPLE" --target-dir "$ROOT/target/testapp-static") \
    || fail "cargo build of berth-testapp failed"
mkdir -p "$WORK/testapp/rootfs/etc" "$WORK/testapp/rootfs/tmp"
install -m 0755 "$ROOT/target/testapp-static/$TRIPLE/release/berth-testapp" "$WORK/testapp/rootfs/berth-testapp"
printf 'root:x:0:0:root:/root:/berth-testapp\n' >"$WORK/testapp/rootfs/etc/passwd"
printf 'FROM scratch\nCOPY rootfs/ /\nENTRYPOINT ["/berth-testapp"]\nCMD ["serve"]\n' >"$WORK/testapp/Dockerfile"
docker build -q -t berth-install-test/testapp:1 "$WORK/testapp" >/dev/null 2>&1 || fail "docker build of the test image failed"
docker save -o "$WORK/testapp.tar" berth-install-test/testapp:1
docker rmi berth-install-test/testapp:1 >/dev/null 2>&1 || true
docker cp "$WORK/testapp.tar" "$HOST_A:/var/tmp/testapp.tar"   # /tmp is a tmpfs docker cp cannot see
in_a berth-agent image import /var/tmp/testapp.tar >/dev/null 2>&1 || fail "berth-agent image import failed"
cat >"$WORK/ticker.json" <<'JSON'
{"family": "ticker", "networkMode": "none",
 "containerDefinitions": [{"name": "app", "image": "docker.io/berth-install-test/testapp:1",
   "essential": true, "cpu": 64, "memory": 32, "command": ["ticker", "500"]}]}
JSON
docker cp "$WORK/ticker.json" "$CP:/ticker.json"
cli taskdef register -f /ticker.json >/dev/null || fail "taskdef register failed"
TASK=$(cli task start --taskdef ticker --instance "$ID_A" -o json | json 'd[0]["id"]') || fail "task start failed"
task_status() { cli task describe "$TASK" -o json | json 'd["lastStatus"]'; }
task_running() { [ "$(task_status)" = RUNNING ]; }
wait_for "task $TASK RUNNING on host A" 60 task_running
cli task logs "$TASK" | grep -q 'testapp: args=\["ticker"' || fail "berth task logs shows no output of the task"
in_a pgrep -f '^/usr/local/bin/berth-logd ' >/dev/null || fail "no berth-logd process writes the task's log"
in_a systemctl stop berth-agent.service
in_a ctr -n berth tasks ls | grep -q RUNNING || fail "stopping berth-agent stopped the task container"
log "ok: the task container kept running while berth-agent was stopped"
in_a systemctl start berth-agent.service
sleep 3
task_running || fail "task $TASK is $(task_status) after the agent came back"
log "ok: task $TASK still RUNNING after the agent restarted"

STEP="host A bridge task"
# The installer put the CNI plugins where the agent looks by default; a
# bridge-mode task (own netns on berth0, port published by portmap on a
# host port the control plane picks) answers on that port.
in_a test -x /usr/lib/cni/bridge || fail "the installer did not install the CNI plugins (/usr/lib/cni/bridge is missing)"
cat >"$WORK/web.json" <<'JSON'
{"family": "web", "networkMode": "bridge",
 "containerDefinitions": [{"name": "web", "image": "docker.io/berth-install-test/testapp:1",
   "essential": true, "cpu": 64, "memory": 32, "command": ["serve", "8080"],
   "environment": [{"name": "TESTAPP_REVISION", "value": "bridged"}],
   "portMappings": [{"containerPort": 8080, "protocol": "tcp"}]}]}
JSON
docker cp "$WORK/web.json" "$CP:/web.json"
cli taskdef register -f /web.json >/dev/null || fail "taskdef register of the bridge-mode task failed"
WEB=$(cli task start --taskdef web --instance "$ID_A" -o json | json 'd[0]["id"]') || fail "task start (bridge) failed"
web_status() { cli task describe "$WEB" -o json | json 'd["lastStatus"] + " " + str(d.get("stoppedReason"))'; }
web_running() { web_status | grep -q '^RUNNING ' || { web_status; return 1; }; }
wait_for "bridge-mode task $WEB RUNNING on host A" 60 web_running
WEB_PORT=$(cli task describe "$WEB" -o json | json 'd["networkBindings"][0]["hostPort"]')
[ "$WEB_PORT" -ge 49153 ] 2>/dev/null || fail "the bridge-mode task has no dynamic host port (got '$WEB_PORT')"
web_answers() { [ "$(in_a curl -fsS --max-time 3 "http://127.0.0.1:$WEB_PORT/revision")" = bridged ]; }
wait_for "the bridge-mode task answering on host port $WEB_PORT" 30 web_answers
cli task stop "$WEB" >/dev/null || fail "task stop $WEB failed"
web_stopped() { web_status | grep -q '^STOPPED ' || { web_status; return 1; }; }
wait_for "bridge-mode task $WEB STOPPED" 60 web_stopped

STEP="host A re-run"
PID1=$(in_a systemctl show -p MainPID --value berth-agent.service)
install_a --server "$SERVER" --token "$TOKEN" --attribute zone=test --attribute rack=7 \
    >"$WORK/a2.out" 2>"$WORK/a2.err" || fail "re-running the installer failed: $(tail -15 "$WORK/a2.err")"
[ "$(tail -1 "$WORK/a2.out")" = "$ID_A" ] || fail "the re-run printed $(tail -1 "$WORK/a2.out"), not $ID_A"
[ "$(in_a systemctl show -p MainPID --value berth-agent.service)" = "$PID1" ] \
    || fail "the re-run restarted an unchanged agent"
no_token_on in_a "$TOKEN"
log "ok: re-run is idempotent (same instance, agent pid $PID1 kept)"

STEP="host A agent restart"
in_a systemctl restart berth-agent.service
wait_for "instance $ID_A ACTIVE after systemctl restart" 60 bash -c "[ \"\$(docker exec $HOST_A curl -fsS http://127.0.0.1:7481/readyz)\" != '' ]"

STEP="host A uninstall"
install_a --uninstall >"$WORK/a3.out" 2>"$WORK/a3.err" || fail "uninstall failed: $(tail -5 "$WORK/a3.err")"
if in_a ctr -n berth tasks ls 2>/dev/null | grep -q RUNNING; then fail "uninstall left task containers running"; fi
grep -q "berth instance deregister $ID_A" "$WORK/a3.err" || fail "uninstall did not name the instance to deregister"
for f in /usr/local/bin/berth-agent /usr/local/bin/berth-logd /etc/berth/agent.toml /etc/systemd/system/berth-agent.service /var/lib/berth-agent; do
    in_a test ! -e "$f" || fail "uninstall left $f"
done
if in_a systemctl is-active --quiet berth-agent.service; then fail "berth-agent.service still active"; fi
cli instance deregister "$ID_A" >/dev/null || fail "deregister $ID_A failed"
log "ok: uninstalled, instance $ID_A deregistered"

# ------------------------------------------------------- B: no systemd
STEP="host B (no systemd)"
docker volume create "$P-b-containerd" >/dev/null
docker run -d --name "$HOST_B" --hostname host-b --network "$NET" "${HOSTLIKE[@]}" \
    --tmpfs /run --tmpfs /tmp -v "$P-b-containerd:/var/lib/containerd" \
    -v "$ROOT/deploy/install:/berth-install:ro" -v "$BIN_DIR/berth-agent:/opt/berth-agent:ro" \
    -v "$BIN_DIR/berth-logd:/opt/berth-logd:ro" -v "$BIN_DIR/berth-agent:/opt/alone/berth-agent:ro" \
    "$HOST_IMAGE" sh -c "$REMOUNT; exec sleep infinity" >/dev/null
in_b() { timeout 300 docker exec "$HOST_B" "$@"; }
install_b() { in_b /berth-install/install-agent.sh "$@"; }
expect_fail "a host without systemd" "re-run with --no-systemd" install_b --server "$SERVER" --token "$TOKEN_B"
expect_fail "a host without containerd" "containerd is not installed" \
    install_b --server "$SERVER" --token "$TOKEN_B" --no-systemd --binary /opt/berth-agent
expect_fail "--binary without berth-logd beside it" "no berth-logd at /opt/alone/berth-logd" \
    install_b --server "$SERVER" --token "$TOKEN_B" --no-systemd --binary /opt/alone/berth-agent

STEP="host B install (foreground)"
docker exec -d "$HOST_B" sh -c "/berth-install/install-agent.sh --server $SERVER --token $TOKEN_B --no-systemd \
    --containerd-install --binary /opt/berth-agent >/tmp/b1.out 2>/tmp/b1.err"
b_id() { in_b sh -c 'test -s /tmp/b1.out && tail -1 /tmp/b1.out'; }
wait_for "host B's installer to print an instance id" 240 b_id
ID_B=$(b_id)
log "host B is instance $ID_B"
[ "$(instance_status "$ID_B")" = ACTIVE ] || fail "instance $ID_B is not ACTIVE"
AGENT_PID=$(in_b cat /run/berth-agent.pid)
no_token_on in_b "$TOKEN_B"

STEP="host B re-run"
install_b --server "$SERVER" --token "$TOKEN_B" --no-systemd --binary /opt/berth-agent \
    >"$WORK/b2.out" 2>"$WORK/b2.err" || fail "re-run failed: $(tail -10 "$WORK/b2.err")"
[ "$(tail -1 "$WORK/b2.out")" = "$ID_B" ] || fail "the re-run printed $(tail -1 "$WORK/b2.out"), not $ID_B"
[ "$(in_b cat /run/berth-agent.pid)" = "$AGENT_PID" ] || fail "the re-run replaced the running agent"
log "ok: re-run left the running agent (pid $AGENT_PID) alone"

STEP="host B uninstall"
install_b --uninstall >"$WORK/b3.out" 2>"$WORK/b3.err" || fail "uninstall failed: $(tail -5 "$WORK/b3.err")"
if in_b kill -0 "$AGENT_PID" 2>/dev/null; then fail "the agent (pid $AGENT_PID) still runs after uninstall"; fi
in_b test ! -e /usr/local/bin/berth-agent || fail "uninstall left the binary"
in_b test ! -e /usr/local/bin/berth-logd || fail "uninstall left berth-logd"
wait_for "instance $ID_B DISCONNECTED after uninstall" 60 bash -c "[ \"\$(docker exec -e BERTH_ENDPOINT=127.0.0.1:7400 -e BERTH_CA_CERT=/pki/ca.crt -e BERTH_TOKEN=$(cat "$WORK/pki/admin.token") $CP berth instance describe $ID_B -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"status\"])')\" = DISCONNECTED ]"
cli instance deregister "$ID_B" >/dev/null || fail "deregister $ID_B failed"
STEP=finished
