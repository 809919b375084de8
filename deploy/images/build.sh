#!/usr/bin/env bash
# Builds Berth's container images without pulling anything from a registry:
# every image is FROM scratch, filled with statically linked Berth binaries
# and, where an image needs a third-party program (containerd, runc, the
# registry, a shell for the entrypoints), that program's Debian binary plus
# the shared libraries `ldd` names.
#
#   deploy/images/build.sh                  build the binaries and all images
#   deploy/images/build.sh --export DIR     also write `docker save` tarballs,
#                                           the plain binaries and the agent
#                                           install files into DIR (air gap)
#
# Options:
#   --tag TAG          image tag (default: dev)
#   --export DIR       write DIR/images/*.tar (docker save), DIR/bin/* (static
#                      binaries), DIR/install/* (agent installer and unit),
#                      DIR/compose/* (the compose cluster), DIR/SHA256SUMS
#   --skip-cargo       reuse the binaries already in the static target dir
#   --only LIST        build only these images (comma-separated names from:
#                      berthd,berth,berth-agent,berth-lb,registry,bootstrap,
#                      prometheus)
#   --target-dir DIR   cargo target dir for the static build
#                      (default: target/static, kept apart from target/ so the
#                      workspace's normal build is never invalidated)
#
# Images (all tagged TAG):
#   berth/berthd       berthd, plus berth-agent and berth-logd (served at
#                      /downloads/berth-agent and /downloads/berth-logd) and berth
#   berth/berth        the CLI
#   berth/berth-agent  berth-agent and its log driver berth-logd, with its own
#                      containerd + runc (privileged),
#                      the CNI plugins and iptables of bridge-mode tasks
#   berth/berth-lb     berth-lb and the HAProxy it programs
#   berth/registry     Debian's docker-registry (distribution v2)
#   berth/bootstrap    busybox + berthd + berth + the compose bootstrap script
#   berth/prometheus   Debian's Prometheus (the compose `monitoring` profile)
#
# Idempotent: re-running rebuilds only what changed (cargo and docker
# caches). Needs: cargo (and protoc, installed by scripts/install-deps.sh),
# docker, file, ldd, and apt-get when a Debian binary is not on this host.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
HERE=$ROOT/deploy/images
TAG=dev
EXPORT=
SKIP_CARGO=0
ONLY=berthd,berth,berth-agent,berth-lb,registry,bootstrap,prometheus
TARGET_DIR=$ROOT/target/static

log() { echo "build.sh: $*" >&2; }
die() { echo "build.sh: error: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
    case "$1" in
        --tag) TAG=${2:?--tag needs a value}; shift 2 ;;
        --export) EXPORT=${2:?--export needs a directory}; shift 2 ;;
        --skip-cargo) SKIP_CARGO=1; shift ;;
        --only) ONLY=${2:?--only needs a list}; shift 2 ;;
        --target-dir) TARGET_DIR=${2:?--target-dir needs a directory}; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
done
case "$TAG" in
    *[!A-Za-z0-9_.-]*|'') die "--tag $TAG: only letters, digits, '_', '.', '-'" ;;
esac
for name in ${ONLY//,/ }; do
    case "$name" in
        berthd|berth|berth-agent|berth-lb|registry|bootstrap|prometheus) ;;
        *) die "--only: unknown image $name (berthd,berth,berth-agent,berth-lb,registry,bootstrap,prometheus)" ;;
    esac
done
wants() { [[ ",$ONLY," == *",$1,"* ]]; }

case "$(uname -m)" in
    x86_64) TRIPLE=x86_64-unknown-linux-gnu; MULTIARCH=x86_64-linux-gnu ;;
    aarch64) TRIPLE=aarch64-unknown-linux-gnu; MULTIARCH=aarch64-linux-gnu ;;
    *) die "unsupported architecture $(uname -m) (x86_64 or aarch64)" ;;
esac

for tool in docker file ldd; do
    command -v "$tool" >/dev/null || die "$tool is missing (apt-get install ${tool/ldd/libc-bin})"
done
docker info >/dev/null 2>&1 || die "cannot talk to the Docker daemon (is it running, and may this user use it?)"

STAGE=$ROOT/target/images
CACHE=$STAGE/cache
BIN_DIR=$TARGET_DIR/$TRIPLE/release
mkdir -p "$STAGE" "$CACHE"

# --- 1. static Berth binaries ---------------------------------------------
NEED_BINARIES=0
if wants berthd || wants berth || wants berth-agent || wants berth-lb || wants bootstrap || [ -n "$EXPORT" ]; then
    NEED_BINARIES=1
