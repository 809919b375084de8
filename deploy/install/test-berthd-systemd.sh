#!/usr/bin/env bash
# Runs deploy/install/berthd.service under systemd as PID 1, installed by
# the procedure of docs/operations.md ("Install a server with systemd"), in
# a host-like container (the Debian image of test-install.sh, see
# host-lib.sh):
#
#   - the documented shell block is taken from docs/operations.md and run
#     as written (binaries, useradd, pki issue, install -d, cp -r pki,
#     chown -R, berthd.toml, the unit, daemon-reload, enable --now), with
#     the documented berthd.toml; only the example address 10.0.0.1 becomes
#     127.0.0.1 and initial_cluster names this one server
#   - the unit is active and enabled, `berthd health --url` as documented
#     answers, and `berth cluster status` with ca/admin.token lists it
#   - the main process runs as berthd, umask 0077, with no capability but
#     CAP_NET_BIND_SERVICE (effective, permitted, bounding, ambient), no
#     new privileges and seccomp filters on; the sandbox holds in its mount
#     namespace: read-only system (ProtectSystem=strict) but a writable
#     /var/lib/berthd, empty /root and /home, its own /tmp and /dev, read-only
#     kernel tunables and cgroups, /proc with hidepid=invisible, its own
#     hostname namespace; systemd logged nothing it ignored
#   - /var/lib/berthd is berthd's, mode 0700; nothing in it belongs to
#     another user; no file berthd made can be read by others
#   - `systemctl reload berthd` (a reissued certificate): the journal says
#     "PKI reloaded on SIGHUP", same main PID, still active and ready
#   - kill -9 of the main process: systemd starts it again after
#     RestartSec (5 s), active and ready again
#   - `systemctl stop berthd`: inactive (not failed), exit status 0
#   - a configuration error (exit status 2): failed and not restarted
#   - a process in berthd.service's sandbox (its ExecStart replaced by
#     probes) is refused user namespaces, netlink sockets, a personality
#     change and a setuid bit; the same probes as berthd outside it are not
#
# LimitNOFILE=1048576 is checked only where the container may raise its
# open-files limit that high (systemd clamps it to the hard limit it has,
# and raising it needs CAP_SYS_RESOURCE): otherwise the test says so.
#
# Needs root, docker, and berthd, berth, berth-agent and berth-logd binaries that run
# on Debian bookworm: BERTHD=path/to/berthd (the other three next to
# it), default the static ones in target/static/<triple>/release. The host
# image is built as test-install.sh builds it (cached). Every wait is
# bounded; the container is removed at the end, also on failure (--keep
# leaves it for debugging).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
KEEP=0
for arg in "$@"; do
    case "$arg" in
        --keep) KEEP=1 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "test-berthd-systemd: unknown argument $arg" >&2; exit 2 ;;
    esac
done

case "$(uname -m)" in
    x86_64) TRIPLE=x86_64-unknown-linux-gnu ;;
    aarch64) TRIPLE=aarch64-unknown-linux-gnu ;;
    *) echo "test-berthd-systemd: unsupported architecture $(uname -m)" >&2; exit 1 ;;
esac
BERTHD=${BERTHD:-$ROOT/target/static/$TRIPLE/release/berthd}
DOC=$ROOT/docs/operations.md
H=berth-systemd-test-host
WORK=$(mktemp -d /tmp/berthd-systemd-test.XXXXXX)
TEST_NAME=test-berthd-systemd
# shellcheck source=deploy/test-lib.sh
. "$ROOT/deploy/test-lib.sh"
# shellcheck source=deploy/install/host-lib.sh
. "$ROOT/deploy/install/host-lib.sh"

[ "$(id -u)" = 0 ] || fail "run as root (privileged containers need it)"
command -v docker >/dev/null || fail "docker is missing"
docker info >/dev/null 2>&1 || fail "cannot talk to the Docker daemon"
BIN_DIR=$(dirname "$(readlink -f "$BERTHD")")
for b in berthd berth berth-agent berth-logd; do
    [ -x "$BIN_DIR/$b" ] || fail "$BIN_DIR/$b is missing: deploy/images/build.sh (or set BERTHD)"
