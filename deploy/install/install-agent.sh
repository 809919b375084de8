#!/usr/bin/env bash
# Berth agent installer: joins this host to a Berth control plane, in the
# spirit of ECS Anywhere's install script. Served by every berthd at
# https://SERVER/downloads/install-agent.sh.
#
#   sudo ./install-agent.sh --server 10.0.0.5:7400,10.0.0.6:7400 --token BERTH1-...
#
# It checks the host (Linux, x86_64 or aarch64, root, systemd), checks that
# the control plane's CA is the one the join token pins (SHA-256 of the CA
# certificate's DER, taken from the TLS handshake), installs the standard
# CNI plugins and iptables that bridge-mode tasks need when they are
# missing (apt: containernetworking-plugins, dnf: the same), installs berth-agent and
# berth-logd (the log driver containerd's shim starts for each container; the
# agent looks for it beside itself) to /usr/local/bin (given with --binary,
# or downloaded from the control plane over TLS verified against that CA,
# each checked against the SHA-256 the server publishes), writes
# /etc/berth/agent.toml (0600)
# and, on a host not yet registered, the join token to /etc/berth/join-token
# (0600), which the agent deletes once it has registered; installs and
# starts the berth-agent systemd service, waits until the instance is ACTIVE
# and prints its instance id on stdout. The token is never written to
# agent.toml.
#
# Re-running is safe: what is already in place is kept, and the agent is
# restarted only when its binary or configuration changed.
#
# Options:
#   --server HOST:PORT[,...]   control-plane servers (env BERTH_SERVER)
#   --token TOKEN              join token from `berth activation create`
#                              (env BERTH_JOIN_TOKEN); checks the CA, and
#                              registers a host not yet registered; not kept
#   --cluster NAME             cluster to join (default: the token's)
#   --attribute KEY=VALUE      placement attribute (repeatable)
#   --binary PATH              install this berth-agent instead of downloading it
#                              (and the berth-logd beside it, unless --logd-binary)
#   --logd-binary PATH         install this berth-logd (with --binary)
#   --containerd-install       install containerd + runc (apt or dnf) when missing
#   --no-cni                   do not install the CNI plugins and iptables
#                              (bridge-mode tasks then cannot run here)
#   --containerd-socket PATH   containerd's socket (default /run/containerd/containerd.sock)
#   --health-listen HOST:PORT  agent health endpoint (default 127.0.0.1:7481)
#   --no-start                 install and configure, but do not start the agent
#   --no-systemd               no service: run the agent in the foreground under
#                              this script (for tests and hosts without systemd);
#                              a second run leaves a running, unchanged agent alone
#   --timeout SECONDS          how long to wait for ACTIVE (default 120)
#   --uninstall                stop and remove the agent, its service, config,
#                              identity and its task containers
#   -h, --help
set -euo pipefail

BIN=/usr/local/bin/berth-agent
LOGD=/usr/local/bin/berth-logd
CONF_DIR=/etc/berth
CONF=$CONF_DIR/agent.toml
CA_FILE=$CONF_DIR/ca.crt
TOKEN_FILE=$CONF_DIR/join-token
UNIT=/etc/systemd/system/berth-agent.service
STATE_DIR=/var/lib/berth-agent
DATA_DIR=$STATE_DIR/identity
PID_FILE=/run/berth-agent.pid
LOG_FILE=/var/log/berth-agent.log
NAMESPACE=berth

SERVER=${BERTH_SERVER:-}
TOKEN=${BERTH_JOIN_TOKEN:-}
CLUSTER=
ATTRIBUTES=()
BINARY=
LOGD_BINARY=
CONTAINERD_INSTALL=0
NO_CNI=0
SOCKET=/run/containerd/containerd.sock
HEALTH=127.0.0.1:7481
NO_START=0
NO_SYSTEMD=0
UNINSTALL=0
TIMEOUT=120

