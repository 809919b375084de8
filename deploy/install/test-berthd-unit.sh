#!/usr/bin/env bash
# Checks deploy/install/berthd.service and the install procedure in
# docs/operations.md ("Install a server with systemd") as far as a machine
# without systemd as PID 1 allows (containers, CI):
#
#   - `systemd-analyze verify` reports nothing about the unit (it exits 0
#     even on directives it ignores, so any output fails the test), and
#     `systemd-analyze security --offline` rates its exposure 2.5 or lower
#   - ExecStart is `berthd serve --config /etc/berth/berthd.toml`, the
#     user is berthd, the data dir is the StateDirectory /var/lib/berthd
#   - that command line, with a berthd.toml as documented, runs a
#     one-server cluster as an unprivileged user (no capabilities) with the
#     unit's umask: ready, the files it makes private to that user; SIGHUP
#     reloads its PKI dir; SIGTERM stops it
#     with status 0 well within TimeoutStopSec
#   - `berthd recover --config` and `berthd restore --config` read the
#     data dir and node id from the same file; `berthd recover` run as root
#     leaves the files it writes to the data dir's owner, and the server
#     starts again as that user
#
# Not checked here: the sandboxing itself (ProtectSystem=, the system call
# filter ...), which only systemd as PID 1 applies: test-berthd-systemd.sh
# runs the unit that way, in a host-like container.
#
# Needs root (to drop to another user), systemd-analyze, setpriv, and the
# berthd binary (target/debug/berthd, or BERTHD=path).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
UNIT=$ROOT/deploy/install/berthd.service
BERTHD=${BERTHD:-$ROOT/target/debug/berthd}
WORK=$(mktemp -d /tmp/berthd-unit-test.XXXXXX)
TEST_NAME=test-berthd-unit
# shellcheck source=deploy/test-lib.sh
. "$ROOT/deploy/test-lib.sh"

