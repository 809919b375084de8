# Helpers shared by the deployment tests (deploy/compose/smoke.sh and
# deploy/install/test-install.sh). Source it after setting TEST_NAME and
# WORK (a scratch directory); set STEP to name the step a failure is in.
# shellcheck shell=bash

T0=$(date +%s)
STEP=${STEP:-start}

log() { echo "$TEST_NAME [$(($(date +%s) - T0))s] $*" >&2; }
fail() { echo "$TEST_NAME: FAILED at step '$STEP': $*" >&2; exit 1; }

# wait_for DESCRIPTION SECONDS COMMAND...: runs COMMAND every second until
# it succeeds; fails the test after SECONDS.
wait_for() {
    local what=$1 limit=$2 start
    shift 2
    start=$(date +%s)
    until "$@" >"$WORK/last" 2>&1; do
        if [ $(($(date +%s) - start)) -ge "$limit" ]; then
            fail "timed out after ${limit}s waiting for $what; last output: $(tail -5 "$WORK/last")"
        fi
        sleep 1
    done
    log "ok: $what ($(($(date +%s) - start))s)"
}

# jq-like helper without jq: json EXPR reads JSON on stdin as `d`.
json() { python3 -c "import json,sys; d=json.load(sys.stdin); r=($1); print(r if not isinstance(r,(dict,list)) else json.dumps(r))"; }