# --------------------------------------------------------------- systemd unit
# A copy of deploy/install/berth-agent.service (this script is served alone).
write_unit() {
    cat <<'UNIT'
# berth-agent as a systemd service; installed by install-agent.sh, which
# embeds a copy of this file (keep the two identical: test-install.sh checks).
[Unit]
Description=Berth agent: runs Berth tasks through containerd
Documentation=https://github.com/berth/berth/blob/main/docs/operations.md
Wants=network-online.target containerd.service
After=network-online.target containerd.service

[Service]
Type=simple
ExecStart=/usr/local/bin/berth-agent --config /etc/berth/agent.toml
Restart=on-failure
RestartSec=5s
# Stop only the agent's own process, never the rest of its cgroup. Task
# containers belong to containerd's shims (normally in containerd's cgroup,
# each container in its own), and they must outlive an agent restart,
# upgrade or crash: the agent finds them again on start and reconciles.
# With the default KillMode=control-group, systemd would SIGKILL anything
# that ended up in this unit's cgroup on `systemctl stop|restart` (a shim or
# log driver started while containerd ran from this unit, for example),
# taking running tasks down with the agent. containerd.service uses
# KillMode=process for the same reason.
KillMode=process
KillSignal=SIGTERM
TimeoutStopSec=30s
LimitNOFILE=1048576
# The agent needs root: it drives containerd, whose socket is root-only.
User=root

[Install]
WantedBy=multi-user.target
UNIT
}

log() { echo "install-agent: $*" >&2; }
die() { echo "install-agent: error: $*" >&2; exit 1; }
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
    case "$1" in
        --server) SERVER=${2:?--server needs HOST:PORT[,...]}; shift 2 ;;
        --token) TOKEN=${2:?--token needs a value}; shift 2 ;;
        --cluster) CLUSTER=${2:?--cluster needs a name}; shift 2 ;;
        --attribute) ATTRIBUTES+=("${2:?--attribute needs KEY=VALUE}"); shift 2 ;;
        --binary) BINARY=${2:?--binary needs a path}; shift 2 ;;
        --logd-binary) LOGD_BINARY=${2:?--logd-binary needs a path}; shift 2 ;;
        --containerd-install) CONTAINERD_INSTALL=1; shift ;;
        --no-cni) NO_CNI=1; shift ;;
        --containerd-socket) SOCKET=${2:?--containerd-socket needs a path}; shift 2 ;;
        --health-listen) HEALTH=${2:?--health-listen needs HOST:PORT}; shift 2 ;;
        --no-start) NO_START=1; shift ;;
        --no-systemd) NO_SYSTEMD=1; shift ;;
        --timeout) TIMEOUT=${2:?--timeout needs seconds}; shift 2 ;;
        --uninstall) UNINSTALL=1; shift ;;
        --print-unit) write_unit; exit 0 ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done

# ---------------------------------------------------------------- host checks
[ "$(uname -s)" = Linux ] || die "unsupported OS $(uname -s): berth-agent runs on Linux only"
case "$(uname -m)" in
    x86_64|amd64) ARCH=x86_64; ELF_MACHINE=62 ;;
    aarch64|arm64) ARCH=aarch64; ELF_MACHINE=183 ;;
    *) die "unsupported architecture $(uname -m): berth-agent is built for x86_64 and aarch64" ;;
esac
[ "$(id -u)" = 0 ] || die "run as root (sudo $0 ...): the agent drives containerd and installs a system service"
case "$TIMEOUT" in ''|*[!0-9]*) die "--timeout $TIMEOUT: seconds, a whole number" ;; esac

OS_ID=unknown OS_LIKE=
if [ -r /etc/os-release ]; then
    # shellcheck disable=SC1091
    OS_ID=$(. /etc/os-release && echo "${ID:-unknown}")
    # shellcheck disable=SC1091
    OS_LIKE=$(. /etc/os-release && echo "${ID_LIKE:-}")
fi

