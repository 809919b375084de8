#!/usr/bin/env bash
# End-to-end smoke test of the compose cluster (deploy/compose), on its own
# compose project (berth-smoke) and ports, so it never touches a cluster
# you started yourself:
#
#   1. builds the images (deploy/images/build.sh) and `up -d`; waits until
#      every service is healthy and the bootstrap has run
#   2. the control plane has three reachable members and a leader; both
#      agents register and are ACTIVE
#   3. pushes a FROM-scratch test image (crates/testapp, static) to the
#      compose registry and runs a task from it: RUNNING, logs readable
#   4. load balancer: a bridge-mode service `web` of the test app (two
#      tasks on dynamic host ports, health-checked) behind berth-lb's
#      HAProxy (service `lb`); while a client sends a few HTTP requests a
#      second through the published LB port, a rolling deployment (v1 ->
#      v2), a switch to blue/green, and a blue/green canary deployment
#      (v2 -> v3). Fails on any failed request or non-200 answer; prints
#      the counts and the revisions seen in each phase, each of which must
#      end on its new revision
#      Meanwhile Prometheus (profile `monitoring`, on for the smoke test)
#      must have found all three servers and both agents through berthd's
#      service discovery and report service web's running tasks
#   5. stops the leader's container: a new leader is elected and writes
#      succeed against the other two; starts it again
#   6. disconnects an agent from the network: its instance goes
#      DISCONNECTED; reconnects it: ACTIVE again
#   7. rolling restart of the three servers while a loop writes: counts
#      failed writes and failure windows (at most one per restart)
#   8. `down` + `up`: task definitions and instances are still there
#   9. `down -v` (also on failure, via trap): nothing left behind
#
# Options: --skip-build (reuse the images and binaries), --keep (leave the
# cluster running at the end; `docker-compose -p berth-smoke down -v` removes
# it). Exit status 0 only when every step passed. Every wait is bounded.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
SKIP_BUILD=0
KEEP=0
for arg in "$@"; do
    case "$arg" in
        --skip-build) SKIP_BUILD=1 ;;
        --keep) KEEP=1 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "smoke: unknown argument $arg" >&2; exit 2 ;;
    esac
done

export COMPOSE_PROJECT_NAME=${BERTH_SMOKE_PROJECT:-berth-smoke}
export BERTH_API_PORT_1=${BERTH_SMOKE_PORT_1:-17401}
export BERTH_API_PORT_2=${BERTH_SMOKE_PORT_2:-17402}
export BERTH_API_PORT_3=${BERTH_SMOKE_PORT_3:-17403}
export BERTH_REGISTRY_PORT=${BERTH_SMOKE_REGISTRY_PORT:-15050}
export BERTH_LB_PORT=${BERTH_SMOKE_LB_PORT:-18080}
export BERTH_PROMETHEUS_PORT=${BERTH_SMOKE_PROMETHEUS_PORT:-19090}
# Prometheus too (every dc command, `down -v` included, sees it).
export COMPOSE_PROFILES=monitoring
export BERTH_TAG=${BERTH_TAG:-dev}
case "$(uname -m)" in
    x86_64) TRIPLE=x86_64-unknown-linux-gnu ;;
    aarch64) TRIPLE=aarch64-unknown-linux-gnu ;;
    *) echo "smoke: unsupported architecture $(uname -m)" >&2; exit 1 ;;
esac
BERTH=$ROOT/target/static/$TRIPLE/release/berth
WORK=$(mktemp -d /tmp/berth-smoke.XXXXXX)
TEST_NAME=smoke
# shellcheck source=deploy/test-lib.sh
. "$ROOT/deploy/test-lib.sh"

if docker compose version >/dev/null 2>&1; then
    COMPOSE=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then
    COMPOSE=(docker-compose)
else
    fail "neither 'docker compose' nor 'docker-compose' is installed"
fi
dc() { timeout 600 "${COMPOSE[@]}" --project-directory "$HERE" -f "$HERE/docker-compose.yml" "$@"; }
for tool in docker python3 curl timeout; do
    command -v "$tool" >/dev/null || fail "$tool is missing"
done