fi
if [ "$NEED_BINARIES" = 1 ] && [ "$SKIP_CARGO" = 0 ]; then
    "$ROOT/scripts/install-deps.sh"
    rustup target list --installed 2>/dev/null | grep -qx "$TRIPLE" \
        || log "note: rustup does not list $TRIPLE as installed; cargo will say if it is missing"
    log "building static berthd, berth-agent, berth-logd, berth, berth-lb ($TRIPLE, release) into $TARGET_DIR"
    # crt-static links glibc statically; the release profile's debug info is
    # dropped so the images stay small (symbols stay for backtraces). One
    # cargo invocation for all five: the shared dependencies are built once
    # with one set of features.
    (cd "$ROOT" && RUSTFLAGS='-C target-feature=+crt-static' \
        CARGO_PROFILE_RELEASE_DEBUG=0 CARGO_PROFILE_RELEASE_STRIP=debuginfo \
        cargo build --locked --release --target "$TRIPLE" --target-dir "$TARGET_DIR" \
        -p berth-server -p berth-agent -p berth-logd -p berth-cli -p berth-lb \
        --bin berthd --bin berth-agent --bin berth-logd --bin berth --bin berth-lb) \
        || die "cargo build failed (see above)"
fi
for bin in berthd berth-agent berth-logd berth berth-lb; do
    [ "$NEED_BINARIES" = 1 ] || break
    [ -x "$BIN_DIR/$bin" ] || die "$BIN_DIR/$bin is missing; run without --skip-cargo"
    desc=$(file -b "$BIN_DIR/$bin")
    case "$desc" in
        *"statically linked"*|*"static-pie linked"*) ;;
        *) die "$bin is not statically linked: $desc" ;;
    esac
    if ldd "$BIN_DIR/$bin" 2>&1 | grep -q '=>'; then
        die "$bin still needs shared libraries: $(ldd "$BIN_DIR/$bin" 2>&1 | tr '\n' ' ')"
    fi
done
[ "$NEED_BINARIES" = 0 ] || log "static binaries OK: $(cd "$BIN_DIR" && ls -l berthd berth-agent berth-logd berth berth-lb | awk '{printf "%s (%.1f MiB) ", $9, $5/1048576}')"

