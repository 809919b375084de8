#!/usr/bin/env bash
# Installs what building Berth needs on a Debian/Ubuntu host: protoc for the
# gRPC code generation, strace for the test that traces berthd's fsyncs, and
# what berth-agent's bridge network mode runs: the standard CNI plugins
# (Debian's containernetworking-plugins, in /usr/lib/cni) and iptables, which
# the bridge and portmap plugins program; and haproxy, which berth-lb
# programs (its tests run a real one); systemd-analyze and setpriv for the
# check of berthd's systemd unit; and, for the test that drives the gRPC API
# from Python (tests/tests/grpc_api.rs), Debian's grpcio and protobuf for
# /usr/bin/python3, grpc's Python protoc plugin (Debian's grpcio-tools is too
# old for proto3 `optional`) and the reflection protocol's .proto files;
# and, for the tests of the ECS-compatible API with real AWS clients
# (tests/tests/ecs_clients.rs), Debian's aws CLI and boto3; and etcd, the
# peer `berth-bench raft --compare etcd` measures Berth against (its harness
# has a test that starts one).
# Safe to run repeatedly.
set -euo pipefail

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

missing=()
command -v protoc >/dev/null 2>&1 || missing+=(protobuf-compiler)
command -v strace >/dev/null 2>&1 || missing+=(strace)
[ -x /usr/lib/cni/bridge ] || missing+=(containernetworking-plugins)
command -v iptables >/dev/null 2>&1 || [ -x /usr/sbin/iptables ] || missing+=(iptables)
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || missing+=(haproxy)
# deploy/install/test-berthd-unit.sh checks berthd's unit with
# systemd-analyze and runs the server as another user with setpriv.
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
command -v setpriv >/dev/null 2>&1 || missing+=(util-linux)
py_has() { [ -x /usr/bin/python3 ] && /usr/bin/python3 -c "import $1" >/dev/null 2>&1; }
py_has grpc || missing+=(python3-grpcio)
py_has google.protobuf || missing+=(python3-protobuf)
command -v grpc_python_plugin >/dev/null 2>&1 || missing+=(protobuf-compiler-grpc)
[ -f /usr/share/grpc-proto/grpc/reflection/v1/reflection.proto ] || missing+=(grpc-proto)
[ -x /usr/bin/aws ] || missing+=(awscli)
py_has boto3 || missing+=(python3-boto3)
command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
if [ ${#missing[@]} -gt 0 ]; then
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "error: missing ${missing[*]} and no apt-get to install it; install them yourself (protoc is in protobuf-compiler)" >&2
        exit 1
    fi
    echo "installing ${missing[*]}" >&2
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if ! command -v cargo >/dev/null 2>&1; then
    echo "error: cargo is missing; install a Rust toolchain (https://rustup.rs) and retry" >&2
    exit 1
fi