PID=
cleanup() {
    local rc=$?
    [ -n "$PID" ] && kill -9 "$PID" 2>/dev/null
    if [ $rc -ne 0 ] && [ -f "$WORK/berthd.log" ]; then
        echo "---- berthd log (last 20 lines) ----" >&2
        tail -20 "$WORK/berthd.log" >&2
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

[ "$(id -u)" = 0 ] || fail "run as root (the server is started as another user)"
for tool in systemd-analyze setpriv python3; do
    command -v "$tool" >/dev/null || fail "$tool is missing"
done
[ -x "$BERTHD" ] || fail "$BERTHD is missing: cargo build -p berth-server (or set BERTHD)"
# The unit's ExecStart must be an absolute path (systemd refuses others).
BERTHD=$(readlink -f "$BERTHD")

STEP=verify
# verify checks that ExecStart's binary exists: point it at the one built.
sed "s#/usr/local/bin/berthd#$BERTHD#" "$UNIT" >"$WORK/berthd.service"
systemd-analyze verify "$WORK/berthd.service" >"$WORK/verify" 2>&1 \
    || fail "systemd-analyze verify failed: $(cat "$WORK/verify")"
[ ! -s "$WORK/verify" ] || fail "systemd-analyze verify reported: $(cat "$WORK/verify")"
log "ok: systemd-analyze verify says nothing about berthd.service"
systemd-analyze security --offline=yes "$WORK/berthd.service" >"$WORK/security" 2>&1 \
    || fail "systemd-analyze security failed: $(tail -3 "$WORK/security")"
EXPOSURE=$(sed -n 's/.*Overall exposure level for berthd.service: \([0-9.]*\).*/\1/p' "$WORK/security")
[ -n "$EXPOSURE" ] || fail "no exposure level in: $(tail -3 "$WORK/security")"
python3 -c "import sys; sys.exit(0 if float('$EXPOSURE') <= 2.5 else 1)" \
    || fail "exposure level $EXPOSURE is above 2.5: the hardening was weakened"
log "ok: systemd-analyze security rates the unit's exposure $EXPOSURE"

STEP=directives
directive() { sed -n "s/^$1=//p" "$UNIT"; }
[ "$(directive ExecStart)" = "/usr/local/bin/berthd serve --config /etc/berth/berthd.toml" ] \
    || fail "ExecStart is '$(directive ExecStart)'"
[ "$(directive User)" = berthd ] || fail "User is '$(directive User)'"
[ "$(directive StateDirectory)" = berthd ] || fail "StateDirectory is '$(directive StateDirectory)'"
[ "$(directive Restart)" = on-failure ] || fail "Restart is '$(directive Restart)'"
[ "$(directive UMask)" = 0077 ] || fail "UMask is '$(directive UMask)'"
[ "$(directive ExecReload)" = '/bin/kill -HUP $MAINPID' ] || fail "ExecReload is '$(directive ExecReload)'"
TIMEOUT=$(directive TimeoutStopSec | tr -d s)
log "ok: ExecStart, ExecReload, User, StateDirectory, Restart and UMask as documented"

STEP=run
# The documented layout under $WORK: /etc/berth/berthd.toml and a data dir
# owned by the service's user (nobody stands in for berthd here).
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PORT=$(free_port)
HEALTH=$(free_port)
DATA=$WORK/var/lib/berthd
mkdir -p "$WORK/etc/berth" "$DATA"
"$BERTHD" pki init --dir "$WORK/ca" >/dev/null
"$BERTHD" pki issue --dir "$WORK/ca" --node-id 1 --host 127.0.0.1 --out "$DATA/pki" >/dev/null
cat >"$WORK/etc/berth/berthd.toml" <<EOF
node_id = 1
data_dir = "$DATA"
listen = "127.0.0.1:$PORT"
advertise = "127.0.0.1:$PORT"
initial_cluster = "1=127.0.0.1:$PORT"
health_listen = "127.0.0.1:$HEALTH"
log = "info,openraft=warn"
log_format = "json"
EOF
chown -R nobody:nogroup "$DATA"
chmod 0700 "$DATA"
chmod 0640 "$WORK/etc/berth/berthd.toml"
chgrp nogroup "$WORK/etc/berth/berthd.toml"
chmod 0755 "$WORK" "$WORK/etc" "$WORK/etc/berth"

# ExecStart as the unit has it, the config path moved under $WORK.
read -r -a EXEC <<<"$(directive ExecStart | sed "s#/usr/local/bin/berthd#$BERTHD#; s#/etc/berth#$WORK/etc/berth#")"
(
    umask 0077
    exec setpriv --reuid=nobody --regid=nogroup --clear-groups --inh-caps=-all --bounding-set=-all \
        env -i PATH=/usr/bin:/bin "${EXEC[@]}"
) >"$WORK/berthd.log" 2>&1 &
PID=$!
wait_for "berthd ready as an unprivileged user" 30 \
    "$BERTHD" health --url "http://127.0.0.1:$HEALTH/readyz"
[ "$(stat -c %U /proc/$PID)" = nobody ] || fail "berthd does not run as nobody"
# pki/ came from `berthd pki issue` (certificates are public, keys 0600).
LEAKY=$(find "$DATA" -path "$DATA/pki" -prune -o -perm /077 -printf '%m %p\n' | head -5)
[ -z "$LEAKY" ] || fail "files berthd made that others can read: $LEAKY"
[ -n "$(find "$DATA/db" -type f)" ] || fail "berthd wrote no database under $DATA"
log "ok: every file berthd made in the data dir is private to the service's user"
grep -q '"berthd serving"' "$WORK/berthd.log" || fail "no 'berthd serving' in the JSON log"

STEP=reload
# `systemctl reload` is SIGHUP: the server reads its PKI dir again (here a
# reissued certificate) and keeps serving.
"$BERTHD" pki issue --dir "$WORK/ca" --node-id 1 --host 127.0.0.1 --out "$WORK/reissued" >/dev/null
cp "$WORK/reissued/server.crt" "$WORK/reissued/server.key" "$DATA/pki/"
chown nobody:nogroup "$DATA/pki/server.crt" "$DATA/pki/server.key"
kill -HUP "$PID"
wait_for "'PKI reloaded on SIGHUP' in the log" 10 grep -q 'PKI reloaded on SIGHUP' "$WORK/berthd.log"
kill -0 "$PID" 2>/dev/null || fail "berthd exited on SIGHUP"
"$BERTHD" health --url "http://127.0.0.1:$HEALTH/readyz" || fail "not ready after the reload"
log "ok: SIGHUP (the unit's reload) reloads the PKI dir and berthd keeps serving"

STEP=stop
STARTED=$(date +%s)
kill -TERM "$PID"
STATUS=0
wait "$PID" || STATUS=$?
PID=
ELAPSED=$(($(date +%s) - STARTED))
[ "$STATUS" = 0 ] || fail "berthd exited with status $STATUS on SIGTERM"
[ "$ELAPSED" -lt "$TIMEOUT" ] || fail "berthd took ${ELAPSED}s to stop, TimeoutStopSec is ${TIMEOUT}s"
log "ok: SIGTERM stops it with status 0 in ${ELAPSED}s"

STEP=offline-commands
run_as() { setpriv --reuid=nobody --regid=nogroup --clear-groups env -i PATH=/usr/bin:/bin "$@"; }
run_as "$BERTHD" recover --config "$WORK/etc/berth/berthd.toml" --dry-run >"$WORK/recover" 2>&1 \
    || fail "berthd recover --config --dry-run: $(cat "$WORK/recover")"
grep -q "data dir $DATA (server 1)" "$WORK/recover" || fail "recover did not read the config: $(cat "$WORK/recover")"
grep -q "voters \[1\]" "$WORK/recover" || fail "recover --dry-run: $(cat "$WORK/recover")"
# Refused before the backup is even read: the configured data dir is used.
run_as "$BERTHD" restore --config "$WORK/etc/berth/berthd.toml" --from "$WORK/backup.snap" >"$WORK/restore" 2>&1 \
    && fail "restore over the configured, used data dir was not refused"
grep -q "already belongs to a server" "$WORK/restore" || fail "restore: $(cat "$WORK/restore")"
log "ok: recover and restore take the data dir and node id from --config"

STEP=recover-as-root
# `sudo berthd recover` as the docs allow: what it writes goes back to the
# data dir's owner, and the server starts again as that user.
"$BERTHD" recover --config "$WORK/etc/berth/berthd.toml" >"$WORK/recover" 2>&1 \
    || fail "berthd recover as root: $(cat "$WORK/recover")"
FOREIGN=$(find "$DATA" ! -user nobody -printf '%u %p\n' | head -5)
[ -z "$FOREIGN" ] || fail "recover left files the service's user does not own: $FOREIGN"
log "ok: recover run as root leaves every file to the data dir's owner"
(
    umask 0077
    exec setpriv --reuid=nobody --regid=nogroup --clear-groups --inh-caps=-all --bounding-set=-all \
        env -i PATH=/usr/bin:/bin "${EXEC[@]}"
) >>"$WORK/berthd.log" 2>&1 &
PID=$!
wait_for "berthd ready again after the recover" 30 \
    "$BERTHD" health --url "http://127.0.0.1:$HEALTH/readyz"
kill -TERM "$PID"
wait "$PID" || fail "berthd exited with status $? on SIGTERM after the recover"
PID=
log "passed"