CLIENT=
cleanup() {
    local rc=$?
    set +e
    if [ -n "$CLIENT" ]; then
        kill "$CLIENT" 2>/dev/null
        wait "$CLIENT" 2>/dev/null
    fi
    if [ $rc -ne 0 ]; then
        echo "---- smoke failed; compose state and recent logs ----" >&2
        dc ps >&2
        dc logs --no-color --tail 80 >&2 2>&1
    fi
    if [ "$KEEP" = 1 ]; then
        log "--keep: the cluster stays up (${COMPOSE[*]} -p $COMPOSE_PROJECT_NAME down -v removes it)"
    else
        log "cleanup: down -v"
        dc down -v --remove-orphans >/dev/null 2>&1
        left=$(docker volume ls -q --filter "label=com.docker.compose.project=$COMPOSE_PROJECT_NAME")
        [ -z "$left" ] || echo "smoke: warning: volumes left behind: $left" >&2
    fi
    rm -rf "$WORK"
    if [ $rc -eq 0 ]; then log "PASSED"; fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM


berth() { timeout 60 "$BERTH" "$@"; }

container_of() { dc ps -q "$1"; }

# ------------------------------------------------------------------ 1. up
STEP="build"
if [ "$SKIP_BUILD" = 0 ]; then
    "$ROOT/deploy/images/build.sh" --tag "$BERTH_TAG"
fi
[ -x "$BERTH" ] || fail "$BERTH is missing (run without --skip-build)"
dc down -v --remove-orphans >/dev/null 2>&1 || true

STEP="up"
log "docker compose up -d (project $COMPOSE_PROJECT_NAME)"
dc up -d >"$WORK/up.log" 2>&1 || fail "compose up failed: $(tail -20 "$WORK/up.log")"

all_healthy() {
    local svc id state
    for svc in berthd-1 berthd-2 berthd-3 agent-1 agent-2 registry; do
        id=$(container_of "$svc")
        [ -n "$id" ] || { echo "$svc has no container"; return 1; }
        state=$(docker inspect -f '{{.State.Status}}/{{if .State.Health}}{{.State.Health.Status}}{{end}}' "$id")
        [ "$state" = running/healthy ] || { echo "$svc is $state"; return 1; }
    done
    # berth-lb has no health endpoint: running is what can be seen (it
    # exits when HAProxy does); step 4 checks that it serves.
    id=$(container_of lb)
    [ -n "$id" ] || { echo "lb has no container"; return 1; }
    state=$(docker inspect -f '{{.State.Status}}' "$id")
    [ "$state" = running ] || { echo "lb is $state"; return 1; }
    for svc in pki bootstrap; do
        id=$(dc ps -a -q "$svc")
        state=$(docker inspect -f '{{.State.Status}}/{{.State.ExitCode}}' "$id")
        [ "$state" = exited/0 ] || { echo "$svc is $state"; return 1; }
    done
}
wait_for "every service healthy, pki and bootstrap done" 240 all_healthy

dc run --rm --no-deps -T --entrypoint cat pki /ca/ca.crt >"$WORK/ca.crt" 2>/dev/null \
    || fail "cannot read the CA from the ca volume"
dc run --rm --no-deps -T --entrypoint cat pki /ca/admin.token >"$WORK/admin.token" 2>/dev/null \
    || fail "cannot read the admin token from the ca volume"
export BERTH_ENDPOINT=127.0.0.1:$BERTH_API_PORT_1,127.0.0.1:$BERTH_API_PORT_2,127.0.0.1:$BERTH_API_PORT_3
export BERTH_CA_CERT=$WORK/ca.crt
BERTH_TOKEN=$(cat "$WORK/admin.token")
export BERTH_TOKEN

# ------------------------------------------------------- 2. cluster, agents
STEP="cluster forms"
cluster_ok() {
    berth cluster status -o json | json 'd["leaderId"] is not None and len(d["members"]) == 3 and all(m["reachable"] for m in d["members"])' | grep -qx True
}
wait_for "3 reachable servers and a leader" 60 cluster_ok

STEP="agents register"
instances_active() {
    local want=$1
    berth instance list -o json | json "sum(1 for i in d if i['status'] == 'ACTIVE')" | grep -qx "$want"
}
wait_for "2 ACTIVE instances" 120 instances_active 2
berth instance list -o json >"$WORK/instances.json"
AGENT1_ID=$(dc run --rm --no-deps -T --entrypoint cat agent-1 /var/lib/berth-agent/identity/identity.json 2>/dev/null \
    | json 'd["instanceId"]') || fail "cannot read agent-1's identity.json"
log "agent-1 is instance $AGENT1_ID"

# ------------------------------------------------------------ 3. a real task
STEP="test image"
log "building the static test program and its image"
(cd "$ROOT" && RUSTFLAGS='-C target-feature=+crt-static' cargo build --locked --release -q \
    -p berth-testapp --target "$TRIPLE" --target-dir "$ROOT/target/testapp-static") \
    || fail "cargo build of berth-testapp failed"
mkdir -p "$WORK/testapp/rootfs/etc" "$WORK/testapp/rootfs/tmp"
install -m 0755 "$ROOT/target/testapp-static/$TRIPLE/release/berth-testapp" "$WORK/testapp/rootfs/berth-testapp"
printf 'root:x:0:0:root:/root:/berth-testapp\n' >"$WORK/testapp/rootfs/etc/passwd"
printf 'FROM scratch\nCOPY rootfs/ /\nENTRYPOINT ["/berth-testapp"]\nCMD ["serve"]\n' >"$WORK/testapp/Dockerfile"
PUSH_REF=127.0.0.1:$BERTH_REGISTRY_PORT/berth/testapp:smoke
docker build -q -t "$PUSH_REF" "$WORK/testapp" >/dev/null 2>"$WORK/build.err" || fail "docker build: $(cat "$WORK/build.err")"
docker push "$PUSH_REF" >"$WORK/push.log" 2>&1 || fail "docker push $PUSH_REF: $(tail -5 "$WORK/push.log")"
log "pushed $PUSH_REF"

STEP="run a task"
# By its in-network name when the agent can be told the registry is plain
# HTTP; otherwise as localhost:5000, which each agent container forwards to
# registry:5000 (BERTH_REGISTRY_FORWARD) and the agent reaches over HTTP.
if dc exec -T agent-1 berth-agent --help 2>/dev/null | grep -q -- '--insecure-registry'; then
    TASK_IMAGE=registry:5000/berth/testapp:smoke
else
    TASK_IMAGE=localhost:5000/berth/testapp:smoke
    log "NOTE: berth-agent has no --insecure-registry; the task names the image $TASK_IMAGE"
fi
cat >"$WORK/smoke.json" <<JSON
{
  "family": "smoke",
  "networkMode": "host",
  "containerDefinitions": [
    {
      "name": "app",
      "image": "$TASK_IMAGE",
      "essential": true,
      "cpu": 64,
      "memory": 32,
      "command": ["ticker", "500"]
    }
  ]
}
JSON
berth taskdef register -f "$WORK/smoke.json" >/dev/null || fail "taskdef register failed"
TASK=$(berth task run --taskdef smoke --cluster default -o json | json 'd[0]["id"]') || fail "task run failed"
log "task $TASK started"
task_running() {
    berth task describe "$TASK" -o json >"$WORK/task.json" || return 1
    json 'd["lastStatus"]' <"$WORK/task.json" | grep -qx RUNNING || { json '[d["lastStatus"], d["stoppedReason"], d["placementReason"]]' <"$WORK/task.json"; return 1; }
}
wait_for "task $TASK RUNNING" 180 task_running
task_logs_ok() { berth task logs "$TASK" 2>&1 | grep -q 'testapp: args=\["ticker"'; }
wait_for "task logs readable (berth task logs)" 30 task_logs_ok
berth task logs "$TASK" --tail 2 >&2 || true

# ------------------------------------------- 4. load balancer, zero failures
STEP="load balancer"
# The test app's HTTP server on container port 8080 of a bridge-mode task,
# published on a host port the control plane picks; healthy when its own
# /health answers. /revision answers TESTAPP_REVISION: v1, v2, v3 are three
# revisions of the task definition `web` that differ in nothing else.
for rev in v1 v2 v3; do
    cat >"$WORK/web-$rev.json" <<JSON
{
  "family": "web",
  "networkMode": "bridge",
  "containerDefinitions": [
    {
      "name": "web",
      "image": "$TASK_IMAGE",
      "essential": true,
      "cpu": 64,
      "memory": 32,
      "command": ["serve", "8080"],
      "portMappings": [{"containerPort": 8080, "hostPort": 0, "protocol": "tcp"}],
      "environment": [{"name": "TESTAPP_REVISION", "value": "$rev"}],
      "healthCheck": {
        "command": ["CMD", "/berth-testapp", "check", "8080"],
        "interval": 5, "timeout": 2, "retries": 2, "startPeriod": 0
      }
    }
  ]
}
JSON
    berth taskdef register -f "$WORK/web-$rev.json" -o json >"$WORK/web-$rev.out" \
        || fail "taskdef register of web ($rev) failed"
done
WEB_V1=web:$(json 'd["revision"]' <"$WORK/web-v1.out")
WEB_V2=web:$(json 'd["revision"]' <"$WORK/web-v2.out")
WEB_V3=web:$(json 'd["revision"]' <"$WORK/web-v3.out")
# `web` is the load balancer, container and port deploy/compose/lb.toml
# names. A short deregistration delay keeps the test quick; it is the time
# a replaced task stays DEACTIVATING (drained in HAProxy) before it stops.
# web_failed MESSAGE: fails with what the service and its last stopped
# task say, which is where a broken deployment's reason is.
web_failed() {
    berth service describe web >&2 || true
    local stopped
    stopped=$(berth task list --family web --status STOPPED -o json | json 'd[0]["id"] if d else ""') || stopped=
    [ -z "$stopped" ] || berth task describe "$stopped" >&2 || true
    fail "$1"
}
# The circuit breaker makes a deployment whose tasks keep failing FAIL
# (and --wait exit) after 3 failed tasks instead of backing off until the
# timeout.
log "service web ($WEB_V1, 2 tasks, rolling) behind load balancer web"
timeout 240 "$BERTH" service create --name web --taskdef "$WEB_V1" --desired-count 2 \
    --load-balancer web:web:8080 --deregistration-delay 3s \
    --circuit-breaker --failure-threshold 3 --wait >"$WORK/create.log" 2>&1 \
    || web_failed "service web did not complete its first deployment: $(tail -5 "$WORK/create.log")"
LB_URL=http://127.0.0.1:$BERTH_LB_PORT/revision
lb_serves() {
    local want=$1 got
    got=$(curl -sS --max-time 2 "$LB_URL" 2>&1) || { echo "$got"; return 1; }
    [ "$got" = "$want" ] || { echo "HAProxy answered '$got', not '$want'"; return 1; }
}
wait_for "HAProxy (127.0.0.1:$BERTH_LB_PORT) serving web v1" 60 lb_serves v1
# prom_at_least QUERY MIN: Prometheus answers QUERY with a value >= MIN.
prom_at_least() {
    local out
    out=$(curl -fsS "http://127.0.0.1:$BERTH_PROMETHEUS_PORT/api/v1/query" --data-urlencode "query=$1") \
        || { echo "Prometheus does not answer"; return 1; }
    python3 -c 'import json, sys
r = json.loads(sys.argv[1])["data"]["result"]
sys.exit(0 if r and float(r[0]["value"][1]) >= float(sys.argv[2]) else 1)' "$out" "$2" \
        || { echo "Prometheus: $1 = $out"; return 1; }
}
wait_for "Prometheus scraping the three servers" 90 prom_at_least 'count(up{job="berthd"} == 1)' 3
wait_for "Prometheus scraping both agents" 90 prom_at_least 'count(up{job="berth-agent"} == 1)' 2
wait_for "Prometheus reporting service web's 2 running tasks" 60 \
    prom_at_least 'max(berth_service_running_tasks{cluster="default",service="web"})' 2
wait_for "Prometheus reporting the memory of web's containers" 60 \
    prom_at_least 'count(berth_agent_container_memory_usage_bytes > 0)' 2
# Endpoints are where HAProxy connects: each agent container's address on
# the compose network (what its session comes from) and a dynamic host port.
AGENT_IPS=$(for a in agent-1 agent-2; do
    docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}' "$(container_of "$a")"
done | tr -s ' ' '\n' | grep . | sort -u | tr '\n' ' ')
berth service endpoints web -o json >"$WORK/endpoints.json" || fail "service endpoints web failed"
python3 - "$WORK/endpoints.json" "$AGENT_IPS" <<'PY' || fail "service web's endpoints are not its agents' addresses with dynamic host ports: $(cat "$WORK/endpoints.json")"
import json, sys
eps = json.load(open(sys.argv[1])); ips = set(sys.argv[2].split())
assert len(eps) == 2, eps
assert all(e["address"] in ips and e["port"] >= 49153 for e in eps), (eps, ips)
PY
log "ok: endpoints $(json '" ".join(e["address"] + ":" + str(e["port"]) for e in d)' <"$WORK/endpoints.json") (agents: $AGENT_IPS)"