have_systemd() { [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; }
if [ "$NO_SYSTEMD" = 0 ] && [ "$UNINSTALL" = 0 ] && ! have_systemd; then
    die "systemd is not running on this host (no /run/systemd/system); re-run with --no-systemd to run the agent in the foreground, or install it as a service of your init system (ExecStart: $BIN --config $CONF)"
fi

# A live agent started by --no-systemd, if any.
foreground_pid() {
    local pid
    pid=$(cat "$PID_FILE" 2>/dev/null) || return 1
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
    grep -q berth-agent "/proc/$pid/cmdline" 2>/dev/null || return 1
    echo "$pid"
}

stop_foreground() {
    local pid
    pid=$(foreground_pid) || return 0
    log "stopping the running agent (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 300); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        die "the agent (pid $pid) did not stop within 30s"
    fi
    rm -f "$PID_FILE"
}

instance_id() {
    sed -n 's/.*"instanceId" *: *"\([^"]*\)".*/\1/p' "$DATA_DIR/identity.json" 2>/dev/null | head -1
}

# ------------------------------------------------------------------ uninstall
if [ "$UNINSTALL" = 1 ]; then
    id=$(instance_id || true)
    if have_systemd && [ -f "$UNIT" ]; then
        log "stopping and removing the berth-agent service"
        systemctl disable --now berth-agent.service >/dev/null 2>&1 || true
        rm -f "$UNIT"
        systemctl daemon-reload
        systemctl reset-failed berth-agent.service >/dev/null 2>&1 || true
    fi
    stop_foreground
    # Task containers outlive the agent on purpose; uninstalling removes them.
    if command -v ctr >/dev/null 2>&1 && [ -S "$SOCKET" ]; then
        ctr_ns() { ctr --address "$SOCKET" -n "$NAMESPACE" "$@"; }
        tasks=$(ctr_ns tasks ls -q 2>/dev/null || true)
        for t in $tasks; do ctr_ns tasks kill -s SIGKILL "$t" >/dev/null 2>&1 || true; done
        [ -n "$tasks" ] && sleep 1
        for t in $tasks; do ctr_ns tasks delete -f "$t" >/dev/null 2>&1 || true; done
        for c in $(ctr_ns containers ls -q 2>/dev/null || true); do
            ctr_ns containers delete "$c" >/dev/null 2>&1 || true
        done
        n=$(echo "$tasks" | grep -c . || true)
        log "removed $n task container(s) from containerd namespace $NAMESPACE"
    fi
    rm -f "$BIN" "$LOGD" "$CONF" "$CA_FILE" "$TOKEN_FILE" "$PID_FILE"
    rmdir "$CONF_DIR" 2>/dev/null || true
    # Bridge-mode tasks' network namespaces are files bind-mounted under
    # the state dir, whose netns directory the agent makes a mount of its
    # own: unmounted (deepest first, detached as the agent does) or rm
    # fails with "Device or resource busy". A netns goes with its last
    # process, and its veth with it.
    state_mounts() { awk -v d="$STATE_DIR/" 'index($2, d) == 1 {print $2}' /proc/self/mounts | sort -r; }
    if [ -d "$STATE_DIR" ]; then
        # A path may be mounted more than once (the directory on itself).
        for _ in 1 2 3; do
            mounts=$(state_mounts)
            [ -n "$mounts" ] || break
            for m in $mounts; do umount -l "$m" 2>/dev/null || true; done
        done
        mounts=$(state_mounts)
        [ -z "$mounts" ] || log "warning: still mounted under $STATE_DIR: $(echo "$mounts" | tr '\n' ' ')"
    fi
    rm -rf "$STATE_DIR"
    log "berth-agent uninstalled"
    if [ -n "$id" ]; then
        log "deregister the instance on the control plane too: berth instance deregister $id"
    fi
    exit 0
fi

# ------------------------------------------------------- binaries given here
# Checked before anything is installed.
if [ -n "$BINARY" ]; then
    [ -f "$BINARY" ] || die "--binary $BINARY: no such file"
    LOGD_BINARY=${LOGD_BINARY:-$(dirname "$BINARY")/berth-logd}
    [ -f "$LOGD_BINARY" ] \
        || die "no berth-logd at $LOGD_BINARY: the agent's log driver ships with berth-agent; put it beside --binary or pass --logd-binary PATH"
elif [ -n "$LOGD_BINARY" ]; then
    die "--logd-binary goes with --binary"
fi

# ------------------------------------------------------------- token + server
[ -n "$SERVER" ] || die "--server HOST:PORT[,HOST:PORT...] is required"
[ -n "$TOKEN" ] || die "--token is required (a join token from 'berth activation create')"
TOKEN=$(echo "$TOKEN" | tr -d '[:space:]')
if ! [[ "$TOKEN" =~ ^BERTH1-[0-9a-fA-F]+-[0-9a-fA-F]+-([0-9a-fA-F]{64})$ ]]; then
    die "the join token is malformed: it looks like BERTH1-<id>-<secret>-<64 hex digits of the CA digest>, as printed by 'berth activation create'"
fi
PIN=$(echo "${BASH_REMATCH[1]}" | tr 'A-F' 'a-f')
IFS=, read -r -a SERVERS <<<"$SERVER"
for s in "${SERVERS[@]}"; do
    [[ "$s" =~ ^[^:[:space:]]+:[0-9]+$ || "$s" =~ ^\[[0-9a-fA-F:]+\]:[0-9]+$ ]] \
        || die "--server $s is not HOST:PORT"
done
for a in "${ATTRIBUTES[@]+"${ATTRIBUTES[@]}"}"; do
    [[ "$a" =~ ^[^=]+=.*$ ]] || die "--attribute $a is not KEY=VALUE"
done

for tool in openssl curl sha256sum; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is missing (Debian/Ubuntu: apt-get install openssl curl coreutils; RHEL/Fedora: dnf install openssl curl coreutils)"
done

WORK=$(mktemp -d /tmp/berth-install.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

# Fetches the chain a server presents and keeps its last certificate (the
# CA) in $WORK/ca.pem. Returns 1 when the server cannot be reached.
fetch_ca() {
    local server=$1
    # No -servername: openssl sends the host as SNI by itself when it is a
    # name, and none for an IP address.
    if ! timeout 15 openssl s_client -connect "$server" -showcerts \
        </dev/null >"$WORK/chain.txt" 2>"$WORK/s_client.err"; then
        grep -q 'BEGIN CERTIFICATE' "$WORK/chain.txt" 2>/dev/null || return 1
    fi
    awk '/-----BEGIN CERTIFICATE-----/{pem=""; on=1} on{pem=pem $0 "\n"} /-----END CERTIFICATE-----/{on=0; last=pem} END{printf "%s", last}' \
        "$WORK/chain.txt" >"$WORK/ca.pem"
    [ -s "$WORK/ca.pem" ]
}

REACHED=
for s in "${SERVERS[@]}"; do
    if fetch_ca "$s"; then
        REACHED=$s
        break
    fi
    log "cannot reach $s: $(grep -v '^$' "$WORK/s_client.err" 2>/dev/null | grep -iv 'depth\|verify' | head -1)"
done
[ -n "$REACHED" ] || die "cannot reach any control-plane server (${SERVER}) over TLS: check the address, the port and the firewall"
DIGEST=$(openssl x509 -in "$WORK/ca.pem" -outform DER | sha256sum | cut -d' ' -f1)
if [ "$DIGEST" != "$PIN" ]; then
    die "the CA presented by $REACHED (sha256 $DIGEST) is not the one the join token pins ($PIN): the token is for another cluster, or something between this host and the server is intercepting TLS. Nothing was installed."
fi
log "control plane $REACHED presents the CA the token pins (sha256 ${DIGEST:0:16}...)"

# ---------------------------------------------------------------- containerd
containerd_up() {
    if command -v ctr >/dev/null 2>&1; then
        ctr --address "$SOCKET" version >/dev/null 2>&1
    else
        [ -S "$SOCKET" ]
    fi
}

if ! command -v containerd >/dev/null 2>&1 && ! [ -S "$SOCKET" ]; then
    if [ "$CONTAINERD_INSTALL" = 0 ]; then
        die "containerd is not installed (and nothing listens on $SOCKET): install containerd >= 1.6 and runc, or re-run with --containerd-install"
    fi
    case " $OS_ID $OS_LIKE " in
        *" debian "*|*" ubuntu "*)
            log "installing containerd and runc with apt-get"
            export DEBIAN_FRONTEND=noninteractive
            if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends containerd runc; } \
                >"$WORK/pkg.log" 2>&1; then
                die "apt-get install containerd runc failed: $(tail -5 "$WORK/pkg.log")"
            fi
            ;;
        *" fedora "*|*" rhel "*|*" centos "*|*" rocky "*|*" almalinux "*|*" amzn "*)
            command -v dnf >/dev/null 2>&1 || die "no dnf on this $OS_ID host; install containerd yourself"
            log "installing containerd and runc with dnf"
            dnf install -y -q containerd runc >"$WORK/pkg.log" 2>&1 \
                || die "dnf install containerd runc failed (on RHEL-like systems containerd comes from Docker's repository as containerd.io): $(tail -5 "$WORK/pkg.log")"
            ;;
        *) die "--containerd-install supports Debian/Ubuntu (apt) and Fedora/RHEL-like (dnf) hosts; this is $OS_ID: install containerd >= 1.6 yourself" ;;
    esac