done

cleanup() {
    local rc=$?
    set +e
    if [ $rc -ne 0 ] && docker inspect "$H" >/dev/null 2>&1; then
        echo "---- systemctl status berthd / journal (last 30 lines) ----" >&2
        docker exec "$H" systemctl status --no-pager -n 0 berthd 2>&1 | sed 's/^/  /' >&2
        docker exec "$H" journalctl --no-pager -n 30 -u berthd 2>&1 | sed 's/^/  /' >&2
    fi
    if [ "$KEEP" = 1 ]; then
        log "--keep: container $H is left running"
    else
        docker rm -f -v "$H" >/dev/null 2>&1
    fi
    rm -rf "$WORK"
    [ $rc -eq 0 ] && log "PASSED"
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- the docs
STEP="docs"
# section_block HEADING LANG: the first ```LANG block after the heading.
section_block() {
    awk -v h="$1" -v lang="$2" '
        $0 == h { s = 1; next }
        s && $0 == "```" lang { b = 1; next }
        b && $0 == "```" { exit }
        b { print }
    ' "$DOC"
}
section_block '### Install a server with systemd' sh >"$WORK/doc-steps"
# shellcheck disable=SC2016  # a literal heading
section_block '### A server (`berthd serve`)' toml >"$WORK/doc-toml"
for want in 'useradd --system' 'berthd pki issue' 'install -d -m 0700 -o berthd -g berthd /var/lib/berthd' \
    'cp -r pki-1 /var/lib/berthd/pki' 'deploy/install/berthd.service /etc/systemd/system/berthd.service' \
    'systemctl enable --now berthd' 'berthd health --url'; do
    grep -qF -- "$want" "$WORK/doc-steps" || fail "the install block of $DOC has no '$want' any more: update this test"
done
grep -q '^node_id = 1$' "$WORK/doc-toml" || fail "no berthd.toml example with node_id = 1 in $DOC"
# The install commands up to `enable --now` are run as written; the check
# lines after it (berthd health, journalctl -f) are run by this test.
# Comments go, and the example address becomes this host's.
sed -n '1,/^systemctl enable --now berthd$/p' "$WORK/doc-steps" | grep -v '^[[:space:]]*#' \
    | sed 's/10\.0\.0\.1/127.0.0.1/g' >"$WORK/install.sh"
HEALTH_CMD=$(grep -m1 '^berthd health --url ' "$WORK/doc-steps")
sed -e 's/10\.0\.0\.1/127.0.0.1/g' \
    -e 's/^initial_cluster = .*/initial_cluster = "1=127.0.0.1:7400"/' "$WORK/doc-toml" >"$WORK/berthd.toml"
grep -q '^health_listen = "127.0.0.1:7480"' "$WORK/berthd.toml" \
    || fail "berthd.toml in $DOC no longer has health_listen 127.0.0.1:7480: update this test"
log "ok: $(grep -c . "$WORK/install.sh") install commands and a $(grep -c '^[a-z]' "$WORK/berthd.toml")-key berthd.toml taken from $DOC"

# ------------------------------------------------------------------ host
STEP="host image"
ensure_host_image

STEP="host start"
docker rm -f -v "$H" >/dev/null 2>&1 || true
docker run -d --name "$H" --hostname berthd-1 --network none "${HOSTLIKE[@]}" \
    --tmpfs /run --tmpfs /run/lock --tmpfs /tmp \
    "$HOST_IMAGE" sh -c "$REMOUNT; exec /sbin/init" >/dev/null
wait_for "systemd running in $H" 90 systemd_up "$H"
in_h() { timeout 120 docker exec "$H" "$@"; }

# What the operator has in the working directory: the binaries, the
# repository's deploy/install/berthd.service, the berthd.toml.
in_h mkdir -p /root/install/deploy/install
for b in berthd berth berth-agent berth-logd; do docker cp -q "$BIN_DIR/$b" "$H:/root/install/$b"; done
docker cp -q "$ROOT/deploy/install/berthd.service" "$H:/root/install/deploy/install/berthd.service"
docker cp -q "$WORK/berthd.toml" "$H:/root/install/berthd.toml"
docker cp -q "$WORK/install.sh" "$H:/root/install/install.sh"
# A device node of the host, which PrivateDevices= must hide.
in_h mknod -m 0666 /dev/berth-probe c 1 3

# ----------------------------------------------------------- the install
STEP="install as documented"
# The CA directory is made once per cluster (`berthd pki init`, as the
# block's comment says), with the binary about to be installed.
in_h sh -c 'cd /root/install && ./berthd pki init --dir ca/ >/dev/null'
if ! in_h bash -c 'cd /root/install && bash -euxo pipefail install.sh' >"$WORK/install.out" 2>&1; then
    fail "the documented install failed: $(tail -8 "$WORK/install.out")"
fi
log "ok: the documented install ran: $(grep -c '^+ ' "$WORK/install.out") commands, the last: $(grep '^+ ' "$WORK/install.out" | tail -1 | cut -c3-)"

STEP="running"
[ "$(in_h systemctl is-enabled berthd)" = enabled ] || fail "berthd is not enabled"
active() { [ "$(in_h systemctl is-active berthd)" = active ]; }
wait_for "berthd.service active" 30 active
# shellcheck disable=SC2086  # the documented command line, split into words
wait_for "ready: $HEALTH_CMD" 60 in_h $HEALTH_CMD
cli() {
    # shellcheck disable=SC2016  # expanded by the container's shell
    in_h sh -c 'cd /root/install && BERTH_ENDPOINT=127.0.0.1:7400 BERTH_CA_CERT=pki-1/ca.crt \
        BERTH_TOKEN=$(cat ca/admin.token) berth "$@"' berth "$@"
}
cli cluster status >"$WORK/status" 2>&1 || fail "berth cluster status: $(tail -5 "$WORK/status")"
grep -q '127.0.0.1:7400' "$WORK/status" || fail "berth cluster status does not list the server: $(cat "$WORK/status")"
log "ok: berth cluster status with ca/admin.token lists the server"

STEP="identity"
main_pid() { in_h systemctl show -p MainPID --value berthd; }
PID=$(main_pid)
[ "$PID" -gt 1 ] 2>/dev/null || fail "no main PID ($PID)"
in_h cat "/proc/$PID/status" >"$WORK/pstatus"
field() { awk -v k="$1:" '$1 == k { $1 = ""; sub(/^ +/, ""); print }' "$WORK/pstatus"; }
UID_B=$(in_h id -u berthd)
GID_B=$(in_h id -g berthd)
[ "$(field Uid)" = "$UID_B $UID_B $UID_B $UID_B" ] || fail "main process $PID: Uid $(field Uid), berthd is $UID_B"
[ "$(field Gid)" = "$GID_B $GID_B $GID_B $GID_B" ] || fail "main process $PID: Gid $(field Gid), berthd is $GID_B"
# systemd's initgroups(): berthd's own group, nothing else.
case "$(field Groups)" in ""|"$GID_B") ;; *) fail "main process $PID has supplementary groups $(field Groups)" ;; esac
# CAP_NET_BIND_SERVICE is bit 10: 0x400, the unit's only capability.
for c in CapEff CapPrm CapBnd CapAmb; do
    [ "$(field $c)" = 0000000000000400 ] || fail "main process $PID: $c $(field $c), not CAP_NET_BIND_SERVICE (0400) alone"