# The client: one GET /revision through HAProxy every 200 ms, each with a
# 2 s limit, at most 3000 (10 minutes) even if nobody stops it; one line
# per request: EPOCH_MS PHASE HTTP_CODE CURL_EXIT REVISION.
cat >"$WORK/client.sh" <<'C'
#!/usr/bin/env bash
set -uo pipefail
dir=$1 url=$2
for _ in $(seq 1 3000); do
    [ -f "$dir/client.stop" ] && break
    phase=$(cat "$dir/client.phase" 2>/dev/null)
    code=$(curl -sS -o "$dir/client.body" -w '%{http_code}' --max-time 2 "$url" 2>>"$dir/client.err")
    rc=$?
    body=$(tr -cd '[:alnum:]' 2>/dev/null <"$dir/client.body" | head -c 20)
    echo "$(date +%s%3N) ${phase:-unknown} ${code:-000} $rc ${body:--}"
    rm -f "$dir/client.body"
    sleep 0.2
done
C
chmod +x "$WORK/client.sh"
# Renamed into place, so the client never reads a half-written phase.
set_phase() { echo "$1" >"$WORK/client.phase.tmp" && mv "$WORK/client.phase.tmp" "$WORK/client.phase"; }
set_phase rolling
"$WORK/client.sh" "$WORK" "$LB_URL" >"$WORK/requests.log" &
CLIENT=$!
sleep 2