fi
if ! containerd_up; then
    if [ "$NO_SYSTEMD" = 0 ]; then
        log "starting containerd.service"
        systemctl enable --now containerd.service >/dev/null 2>&1 \
            || die "cannot start containerd.service: $(systemctl status containerd.service 2>&1 | tail -5)"
    else
        log "starting containerd in the background (log: /var/log/berth-containerd.log)"
        mkdir -p "$(dirname "$SOCKET")"
        setsid containerd --address "$SOCKET" >>/var/log/berth-containerd.log 2>&1 </dev/null &
    fi
    for _ in $(seq 1 150); do containerd_up && break; sleep 0.2; done
    containerd_up || die "containerd does not answer on $SOCKET (see its log)"
fi
command -v runc >/dev/null 2>&1 || log "warning: runc is not on PATH; containerd will not be able to start tasks"

# --------------------------------------------------------------- CNI plugins
# Bridge-mode tasks get their own netns wired to the bridge berth0 by the
# standard CNI plugins (containernetworking/plugins), which program iptables.
# Debian and Ubuntu put the plugins in /usr/lib/cni (berth-agent's default
# --cni-bin-dir), Fedora and RHEL in /usr/libexec/cni, upstream's releases
# in /opt/cni/bin: the first directory holding all of them is the agent's.
CNI_PLUGINS="loopback bridge host-local portmap"
cni_dir() {
    local d p
    for d in /usr/lib/cni /usr/libexec/cni /opt/cni/bin; do
        for p in $CNI_PLUGINS; do [ -x "$d/$p" ] || continue 2; done
        echo "$d"
        return 0
    done
    return 1
}
have_iptables() { command -v iptables >/dev/null 2>&1 || [ -x /usr/sbin/iptables ] || [ -x /sbin/iptables ]; }
CNI_DIR=
if [ "$NO_CNI" = 1 ]; then
    log "--no-cni: not installing the CNI plugins; bridge-mode tasks cannot run on this host unless they are there"
    CNI_DIR=$(cni_dir) || CNI_DIR=