done
[ "$(field NoNewPrivs)" = 1 ] || fail "main process $PID: NoNewPrivs $(field NoNewPrivs)"
[ "$(field Seccomp)" = 2 ] || fail "main process $PID: Seccomp $(field Seccomp) (2 = filters on)"
[ "$(field Umask)" = 0077 ] || fail "main process $PID: Umask $(field Umask)"
log "ok: main process $PID runs as berthd ($UID_B:$GID_B, groups: $(field Groups)), umask 0077, capabilities CAP_NET_BIND_SERVICE only (eff/prm/bnd/amb 0x400), NoNewPrivs, $(field Seccomp_filters) seccomp filters"

STEP="limits"
# shellcheck disable=SC2016  # awk fields
NOFILE=$(in_h awk '/^Max open files/ {print $4 " " $5}' "/proc/$PID/limits")
# shellcheck disable=SC2016  # awk fields
HOST_HARD=$(in_h awk '/^Max open files/ {print $5}' /proc/1/limits)
if [ "$HOST_HARD" -ge 1048576 ] 2>/dev/null; then
    [ "$NOFILE" = "1048576 1048576" ] || fail "LimitNOFILE=1048576 not applied: open files $NOFILE"
    log "ok: LimitNOFILE=1048576 applied"
else
    log "NOT verified: LimitNOFILE=1048576: this container's hard limit is $HOST_HARD and it lacks CAP_SYS_RESOURCE to raise it; systemd clamped it to $NOFILE (soft hard)"