log "rolling deployment of $WEB_V2 under load"
timeout 300 "$BERTH" service update web --taskdef "$WEB_V2" --wait >"$WORK/rolling.log" 2>&1 \
    || web_failed "the rolling deployment of $WEB_V2 did not complete: $(tail -5 "$WORK/rolling.log")"
log "ok: rolling deployment of $WEB_V2 COMPLETED"
sleep 3

set_phase switch
# Changing the controller starts no deployment; it is refused while one
# is in progress, so retried for a while if the last one is still ending.
switch_to_blue_green() {
    berth service update web --deployment-controller blue-green \
        --traffic-shift canary:50:10s --bake-time 5s >/dev/null
}
wait_for "service web switched to blue/green (canary 50% for 10s, bake 5s)" 30 switch_to_blue_green
sleep 3

set_phase blue-green
log "blue/green deployment of $WEB_V3 under load"
timeout 300 "$BERTH" service update web --taskdef "$WEB_V3" --wait >"$WORK/bluegreen.log" 2>&1 \
    || web_failed "the blue/green deployment of $WEB_V3 did not complete: $(tail -5 "$WORK/bluegreen.log")"
log "ok: blue/green deployment of $WEB_V3 COMPLETED"
sleep 3
touch "$WORK/client.stop"
wait "$CLIENT" || true
CLIENT=

