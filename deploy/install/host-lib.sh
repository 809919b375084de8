# Host-like containers for the install tests (deploy/install/test-install.sh,
# deploy/install/test-berthd-systemd.sh): a debootstrap'ed Debian rootfs
# imported with `docker import` (nothing pulled from a registry), run with
# systemd as PID 1. Source it after deploy/test-lib.sh, with ROOT set.
#
#   ensure_host_image       builds $HOST_IMAGE when missing (the rootfs is
#                           cached in target/test-host)
#   "${HOSTLIKE[@]}"        docker run options for a host-like container
#   $REMOUNT                shell command making the cgroup mounts writable;
#                           run before `exec /sbin/init`
#   systemd_up CONTAINER    0 once systemd in CONTAINER is running or degraded
#
# The image is HOST_IMAGE if set (default berth/test-host:bookworm); the
# mirror is DEBIAN_MIRROR if set, else the one this host's apt uses.
# shellcheck shell=bash

HOST_IMAGE=${HOST_IMAGE:-berth/test-host:bookworm}
SUITE=${SUITE:-bookworm}
MIRROR=${DEBIAN_MIRROR:-}

# A host-like container: what --privileged gives, minus CAP_SYS_RESOURCE
# (--privileged fails where the Docker daemon itself lacks a capability,
# as on Berth's CI machine), its own cgroup namespace, and the cgroup
# mounts made writable before systemd starts.
# shellcheck disable=SC2034  # used by the scripts that source this file
HOSTLIKE=(--cap-add ALL --cap-drop SYS_RESOURCE --security-opt seccomp=unconfined
    --security-opt apparmor=unconfined --security-opt systempaths=unconfined --cgroupns=private)
# shellcheck disable=SC2016,SC2034  # expanded by the container's shell
REMOUNT='for m in $(awk "\$3 == \"cgroup\" || \$3 == \"cgroup2\" {print \$2}" /proc/mounts); do mount -o remount,rw,bind $m; done'

# apt_mirror: the archive URI this host's apt configuration uses, preferring
# an entry for $SUITE, then any entry that is not a security or updates
# archive, then any. One-line (sources.list, *.list) and deb822 (*.sources)
# files are read; commented-out and disabled entries are not.
apt_mirror() {
    local files=() f
    [ -f /etc/apt/sources.list ] && files+=(/etc/apt/sources.list)
    for f in /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] && files+=("$f")
    done
    [ ${#files[@]} -gt 0 ] || return 1
    awk -v suite="$SUITE" '
        function flush() {
            if (types ~ /(^| )deb( |$)/ && enabled != "no")
                for (i = 1; i <= nu; i++) add(uris[i], suites)
            types = ""; suites = ""; nu = 0; enabled = ""
        }
        function add(uri, s) {
            if (uri !~ /^https?:\/\//) return
            if (first == "") first = uri
            if (plain == "" && s !~ /-(security|updates|backports)/) plain = uri
            if (exact == "" && (" " s " ") ~ (" " suite " ")) exact = uri
        }
        FNR == 1 { flush(); deb822 = (FILENAME ~ /\.sources$/) }
        /^[[:space:]]*#/ { next }
        deb822 {
            if ($0 ~ /^[[:space:]]*$/) { flush(); next }
            key = tolower($1); sub(/:$/, "", key); $1 = ""; sub(/^ +/, "")
            if (key == "types") types = $0
            else if (key == "uris") nu = split($0, uris, " ")
            else if (key == "suites") suites = $0
            else if (key == "enabled") enabled = tolower($0)
            next
        }
        $1 == "deb" {
            n = 2
            if ($2 ~ /^\[/) { while (n <= NF && $n !~ /\]$/) n++; n++ }
            add($n, $(n + 1))
        }
        END {
            flush()
            if (exact != "") print exact; else if (plain != "") print plain; else if (first != "") print first
        }
    ' "${files[@]}"
}

# ensure_host_image: $HOST_IMAGE exists afterwards. Debootstraps the rootfs
# the first time (cached in target/test-host), then `docker import`s it.
ensure_host_image() {
    docker image inspect "$HOST_IMAGE" >/dev/null 2>&1 && return 0
    local cache=$ROOT/target/test-host
    if [ ! -f "$cache/rootfs.tar" ]; then
        if [ -z "$MIRROR" ]; then
            MIRROR=$(apt_mirror) || true
            [ -n "$MIRROR" ] || fail "no Debian mirror: this host's apt configuration (/etc/apt/sources.list, /etc/apt/sources.list.d/) names none; set DEBIAN_MIRROR=URL"
            log "using the mirror of this host's apt configuration: $MIRROR"
        fi
        if ! command -v debootstrap >/dev/null; then
            log "installing debootstrap"
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null \
                || fail "apt-get install debootstrap failed"
        fi
        log "debootstrap $SUITE from $MIRROR (once; cached in $cache)"
        rm -rf "$cache/rootfs"
        mkdir -p "$cache"
        timeout 1200 debootstrap --variant=minbase \
            --include=systemd,systemd-sysv,dbus,curl,openssl,ca-certificates,procps,iproute2 \
            "$SUITE" "$cache/rootfs" "$MIRROR" >"$cache/debootstrap.log" 2>&1 \
            || fail "debootstrap failed: $(tail -5 "$cache/debootstrap.log")"
        # No units that make no sense in a container.
        rm -f "$cache/rootfs"/etc/systemd/system/*.wants/systemd-timesyncd.service
        echo berth-install-test >"$cache/rootfs/etc/hostname"
        tar -C "$cache/rootfs" -cf "$cache/rootfs.tar.tmp" . && mv "$cache/rootfs.tar.tmp" "$cache/rootfs.tar"
        rm -rf "$cache/rootfs"
    fi
    log "docker import $HOST_IMAGE"
    docker import --change 'CMD ["/sbin/init"]' --change 'ENV container=docker' \
        "$cache/rootfs.tar" "$HOST_IMAGE" >/dev/null || fail "docker import failed"
}

# systemd_up CONTAINER: systemd in CONTAINER has finished starting up.
systemd_up() {
    local s
    s=$(docker exec "$1" systemctl is-system-running 2>/dev/null || true)
    case "$s" in running|degraded) return 0 ;; *) echo "systemd: ${s:-not answering}"; return 1 ;; esac
}