fi

STEP="sandbox"
# Inside the service's mount namespace (nsenter -m, as root: what is
# refused there is refused by the mounts, not by file permissions).
in_ns() { in_h nsenter -t "$PID" -m "$@"; }
ns_opts() { in_ns findmnt -no OPTIONS -T "$1"; }
if in_ns touch /etc/berth-probe 2>"$WORK/probe"; then fail "ProtectSystem=strict: /etc is writable in the service's namespace"; fi
grep -q 'Read-only file system' "$WORK/probe" || fail "ProtectSystem=strict: writing /etc: $(cat "$WORK/probe")"
if in_ns touch /usr/local/bin/berth-probe 2>/dev/null; then fail "ProtectSystem=strict: /usr is writable"; fi
in_ns touch /var/lib/berthd/.probe || fail "the StateDirectory /var/lib/berthd is not writable in the service's namespace"
in_ns rm /var/lib/berthd/.probe
[ -z "$(in_ns ls -A /root)" ] || fail "ProtectHome=yes: /root is not empty in the service's namespace: $(in_ns ls -A /root | head -3)"
in_h touch /tmp/host-probe
if in_ns test -e /tmp/host-probe; then fail "PrivateTmp=yes: the host's /tmp is visible"; fi
if in_ns test -e /dev/berth-probe; then fail "PrivateDevices=yes: the host's device /dev/berth-probe is visible"; fi
in_ns test -c /dev/null || fail "PrivateDevices=yes: no /dev/null"
in_ns findmnt -no SOURCE /proc/kmsg | grep -q inaccessible || fail "ProtectKernelLogs=yes: /proc/kmsg is not made inaccessible"
for p in /proc/sys /sys /sys/fs/cgroup; do
    ns_opts "$p" | grep -qE '(^|,)ro(,|$)' || fail "$p is not read-only in the service's namespace: $(ns_opts "$p")"
done
ns_opts /proc | grep -q 'hidepid=invisible' || fail "ProtectProc=invisible: /proc is mounted $(ns_opts /proc)"
[ "$(in_h readlink "/proc/$PID/ns/uts")" != "$(in_h readlink /proc/1/ns/uts)" ] \
    || fail "ProtectHostname=yes: the service shares the host's UTS namespace"
in_h journalctl --no-pager -b -o cat _PID=1 >"$WORK/pid1.log"
grep -q 'Started berthd.service' "$WORK/pid1.log" || fail "no 'Started berthd.service' in systemd's own journal"
if grep -i 'berthd' "$WORK/pid1.log" | grep -iE 'ignor|not supported|unsupported|failed to' >"$WORK/ignored"; then
    fail "systemd did not apply all of berthd.service: $(head -5 "$WORK/ignored")"
fi
log "ok: sandbox applied: / and /usr read-only, /var/lib/berthd writable, /root empty, own /tmp and /dev, /proc/sys /sys cgroups read-only, /proc/kmsg inaccessible, /proc hidepid=invisible, own UTS namespace; systemd logged nothing ignored"