lb_rc=0
python3 - "$WORK/requests.log" >"$WORK/lb-report.txt" <<'PY' || lb_rc=$?
import collections, sys
phases = {"rolling": ("v1", "v2"), "switch": ("v2", "v2"), "blue-green": ("v2", "v3")}
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    parts = line.split()
    if len(parts) == 5:
        rows[parts[1]].append(parts)
problems = []
# Every request counts, whatever phase it was in.
total_bad = sum(1 for r in rows.values() for x in r if x[3] != "0" or x[2] != "200")
for phase, (old, new) in phases.items():
    r = rows.get(phase, [])
    failed = sum(1 for x in r if x[3] != "0")
    non200 = sum(1 for x in r if x[3] == "0" and x[2] != "200")
    mix = collections.Counter(x[4] for x in r if x[3] == "0" and x[2] == "200")
    last = [x[4] for x in r[-5:]]
    # The answers in order, run-length encoded (v1x30 v2x1 v1x2 ...): how
    # the traffic moved.
    runs = []
    for x in r:
        answer = x[4] if x[3] == "0" and x[2] == "200" else "ERR"
        if runs and runs[-1][0] == answer:
            runs[-1][1] += 1
        else:
            runs.append([answer, 1])
    seq = " ".join(f"{a}x{n}" for a, n in runs[:16]) + (" ..." if len(runs) > 16 else "")
    print(f"{phase}: {len(r)} requests, {failed} failed, {non200} not 200; revisions "
          + ", ".join(f"{k}={v}" for k, v in sorted(mix.items())) + f"; in order: {seq}")
    if len(r) < 10:
        problems.append(f"{phase}: only {len(r)} requests")
    if last and any(x != new for x in last):
        problems.append(f"{phase} did not end on {new}: last answers {' '.join(last)}")
    if mix[old] == 0 or mix[new] == 0:
        problems.append(f"{phase}: expected answers from {old} and {new}, saw {dict(mix)}")