elif CNI_DIR=$(cni_dir) && have_iptables; then
    log "CNI plugins found in $CNI_DIR"
else
    pkgs=()
    cni_dir >/dev/null || pkgs+=(containernetworking-plugins)
    have_iptables || pkgs+=(iptables)
    case " $OS_ID $OS_LIKE " in
        *" debian "*|*" ubuntu "*)
            log "installing ${pkgs[*]} with apt-get (bridge-mode tasks need them)"
            export DEBIAN_FRONTEND=noninteractive
            if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${pkgs[@]}"; } \
                >"$WORK/cni.log" 2>&1; then
                die "apt-get install ${pkgs[*]} failed: $(tail -5 "$WORK/cni.log"); re-run with --no-cni to install the agent without bridge-mode tasks"
            fi
            ;;
        *" fedora "*|*" rhel "*|*" centos "*|*" rocky "*|*" almalinux "*|*" amzn "*)
            command -v dnf >/dev/null 2>&1 \
                || die "no dnf on this $OS_ID host to install ${pkgs[*]}; install them yourself or re-run with --no-cni"
            log "installing ${pkgs[*]} with dnf (bridge-mode tasks need them)"
            dnf install -y -q "${pkgs[@]}" >"$WORK/cni.log" 2>&1 \
                || die "dnf install ${pkgs[*]} failed: $(tail -5 "$WORK/cni.log"); re-run with --no-cni to install the agent without bridge-mode tasks"
            ;;
        *) die "bridge-mode tasks need the CNI plugins ($CNI_PLUGINS) and iptables, which this script installs on Debian/Ubuntu (apt) and Fedora/RHEL-like (dnf) hosts; this is $OS_ID: install them yourself (plugins in /opt/cni/bin or /usr/lib/cni) or re-run with --no-cni" ;;
    esac
    CNI_DIR=$(cni_dir) || die "installed ${pkgs[*]}, but found no directory with all of $CNI_PLUGINS (looked in /usr/lib/cni /usr/libexec/cni /opt/cni/bin)"
    have_iptables || die "installed ${pkgs[*]}, but there is still no iptables"
    log "CNI plugins installed in $CNI_DIR"