# --- helpers for third-party binaries --------------------------------------
# debian_path PACKAGE PATH: prints a usable copy of PATH (a file or a
# directory) from PACKAGE: the host's own when it is installed, else the
# package downloaded with `apt-get download` (nothing is installed on this
# host) and unpacked.
debian_path() {
    local pkg=$1 path=$2
    if [ -e "$path" ]; then
        echo "$path"
        return
    fi
    local dir=$CACHE/debs/$pkg
    if [ ! -e "$dir/root$path" ]; then
        command -v apt-get >/dev/null \
            || die "$path is missing and there is no apt-get to fetch Debian's $pkg; install $pkg"
        log "fetching Debian package $pkg (for $path)"
        rm -rf "$dir" && mkdir -p "$dir/root"
        (cd "$dir" && apt-get download "$pkg" >/dev/null 2>"$dir/apt.log") \
            || (apt-get update -qq >/dev/null 2>&1 && cd "$dir" && apt-get download "$pkg" >/dev/null 2>"$dir/apt.log") \
            || die "apt-get download $pkg failed: $(tail -3 "$dir/apt.log")"
        dpkg-deb -x "$dir"/*.deb "$dir/root"
        [ -e "$dir/root$path" ] || die "package $pkg has no $path"
    fi
    echo "$dir/root$path"
}

# debian_bin PACKAGE PATH: debian_path for an executable.
debian_bin() {
    local found
    found=$(debian_path "$1" "$2")
    [ -x "$found" ] || die "$found (from $1) is not executable"
    echo "$found"
}

# add_bin SRC ROOTFS DEST: copies SRC to ROOTFS/DEST with every shared
# library (and the dynamic loader) ldd lists, at the same paths.
add_bin() {
    local src=$1 rootfs=$2 dest=$3
    install -D -m 0755 "$src" "$rootfs$dest"
    local out
    out=$(ldd "$src" 2>&1) || true
    if grep -q 'not found' <<<"$out"; then
        die "$src needs libraries this host does not have: $(grep 'not found' <<<"$out" | tr '\n' ' ')"
    fi
    local lib
    for lib in $(awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' <<<"$out"); do
        install -D -m 0755 "$(readlink -f "$lib")" "$rootfs$lib"
    done
}

# stage NAME: a fresh build context with an empty rootfs/.
stage() {
    local ctx=$STAGE/$1
    rm -rf "$ctx"
    mkdir -p "$ctx/rootfs"
    cp "$HERE/$1/Dockerfile" "$ctx/Dockerfile"
    echo "$ctx"
}

base_files() { # ROOTFS: /etc/passwd, /etc/group, /tmp, CA bundle
    local rootfs=$1
    mkdir -p "$rootfs/etc/ssl/certs" "$rootfs/tmp"
    chmod 1777 "$rootfs/tmp"
    printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n' > "$rootfs/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' > "$rootfs/etc/group"
    if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
        cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/"
    fi
}

add_busybox() { # ROOTFS: a static busybox as /bin/sh and its applets
    local rootfs=$1 bb
    bb=$(debian_bin busybox-static /bin/busybox)
    file -b "$bb" | grep -q 'statically linked' || die "$bb is not a static busybox"
    install -D -m 0755 "$bb" "$rootfs/bin/busybox"
    local applet
    # `true`: the agent runs `unshare --net=FILE true` to make a task's netns.
    for applet in sh cat cp echo env grep head ls mkdir mv rm sed sleep test tr wc kill ps date chmod ln \
        printf seq cut awk id hostname timeout nc wget tail sort tee find cmp stat touch mount umount tar gzip gunzip du df \
        true false; do
        ln -sf busybox "$rootfs/bin/$applet"
    done
}

build_image() { # NAME CTX
    local image=berth/$1:$TAG
    log "docker build $image"
    if ! docker build -q -t "$image" "$2" >"$2.log" 2>&1; then
        cat "$2.log" >&2
        die "docker build of $image failed (above)"
    fi
    BUILT+=("$image")
}

BUILT=()

# --- 2. images ---------------------------------------------------------------
if wants berthd; then
    ctx=$(stage berthd)
    base_files "$ctx/rootfs"
    for bin in berthd berth-agent berth-logd berth; do
        install -D -m 0755 "$BIN_DIR/$bin" "$ctx/rootfs/usr/local/bin/$bin"
    done
    mkdir -p "$ctx/rootfs/var/lib/berthd"
    build_image berthd "$ctx"
fi

if wants berth; then
    ctx=$(stage berth)
    base_files "$ctx/rootfs"
    install -D -m 0755 "$BIN_DIR/berth" "$ctx/rootfs/usr/local/bin/berth"
    build_image berth "$ctx"
fi

if wants berth-agent; then
    ctx=$(stage agent)
    rootfs=$ctx/rootfs
    base_files "$rootfs"
    add_busybox "$rootfs"
    install -D -m 0755 "$BIN_DIR/berth-agent" "$rootfs/usr/local/bin/berth-agent"
    # The log driver the shims start per container; the agent looks for it
    # beside its own binary.
    install -D -m 0755 "$BIN_DIR/berth-logd" "$rootfs/usr/local/bin/berth-logd"
    add_bin "$(debian_bin containerd /usr/bin/containerd)" "$rootfs" /usr/bin/containerd
    add_bin "$(debian_bin containerd /usr/bin/containerd-shim-runc-v2)" "$rootfs" /usr/bin/containerd-shim-runc-v2
    add_bin "$(debian_bin containerd /usr/bin/ctr)" "$rootfs" /usr/bin/ctr
    add_bin "$(debian_bin runc /usr/sbin/runc)" "$rootfs" /usr/sbin/runc
    tini=$(debian_bin tini /usr/bin/tini-static)
    install -D -m 0755 "$tini" "$rootfs/sbin/tini"
    # Bridge-mode tasks: the agent makes each task's netns with util-linux's
    # unshare and wires it with the standard CNI plugins (its default
    # --cni-bin-dir, /usr/lib/cni), whose bridge, portmap and firewall
    # program iptables (found on PATH).
    add_bin "$(debian_bin util-linux /usr/bin/unshare)" "$rootfs" /usr/bin/unshare
    for plugin in loopback bridge host-local portmap firewall; do
        add_bin "$(debian_bin containernetworking-plugins "/usr/lib/cni/$plugin")" "$rootfs" "/usr/lib/cni/$plugin"
    done
    # Debian's iptables (nf_tables backend, its default): one multi-call
    # binary, and the match and target extensions it dlopens by name (ldd
    # cannot see those), each with the libraries it needs.
    add_bin "$(debian_bin iptables /usr/sbin/xtables-nft-multi)" "$rootfs" /usr/sbin/xtables-nft-multi
    for name in iptables iptables-save iptables-restore ip6tables ip6tables-save ip6tables-restore; do
        ln -sf xtables-nft-multi "$rootfs/usr/sbin/$name"
    done
    xt=$(debian_path iptables "/usr/lib/$MULTIARCH/xtables")
    for ext in "$xt"/*.so; do
        add_bin "$ext" "$rootfs" "/usr/lib/$MULTIARCH/xtables/$(basename "$ext")"
    done
    # iptables names protocols (`-p tcp`) through /etc/protocols.
    if [ -f /etc/protocols ]; then
        install -D -m 0644 /etc/protocols "$rootfs/etc/protocols"
    fi
    install -D -m 0644 "$HERE/agent/containerd.toml" "$rootfs/etc/containerd/config.toml"
    install -D -m 0755 "$HERE/agent/entrypoint.sh" "$rootfs/usr/local/bin/agent-entrypoint"
    mkdir -p "$rootfs/var/lib/containerd" "$rootfs/var/lib/berth-agent" "$rootfs/run" "$rootfs/etc/berth"
    build_image berth-agent "$ctx"
fi

if wants berth-lb; then
    ctx=$(stage berth-lb)
    rootfs=$ctx/rootfs
    base_files "$rootfs"
    install -D -m 0755 "$BIN_DIR/berth-lb" "$rootfs/usr/local/bin/berth-lb"
    # Debian's HAProxy (2.6, what berth-lb's tests run) with exactly the
    # libraries ldd names. At run time it needs only what berth-lb writes
    # (its config and sockets under /run/berth-lb) and /dev/urandom, which
    # Docker provides; without /etc/localtime it logs in UTC.
    add_bin "$(debian_bin haproxy /usr/sbin/haproxy)" "$rootfs" /usr/sbin/haproxy
    mkdir -p "$rootfs/run/berth-lb" "$rootfs/etc/berth-lb"
    chmod 0700 "$rootfs/run/berth-lb"
    build_image berth-lb "$ctx"
fi

if wants registry; then
    ctx=$(stage registry)
    rootfs=$ctx/rootfs
    base_files "$rootfs"
    add_busybox "$rootfs"
    add_bin "$(debian_bin docker-registry /usr/bin/docker-registry)" "$rootfs" /usr/bin/docker-registry
    install -D -m 0644 "$HERE/registry/config.yml" "$rootfs/etc/docker/registry/config.yml"
    mkdir -p "$rootfs/var/lib/registry"
    build_image registry "$ctx"
fi

if wants prometheus; then
    ctx=$(stage prometheus)
    rootfs=$ctx/rootfs
    base_files "$rootfs"
    add_busybox "$rootfs"
    # The API and the expression browser's API are what is used; the web
    # UI's JavaScript (other Debian packages) is left out.
    add_bin "$(debian_bin prometheus /usr/bin/prometheus)" "$rootfs" /usr/bin/prometheus
    mkdir -p "$rootfs/var/lib/prometheus" "$rootfs/etc/prometheus"
    chmod 0777 "$rootfs/var/lib/prometheus"
    build_image prometheus "$ctx"
fi

if wants bootstrap; then
    ctx=$(stage bootstrap)
    rootfs=$ctx/rootfs
    base_files "$rootfs"
    add_busybox "$rootfs"
    install -D -m 0755 "$BIN_DIR/berthd" "$rootfs/usr/local/bin/berthd"
    install -D -m 0755 "$BIN_DIR/berth" "$rootfs/usr/local/bin/berth"
    install -D -m 0755 "$HERE/bootstrap/bootstrap.sh" "$rootfs/usr/local/bin/berth-bootstrap"
    build_image bootstrap "$ctx"
fi

# Earlier builds of these images, now untagged, only take disk space.
docker image prune -f --filter label=org.berth.image >/dev/null 2>&1 || true
for image in "${BUILT[@]}"; do
    log "built $image ($(docker image inspect -f '{{.Size}}' "$image" | awk '{printf "%.1f MiB", $1/1048576}'))"
done

# --- 3. air-gap export --------------------------------------------------------
if [ -n "$EXPORT" ]; then
    mkdir -p "$EXPORT/images" "$EXPORT/bin" "$EXPORT/install" "$EXPORT/compose"
    EXPORT=$(cd "$EXPORT" && pwd)
    for bin in berthd berth-agent berth-logd berth berth-lb; do
        install -m 0755 "$BIN_DIR/$bin" "$EXPORT/bin/$bin"
    done
    install -m 0755 "$ROOT/deploy/install/install-agent.sh" "$EXPORT/install/install-agent.sh"
    install -m 0644 "$ROOT/deploy/install/berth-agent.service" "$EXPORT/install/berth-agent.service"
    install -m 0644 "$ROOT/deploy/compose/docker-compose.yml" "$EXPORT/compose/docker-compose.yml"
    install -m 0644 "$ROOT/deploy/compose/.env" "$EXPORT/compose/.env"
    install -m 0644 "$ROOT/deploy/compose/lb.toml" "$EXPORT/compose/lb.toml"
    for image in "${BUILT[@]}"; do
        file=$EXPORT/images/$(echo "${image#berth/}" | tr ':' '_').tar
        log "docker save $image > $file"
        docker save -o "$file.tmp" "$image" || die "docker save $image failed"
        chmod 0644 "$file.tmp"
        mv "$file.tmp" "$file"
    done
    (cd "$EXPORT" && find bin install compose images -type f ! -name '*.tmp' | sort | xargs sha256sum > SHA256SUMS)
    log "exported to $EXPORT: load images with 'docker load -i FILE', check with 'sha256sum -c SHA256SUMS'"
fi