print(f"total: {sum(len(v) for v in rows.values())} requests, {total_bad} failed or not 200")
for p in problems:
    print("PROBLEM " + p)
sys.exit(1 if problems or total_bad else 0)
PY
while read -r line; do log "load balancer: $line"; done <"$WORK/lb-report.txt"
if [ "$lb_rc" != 0 ]; then
    [ -s "$WORK/client.err" ] && log "curl said: $(sort "$WORK/client.err" | uniq -c | sort -rn | head -3 | tr -s ' \n' ' ')"
    grep -v ' 200 0 ' "$WORK/requests.log" | head -10 >&2 || true
    fail "requests through HAProxy failed or ended on the wrong revision (above)"
fi
berth service deployments web -o json >"$WORK/deployments.json" || fail "service deployments web failed"
bg=$(json "' | '.join(x['status'] + ' ' + x['rolloutState'] + ' ' + str(x.get('trafficPercent')) for x in d if x['taskDefinition'] == '$WEB_V3')" \
    <"$WORK/deployments.json") || fail "cannot read service web's deployments: $(cat "$WORK/deployments.json")"
[ "$bg" = "PRIMARY COMPLETED 100" ] \
    || fail "the blue/green deployment of $WEB_V3 is $bg, not PRIMARY, COMPLETED with 100% of the traffic"
log "ok: the blue/green deployment of $WEB_V3 is PRIMARY, COMPLETED, 100% of the traffic"
# Done with it: the later steps restart servers and agents, and are about
# the control plane.
berth service delete web --force >/dev/null || fail "service delete web failed"

# -------------------------------------------------------- 5. leader loss
STEP="leader loss"
LEADER=$(berth cluster status -o json | json 'd["leaderId"]')
log "stopping the leader, berthd-$LEADER"
docker stop -t 10 "$(container_of "berthd-$LEADER")" >/dev/null
new_leader() {
    local l
    l=$(berth cluster status -o json | json 'd["leaderId"]') || return 1
    [ "$l" != None ] && [ "$l" != "$LEADER" ]
}
wait_for "a new leader" 30 new_leader
wait_for "a write with berthd-$LEADER down" 20 berth taskdef register -f "$WORK/smoke.json"
berth taskdef list --family smoke -o json | json 'len(d)' | grep -qx 2 || fail "expected 2 revisions of smoke"
dc up -d --no-recreate "berthd-$LEADER" >/dev/null 2>&1 || docker start "$(dc ps -a -q "berthd-$LEADER")" >/dev/null
wait_for "berthd-$LEADER back and the cluster whole" 90 cluster_ok