STEP="files"
[ "$(in_h stat -c '%U:%G %a' /var/lib/berthd)" = "berthd:berthd 700" ] \
    || fail "/var/lib/berthd is $(in_h stat -c '%U:%G %a' /var/lib/berthd)"
FOREIGN=$(in_h find /var/lib/berthd ! -user berthd -printf '%u %p\n' | head -5)
[ -z "$FOREIGN" ] || fail "files in /var/lib/berthd not berthd's: $FOREIGN"
# pki/ was copied in by root (certificates 0644, keys 0600 as issued).
LEAKY=$(in_h find /var/lib/berthd -path /var/lib/berthd/pki -prune -o -perm /077 -printf '%m %p\n' | head -5)
[ -z "$LEAKY" ] || fail "files berthd made that others can read: $LEAKY"
[ -n "$(in_h find /var/lib/berthd/db -type f)" ] || fail "berthd wrote no database under /var/lib/berthd"
log "ok: /var/lib/berthd is berthd:berthd 0700, every file berthd's, the ones it made private to it"

STEP="reload"
in_h sh -c 'cd /root/install && berthd pki issue --dir ca/ --node-id 1 --host 127.0.0.1 --host berthd-1 --out pki-2/ >/dev/null \
    && cp pki-2/server.crt pki-2/server.key /var/lib/berthd/pki/ && chown -R berthd:berthd /var/lib/berthd/pki'
reloads() { in_h journalctl --no-pager -u berthd -o cat | grep -c 'PKI reloaded on SIGHUP' || true; }
BEFORE=$(reloads)
in_h systemctl reload berthd || fail "systemctl reload berthd failed"
reloaded() { [ "$(reloads)" -gt "$BEFORE" ]; }
wait_for "'PKI reloaded on SIGHUP' in journalctl -u berthd after systemctl reload" 15 reloaded
active || fail "berthd is $(in_h systemctl is-active berthd) after the reload"
[ "$(main_pid)" = "$PID" ] || fail "the reload replaced the main process ($PID -> $(main_pid))"
# shellcheck disable=SC2086
in_h $HEALTH_CMD || fail "not ready after the reload"
log "ok: systemctl reload: PKI reloaded, same main process $PID, active and ready"

STEP="restart on failure"
in_h kill -9 "$PID"
KILLED=$(date +%s)
restarted() { active && [ "$(main_pid)" != "$PID" ] && [ "$(main_pid)" != 0 ]; }
wait_for "berthd restarted by systemd after kill -9" 30 restarted
ELAPSED=$(($(date +%s) - KILLED))
[ "$ELAPSED" -ge 4 ] || fail "restarted after ${ELAPSED}s, RestartSec is 5s"
[ "$(in_h systemctl show -p NRestarts --value berthd)" = 1 ] \
    || fail "NRestarts is $(in_h systemctl show -p NRestarts --value berthd)"
# shellcheck disable=SC2086
wait_for "ready again after the restart" 60 in_h $HEALTH_CMD
log "ok: kill -9: restarted after ${ELAPSED}s (RestartSec=5s) as pid $(main_pid), NRestarts=1, ready"

STEP="stop"
STARTED=$(date +%s)
in_h systemctl stop berthd || fail "systemctl stop berthd failed"
ELAPSED=$(($(date +%s) - STARTED))
STATE=$(in_h systemctl is-active berthd || true)
[ "$STATE" = inactive ] || fail "berthd is $STATE after systemctl stop, not inactive"
RESULT=$(in_h systemctl show -p Result --value berthd)
CODE=$(in_h systemctl show -p ExecMainStatus --value berthd)
[ "$RESULT" = success ] || fail "stop result is $RESULT"
[ "$CODE" = 0 ] || fail "berthd exited with status $CODE on SIGTERM"
log "ok: systemctl stop: inactive, result success, exit status 0, in ${ELAPSED}s"