fi

# ------------------------------------------------------------------ binaries
# berth-agent and berth-logd ship together: the agent refuses to start
# without the log driver beside it, so both are checked before either is
# installed, and the driver goes in first.
elf_machine() { od -An -t u2 -j 18 -N 2 "$1" 2>/dev/null | tr -d ' '; }
# fetch_binary NAME: downloads NAME and checks it against the SHA-256 the
# server publishes beside it (a download cut short or changed on the way is
# refused, not installed).
fetch_binary() {
    local name=$1 url code sum
    url="https://$REACHED/downloads/$name"
    log "downloading $url"
    code=$(curl -sS --fail-with-body --cacert "$WORK/ca.crt" --connect-timeout 15 --max-time 300 \
        -o "$WORK/$name" -w '%{http_code}' "$url" 2>"$WORK/curl.err") \
        || die "download of $url failed (HTTP ${code:-?}): $(tail -2 "$WORK/curl.err") $(head -c 300 "$WORK/$name" 2>/dev/null | tr -cd '[:print:]')"
    sum=$(curl -sS --fail --cacert "$WORK/ca.crt" --connect-timeout 15 --max-time 60 "$url.sha256" 2>"$WORK/curl.err") \
        || die "download of $url.sha256 failed: $(tail -2 "$WORK/curl.err")"
    [ "$(sha256sum "$WORK/$name" | cut -d' ' -f1)" = "${sum%% *}" ] \
        || die "the downloaded $name does not match the SHA-256 the server publishes at $url.sha256 (${sum%% *}); nothing was installed"
    log "$name matches its published SHA-256 (${sum:0:16}...)"
}
if [ -n "$BINARY" ]; then
    cp "$BINARY" "$WORK/berth-agent"
    cp "$LOGD_BINARY" "$WORK/berth-logd"
else
    cp "$WORK/ca.pem" "$WORK/ca.crt"
    fetch_binary berth-agent
    fetch_binary berth-logd
fi
for name in berth-agent berth-logd; do
    [ "$(head -c 4 "$WORK/$name" | od -An -c | tr -d ' ')" = '177ELF' ] \
        || die "the $name binary is not an ELF executable"
    [ "$(elf_machine "$WORK/$name")" = "$ELF_MACHINE" ] \
        || die "the $name binary is not built for $ARCH (this host); pass --binary with one that is"