# ------------------------------------------------------ 6. agent partition
STEP="agent partition"
NET=$(docker inspect -f '{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}' "$(container_of agent-1)" | awk '{print $1}')
[ -n "$NET" ] || fail "cannot find agent-1's network"
log "disconnecting agent-1 from $NET"
docker network disconnect "$NET" "$(container_of agent-1)"
instance_is() {
    local s
    s=$(berth instance describe "$1" -o json | json 'd["status"] + " (agentConnected: " + str(d["agentConnected"]) + ")"') || return 1
    [ "${s%% *}" = "$2" ] || { echo "instance $1 is $s"; return 1; }
}
wait_for "instance $AGENT1_ID DISCONNECTED" 90 instance_is "$AGENT1_ID" DISCONNECTED
docker network connect --alias agent-1 "$NET" "$(container_of agent-1)"
wait_for "instance $AGENT1_ID ACTIVE again" 90 instance_is "$AGENT1_ID" ACTIVE

# ---------------------------------------------------- 7. rolling restart
STEP="rolling restart"
cat >"$WORK/writer.sh" <<'W'
#!/usr/bin/env bash
# One write every 200ms; one line per attempt: EPOCH_MS ok|fail
i=0
while [ ! -f "$1/stop" ]; do
    i=$((i + 1))
    err=$(timeout 20 "$BERTH_BIN" cluster update default --task-retention "$((60 + i % 60))m" 2>&1 >/dev/null)
    rc=$?
    if [ "$rc" = 0 ]; then
        echo "$(date +%s%3N) ok"
    else
        echo "$(date +%s%3N) fail"
        [ "$rc" = 124 ] && err="no answer within 20s"
        echo "$err" >>"$1/writer.err"
    fi
    sleep 0.2
done
W
chmod +x "$WORK/writer.sh"
BERTH_BIN=$BERTH "$WORK/writer.sh" "$WORK" >"$WORK/writes.log" &
WRITER=$!
sleep 3
for n in 1 2 3; do
    log "restarting berthd-$n"
    docker restart -t 30 "$(container_of "berthd-$n")" >/dev/null
    server_healthy() { [ "$(docker inspect -f '{{.State.Health.Status}}' "$(container_of "berthd-$1")")" = healthy ]; }
    wait_for "berthd-$n healthy" 90 server_healthy "$n"
    wait_for "cluster whole after restarting berthd-$n" 60 cluster_ok
done
sleep 3
touch "$WORK/stop"
wait "$WRITER" || true
read -r total failed windows longest < <(python3 - "$WORK/writes.log" <<'PY'
import sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
total = len(rows); failed = sum(1 for _, s in rows if s == "fail")
windows = 0; longest = 0; start = None; prev = "ok"
for t, s in rows:
    t = int(t)
    if s == "fail" and prev == "ok":
        windows += 1; start = t
    if s == "fail":
        longest = max(longest, t - start)
    prev = s
print(total, failed, windows, longest)
PY
)
log "rolling restart: $total writes, $failed failed, $windows failure window(s), longest ${longest}ms"
[ "$total" -ge 20 ] || fail "only $total writes were attempted during the rolling restart"
if [ "$windows" -gt 3 ]; then
    fail "$windows failure windows during 3 restarts (at most one per restart); errors: $(sort "$WORK/writer.err" | uniq -c | sort -rn | head -3)"
fi
[ "$failed" -eq 0 ] || log "failed writes said: $(sort "$WORK/writer.err" | uniq -c | sort -rn | head -3 | tr -s ' \n' ' ')"

# --------------------------------------------------------- 8. down + up
STEP="down + up"
berth taskdef list -o json >"$WORK/taskdefs.before"
log "docker compose down (volumes kept), then up -d"
dc down >/dev/null 2>&1 || fail "compose down failed"
dc up -d >"$WORK/up2.log" 2>&1 || fail "second compose up failed: $(tail -20 "$WORK/up2.log")"
wait_for "every service healthy again" 240 all_healthy
wait_for "cluster formed again" 60 cluster_ok
berth taskdef list -o json >"$WORK/taskdefs.after"
cmp -s <(json 'sorted((t["family"], t["revision"]) for t in d)' <"$WORK/taskdefs.before") \
    <(json 'sorted((t["family"], t["revision"]) for t in d)' <"$WORK/taskdefs.after") \
    || fail "task definitions differ after down + up"
log "ok: task definitions kept across down + up ($(json 'len(d)' <"$WORK/taskdefs.after"))"
wait_for "instance $AGENT1_ID ACTIVE after down + up (same identity)" 120 instance_is "$AGENT1_ID" ACTIVE

STEP="cleanup"