STEP="no restart on a config error"
# Exit status 2 (configuration or usage error) is RestartPreventExitStatus:
# the unit fails and stays failed past RestartSec.
in_h cp /etc/berth/berthd.toml /etc/berth/berthd.toml.good
in_h sed -i 's/^node_id = 1$/node_id = "one"/' /etc/berth/berthd.toml
in_h systemctl start berthd || true
failed() { [ "$(in_h systemctl is-active berthd || true)" = failed ]; }
wait_for "berthd.service failed on a bad node_id" 15 failed
RESTARTS=$(in_h systemctl show -p NRestarts --value berthd)
sleep 7
failed || fail "berthd is $(in_h systemctl is-active berthd) 7s after exiting on a config error, not failed"
[ "$(in_h systemctl show -p NRestarts --value berthd)" = "$RESTARTS" ] || fail "systemd restarted berthd after a config error"
[ "$(in_h systemctl show -p ExecMainStatus --value berthd)" = 2 ] \
    || fail "berthd exited with $(in_h systemctl show -p ExecMainStatus --value berthd) on a bad config, not 2"
in_h mv /etc/berth/berthd.toml.good /etc/berth/berthd.toml
in_h systemctl reset-failed berthd
log "ok: a config error (exit status 2) leaves it failed, not restarted 7s later"

STEP="sandbox probes"
# What the system call filters refuse, tried by a process in berthd's
# sandbox: berthd.service with only ExecStart (a shell running the probes),
# Type and the restart lines changed. The same probes as the user berthd
# outside the sandbox are the control: each must be allowed there.
cat >"$WORK/probe.sh" <<'PROBE'
probe() { # NAME COMMAND...: prints NAME allowed|refused
    local out
    if out=$("${@:2}" 2>&1); then echo "$1 allowed"; else echo "$1 refused: $(echo "$out" | head -1)"; fi
}
probe RestrictNamespaces=yes unshare --user true
probe RestrictAddressFamilies=AF_INET/AF_INET6/AF_UNIX ip -brief link
probe LockPersonality=yes setarch linux32 true
touch /var/lib/berthd/.probe
probe RestrictSUIDSGID=yes chmod u+s /var/lib/berthd/.probe
rm -f /var/lib/berthd/.probe
PROBE
docker cp -q "$WORK/probe.sh" "$H:/usr/local/lib/berthd-probe.sh"
in_h setpriv --reuid=berthd --regid=berthd --init-groups bash /usr/local/lib/berthd-probe.sh >"$WORK/control" 2>&1
if grep -v ' allowed$' "$WORK/control" >"$WORK/bad"; then
    fail "control run outside the sandbox (as berthd): not allowed there, so the probe proves nothing: $(cat "$WORK/bad")"
fi
in_h sed -e 's#^ExecStart=.*#ExecStart=/bin/bash /usr/local/lib/berthd-probe.sh#' -e 's/^Type=simple$/Type=oneshot/' \
    -e '/^ExecReload=/d; /^Restart/d' -e 's/^Description=.*/Description=probes in the sandbox of berthd.service/' \
    /etc/systemd/system/berthd.service >"$WORK/probe.service"
docker cp -q "$WORK/probe.service" "$H:/etc/systemd/system/berthd-probe.service"
in_h systemctl daemon-reload
in_h systemctl start berthd-probe.service || fail "berthd-probe.service failed: $(in_h journalctl --no-pager -u berthd-probe -o cat | tail -5)"
in_h journalctl --no-pager -u berthd-probe -o cat | grep -E ' (allowed|refused)' >"$WORK/probed"
[ "$(grep -c . "$WORK/probed")" = "$(grep -c . "$WORK/control")" ] || fail "probe output: $(cat "$WORK/probed")"
if grep ' allowed$' "$WORK/probed" >"$WORK/bad"; then fail "allowed in berthd's sandbox: $(cat "$WORK/bad")"; fi
while read -r line; do log "ok: in the sandbox (allowed outside it): $line"; done <"$WORK/probed"
STEP=finished