done
CHANGED=0
if ! cmp -s "$WORK/berth-logd" "$LOGD"; then
    install -D -m 0755 "$WORK/berth-logd" "$LOGD.new"
    # Without arguments it exits 2 (usage); 126/127 mean it cannot run here.
    rc=0
    "$LOGD.new" >/dev/null 2>&1 || rc=$?
    if [ "$rc" != 2 ]; then
        rm -f "$LOGD.new"
        die "the berth-logd binary does not run on this host (exit status $rc)"
    fi
    # Running drivers keep the file they started from; new containers get
    # this one. The agent itself need not restart for it.
    mv -f "$LOGD.new" "$LOGD"
    log "installed $LOGD"
else
    log "$LOGD is up to date"
fi
if ! cmp -s "$WORK/berth-agent" "$BIN"; then
    # Tried where it will live: /tmp may be mounted noexec.
    install -D -m 0755 "$WORK/berth-agent" "$BIN.new"
    if ! "$BIN.new" --help >/dev/null 2>&1; then
        rm -f "$BIN.new"
        die "the berth-agent binary does not run on this host ('berth-agent --help' failed)"
    fi
    mv -f "$BIN.new" "$BIN"
    log "installed $BIN"
    CHANGED=1
else
    log "$BIN is up to date"
fi

# -------------------------------------------------------------------- config
toml_str() { printf '"%s"' "$(printf '%s' "$1" | sed 's/\\/\\\\/g; s/"/\\"/g')"; }
{
    echo "# berth-agent configuration, written by install-agent.sh. Keys are the"
    echo "# agent's long flag names (--state-dir -> state_dir); flags and BERTH_*"
    echo "# environment variables override them. The join token is not kept here:"
    echo "# the agent reads it from token_file to register and then deletes that file."
    echo "server = $(toml_str "$SERVER")"
    echo "token_file = $(toml_str "$TOKEN_FILE")"
    [ -n "$CLUSTER" ] && echo "cluster = $(toml_str "$CLUSTER")"
    if [ ${#ATTRIBUTES[@]} -gt 0 ]; then
        printf 'attribute = ['
        sep=
        for a in "${ATTRIBUTES[@]}"; do printf '%s%s' "$sep" "$(toml_str "$a")"; sep=', '; done
        echo ']'
    fi
    echo "data_dir = $(toml_str "$DATA_DIR")"
    echo "state_dir = $(toml_str "$STATE_DIR")"
    echo "containerd_socket = $(toml_str "$SOCKET")"
    echo "namespace = $(toml_str "$NAMESPACE")"
    echo "health_listen = $(toml_str "$HEALTH")"
    # The agent looks in /usr/lib/cni unless told otherwise.
    if [ -n "$CNI_DIR" ] && [ "$CNI_DIR" != /usr/lib/cni ]; then
        echo "cni_bin_dir = $(toml_str "$CNI_DIR")"
    fi
} >"$WORK/agent.toml"
mkdir -p "$CONF_DIR"
chmod 0755 "$CONF_DIR"
if ! cmp -s "$WORK/agent.toml" "$CONF"; then
    install -m 0600 "$WORK/agent.toml" "$CONF"
    log "wrote $CONF"
    CHANGED=1
else
    chmod 0600 "$CONF"
    log "$CONF is up to date"
fi
install -m 0644 "$WORK/ca.pem" "$CA_FILE"
# The token goes to the agent only while this host is not registered; the
# agent deletes the file once it is. A registered host never gets it again.
if [ -n "$(instance_id || true)" ]; then
    rm -f "$TOKEN_FILE"
else
    (umask 077 && printf '%s\n' "$TOKEN" >"$TOKEN_FILE.new") && mv -f "$TOKEN_FILE.new" "$TOKEN_FILE"
    log "wrote the join token to $TOKEN_FILE (the agent deletes it once registered)"
fi
mkdir -p "$STATE_DIR"
chmod 0700 "$STATE_DIR"


health_ok() {
    curl -fsS --max-time 3 -o /dev/null "http://$HEALTH/readyz" 2>/dev/null
}

# Waits until the agent has an instance id and its session is up (the
# control plane accepts sessions only from ACTIVE instances). $1: a
# command that succeeds while the agent process is alive.
wait_active() {
    local alive=$1 start id
    start=$(date +%s)
    log "waiting up to ${TIMEOUT}s for the instance to become ACTIVE"
    while :; do
        id=$(instance_id || true)
        if [ -n "$id" ] && health_ok; then
            log "instance $id is ACTIVE"
            echo "$id"
            return 0
        fi
        if ! $alive; then
            log "the agent exited before its instance became ACTIVE"
            return 1
        fi
        if [ $(($(date +%s) - start)) -ge "$TIMEOUT" ]; then
            log "timed out after ${TIMEOUT}s waiting for ACTIVE (instance id: ${id:-none yet}; readiness http://$HEALTH/readyz: $(curl -sS --max-time 3 "http://$HEALTH/readyz" 2>&1 | head -1))"
            return 1
        fi
        sleep 1
    done
}

if [ "$NO_SYSTEMD" = 0 ]; then
    write_unit >"$WORK/unit"
    if ! cmp -s "$WORK/unit" "$UNIT"; then
        install -m 0644 "$WORK/unit" "$UNIT"
        log "installed $UNIT"
        CHANGED=1
    fi
    systemctl daemon-reload
    systemctl enable berth-agent.service >/dev/null 2>&1 || die "systemctl enable berth-agent failed"
    if [ "$NO_START" = 1 ]; then
        log "installed; not started (--no-start): systemctl start berth-agent"
        exit 0
    fi
    if [ "$CHANGED" = 1 ] || ! systemctl is-active --quiet berth-agent.service; then
        log "(re)starting berth-agent.service"
        systemctl restart berth-agent.service
    else
        log "berth-agent.service is running and unchanged"
    fi
    # Alive while active, or restarting after a failure at most twice
    # (a refused token makes the agent exit at once, again and again).
    # shellcheck disable=SC2317  # called through wait_active's argument
    service_alive() {
        [ "$(systemctl show -p NRestarts --value berth-agent.service 2>/dev/null || echo 0)" -lt 3 ] || return 1
        systemctl is-active --quiet berth-agent.service \
            || [ "$(systemctl show -p ActiveState --value berth-agent.service)" = activating ]
    }
    if ! wait_active service_alive; then
        journalctl -u berth-agent.service -n 30 --no-pager >&2 2>/dev/null || true
        die "the agent did not become ACTIVE; its log is above (journalctl -u berth-agent)"
    fi
    exit 0
fi

# --no-systemd: the agent runs as this script's child, in the foreground.
if pid=$(foreground_pid); then
    if [ "$CHANGED" = 0 ]; then
        log "an unchanged agent is already running (pid $pid)"
        if ! wait_active "kill -0 $pid"; then
            die "the running agent is not ACTIVE; see $LOG_FILE"
        fi
        exit 0
    fi
    stop_foreground
fi
if [ "$NO_START" = 1 ]; then
    log "installed; not started (--no-start): $BIN --config $CONF"
    exit 0
fi
log "starting the agent in the foreground (log: $LOG_FILE; Ctrl-C or SIGTERM stops it)"
"$BIN" --config "$CONF" >>"$LOG_FILE" 2>&1 </dev/null &
AGENT=$!
echo "$AGENT" >"$PID_FILE"
trap 'kill -TERM "$AGENT" 2>/dev/null || true' TERM INT
if ! wait_active "kill -0 $AGENT"; then
    tail -30 "$LOG_FILE" >&2 || true
    kill -TERM "$AGENT" 2>/dev/null || true
    wait "$AGENT" 2>/dev/null || true
    rm -f "$PID_FILE"
    die "the agent did not become ACTIVE; its log is above ($LOG_FILE)"
fi
rc=0
wait "$AGENT" || rc=$?
# A trapped signal interrupts wait; wait again for the agent to finish.
while kill -0 "$AGENT" 2>/dev/null; do wait "$AGENT" || rc=$?; done
rm -f "$PID_FILE"
log "the agent exited (status $rc)"
exit "$rc"
