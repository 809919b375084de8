#!/usr/bin/env python3
"""Drives berthd's gRPC API as a client outside the Rust workspace would.

Stubs are generated from proto/ into a temporary directory (grpcio-tools'
`python3 -m grpc_tools.protoc` when it can compile the files, otherwise
protoc with grpc's Python plugin, as Debian packages them), then the script
calls a real berthd over TLS with the cluster CA:

    grpc_client_test.py --address 127.0.0.1:7400 --ca-cert ca.crt \
        --proto-dir proto        # the admin token in BERTH_TOKEN

Run by tests/tests/grpc_api.rs in CI. Exits non-zero on the first failed
check; prints one line per check.
"""

import argparse
import importlib
import os
import shutil
import subprocess
import sys
import tempfile
import uuid

import grpc

# Where the reflection protocol's own .proto files can be found when the
# grpcio-reflection package is not installed (Debian's grpc-proto).
REFLECTION_PROTO_DIRS = ["/usr/share/grpc-proto"]

# Services a client may call; reflection must list each of them.
CLIENT_SERVICES = [
    "berth.v1.ClusterService",
    "berth.v1.TaskDefinitionService",
    "berth.v1.ControlPlaneService",
    "berth.v1.AuthService",
    "berth.v1.ActivationService",
    "berth.v1.InstanceService",
    "berth.v1.TaskService",
    "berth.v1.ServiceService",
    "berth.v1.ScheduleService",
    "berth.v1.SecretService",
    "berth.v1.StatsService",
    "berth.v1.EventService",
    "berth.v1.BackupService",
]

NEUTRAL_NO_TOKEN = "send one as `authorization: Bearer TOKEN` metadata"

checks = 0


def ok(what):
    global checks
    checks += 1
    print(f"ok {checks} - {what}", flush=True)


def fail(what):
    print(f"FAILED: {what}", file=sys.stderr, flush=True)
    sys.exit(1)


def expect_error(code, call, *args, **kwargs):
    """Calls `call`, which must fail with `code`; returns the error."""
    try:
        reply = call(*args, **kwargs)
    except grpc.RpcError as error:
        if error.code() != code:
            fail(f"expected {code.name}, got {error.code().name}: {error.details()}")
        return error
    fail(f"expected {code.name}, the call succeeded: {reply}")
    return None


def generate(out, proto_dir, files):
    """Generates Python messages and gRPC stubs for `files` into `out`."""
    attempts = [[sys.executable, "-m", "grpc_tools.protoc"]]
    plugin = shutil.which("grpc_python_plugin")
    if shutil.which("protoc") and plugin:
        attempts.append(["protoc", f"--plugin=protoc-gen-grpc_python={plugin}"])
    errors = []
    for base in attempts:
        command = base + [
            f"-I{proto_dir}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            *files,
        ]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode == 0:
            return " ".join(base[:3])
        errors.append(f"{' '.join(base)}: {result.stderr.strip()[:400]}")
    fail("could not generate stubs:\n" + "\n".join(errors))
    return None


def berth_stubs(out, proto_dir):
    files = sorted(
        os.path.join("berth/v1", name)
        for name in os.listdir(os.path.join(proto_dir, "berth/v1"))
        if name.endswith(".proto")
    )
    tool = generate(out, proto_dir, files)
    ok(f"generated stubs for {len(files)} files in proto/ with {tool}")


def reflection_stubs(out, version):
    """The reflection protocol's messages and stub, `version` v1 or v1alpha:
    from grpcio-reflection when installed, else generated from the protocol's
    .proto file (Debian's grpc-proto). The file is copied under a directory
    of its own, as `grpc` is grpcio's Python package."""
    try:
        pb2 = importlib.import_module(f"grpc_reflection.{version}.reflection_pb2")
        pb2_grpc = importlib.import_module(f"grpc_reflection.{version}.reflection_pb2_grpc")
        return pb2, pb2_grpc
    except ImportError:
        pass
    relative = f"grpc/reflection/{version}/reflection.proto"
    for base in REFLECTION_PROTO_DIRS:
        source = os.path.join(base, relative)
        if os.path.exists(source):
            package = f"reflection_{version}"
            protos = os.path.join(out, "reflection-protos")
            os.makedirs(os.path.join(protos, package), exist_ok=True)
            shutil.copy(source, os.path.join(protos, package, "reflection.proto"))
            generate(out, protos, [f"{package}/reflection.proto"])
            return (
                importlib.import_module(f"{package}.reflection_pb2"),
                importlib.import_module(f"{package}.reflection_pb2_grpc"),
            )
    fail(
        "no reflection client: install grpcio-reflection, or Debian's grpc-proto "
        "(scripts/install-deps.sh installs it)"
    )
    return None


def reflect(channel, out, version):
    """Lists services and fetches one file's descriptors over reflection,
    without a token."""
    from google.protobuf import descriptor_pb2

    pb2, pb2_grpc = reflection_stubs(out, version)
    stub = pb2_grpc.ServerReflectionStub(channel)
    requests = [
        pb2.ServerReflectionRequest(list_services=""),
        pb2.ServerReflectionRequest(file_containing_symbol="berth.v1.TaskDefinitionService"),
    ]
    replies = list(stub.ServerReflectionInfo(iter(requests), timeout=15))
    if len(replies) != 2:
        fail(f"reflection {version}: {len(replies)} replies to 2 requests")
    for reply in replies:
        if reply.HasField("error_response"):
            fail(f"reflection {version}: {reply.error_response.error_message}")
    listed = {s.name for s in replies[0].list_services_response.service}
    missing = [s for s in CLIENT_SERVICES if s not in listed]
    if missing:
        fail(f"reflection {version} does not list {missing}; it lists {sorted(listed)}")
    ok(f"reflection {version} lists every service ({len(listed)}), no token needed")
    methods = set()
    for raw in replies[1].file_descriptor_response.file_descriptor_proto:
        file = descriptor_pb2.FileDescriptorProto.FromString(raw)
        for service in file.service:
            if service.name == "TaskDefinitionService":
                methods = {m.name for m in service.method}
    if "RegisterTaskDefinition" not in methods:
        fail(f"reflection {version}: TaskDefinitionService's descriptor lacks RegisterTaskDefinition ({methods})")
    ok(f"reflection {version} serves TaskDefinitionService's file descriptor")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", required=True, help="HOST:PORT of a berthd")
    parser.add_argument("--ca-cert", required=True, help="the cluster CA (ca.crt)")
    parser.add_argument("--proto-dir", required=True, help="the repository's proto/")
    args = parser.parse_args()
    token = os.environ.get("BERTH_TOKEN", "")
    if not token:
        fail("set BERTH_TOKEN to an admin token")

    out = tempfile.mkdtemp(prefix="berth-py-stubs-")
    try:
        berth_stubs(out, args.proto_dir)
        sys.path.insert(0, out)
        control = importlib.import_module("berth.v1.control_pb2")
        control_grpc = importlib.import_module("berth.v1.control_pb2_grpc")
        identity = importlib.import_module("berth.v1.identity_pb2")
        identity_grpc = importlib.import_module("berth.v1.identity_pb2_grpc")
        events = importlib.import_module("berth.v1.events_pb2")
        events_grpc = importlib.import_module("berth.v1.events_pb2_grpc")

        with open(args.ca_cert, "rb") as f:
            credentials = grpc.ssl_channel_credentials(root_certificates=f.read())
        channel = grpc.secure_channel(args.address, credentials)
        grpc.channel_ready_future(channel).result(timeout=15)
        ok(f"TLS connection to {args.address}, verified with the cluster CA")

        clusters = control_grpc.ClusterServiceStub(channel)
        taskdefs = control_grpc.TaskDefinitionServiceStub(channel)
        auth = [("authorization", f"Bearer {token}")]

        # Without a token: refused, with advice any client can follow.
        error = expect_error(
            grpc.StatusCode.UNAUTHENTICATED,
            clusters.ListClusters,
            control.ListClustersRequest(),
            timeout=15,
        )
        if NEUTRAL_NO_TOKEN not in error.details():
            fail(f"the refusal does not say how to send a token: {error.details()!r}")
        ok(f"no token: UNAUTHENTICATED, {error.details()!r}")
        error = expect_error(
            grpc.StatusCode.UNAUTHENTICATED,
            clusters.ListClusters,
            control.ListClustersRequest(),
            metadata=[("authorization", f"Token {token}")],
            timeout=15,
        )
        if "Bearer" not in error.details():
            fail(f"a wrong scheme is not explained: {error.details()!r}")
        ok("a token without `Bearer `: UNAUTHENTICATED, naming the scheme")

        # Task definitions.
        family = "py-" + uuid.uuid4().hex[:8]
        container = control.ContainerDefinition(
            name="web",
            image="localhost:5000/app:1",
            memory=64,
            essential=True,
            environment=[control.KeyValuePair(name="GREETING", value="hello from python")],
            port_mappings=[control.PortMapping(container_port=8080, protocol="tcp")],
        )
        spec = control.TaskDefinitionSpec(family=family, container_definitions=[container])
        registered = taskdefs.RegisterTaskDefinition(
            control.RegisterTaskDefinitionRequest(spec=spec), metadata=auth, timeout=15
        ).task_definition
        if registered.family != family or registered.revision != 1 or registered.status != "ACTIVE":
            fail(f"unexpected registration: {registered}")
        ok(f"registered {family}:{registered.revision}")
        listed = taskdefs.ListTaskDefinitions(
            control.ListTaskDefinitionsRequest(family=family), metadata=auth, timeout=15
        ).task_definitions
        if [(t.family, t.revision) for t in listed] != [(family, 1)]:
            fail(f"ListTaskDefinitions({family}): {listed}")
        ok("ListTaskDefinitions finds it")
        described = taskdefs.DescribeTaskDefinition(
            control.DescribeTaskDefinitionRequest(task_definition=f"{family}:1"),
            metadata=auth,
            timeout=15,
        ).task_definition
        read_back = described.spec.container_definitions
        if len(read_back) != 1 or read_back[0].image != container.image:
            fail(f"DescribeTaskDefinition: {described}")
        if [(e.name, e.value) for e in read_back[0].environment] != [
            ("GREETING", "hello from python")
        ]:
            fail(f"DescribeTaskDefinition lost the environment: {described}")
        if not read_back[0].HasField("memory") or read_back[0].memory != 64:
            fail(f"DescribeTaskDefinition lost the optional memory: {described}")
        ok("DescribeTaskDefinition reads it back as registered")
        families = taskdefs.ListTaskDefinitionFamilies(
            control.ListTaskDefinitionFamiliesRequest(), metadata=auth, timeout=15
        ).families
        if family not in [f.family for f in families]:
            fail(f"ListTaskDefinitionFamilies lacks {family}: {families}")
        ok("ListTaskDefinitionFamilies lists the family")

        # Clusters.
        name = "py-" + uuid.uuid4().hex[:8]
        created = clusters.CreateCluster(
            control.CreateClusterRequest(name=name, lost_after_secs=600),
            metadata=auth,
            timeout=15,
        ).cluster
        if created.name != name or created.lost_after_secs != 600:
            fail(f"CreateCluster: {created}")
        ok(f"created cluster {name}")
        described = clusters.DescribeCluster(
            control.DescribeClusterRequest(name=name), metadata=auth, timeout=15
        ).cluster
        if described.name != name or described.status != "ACTIVE" or described.lost_after_secs != 600:
            fail(f"DescribeCluster: {described}")
        names = [
            c.name
            for c in clusters.ListClusters(
                control.ListClustersRequest(), metadata=auth, timeout=15
            ).clusters
        ]
        if name not in names or "default" not in names:
            fail(f"ListClusters: {names}")
        ok("DescribeCluster and ListClusters read it back")

        # Errors: codes and messages that name what is wrong.
        error = expect_error(
            grpc.StatusCode.ALREADY_EXISTS,
            clusters.CreateCluster,
            control.CreateClusterRequest(name=name),
            metadata=auth,
            timeout=15,
        )
        ok(f"a second CreateCluster: ALREADY_EXISTS, {error.details()!r}")
        no_image = control.TaskDefinitionSpec(
            family=family,
            container_definitions=[control.ContainerDefinition(name="web", memory=64, essential=True)],
        )
        error = expect_error(
            grpc.StatusCode.INVALID_ARGUMENT,
            taskdefs.RegisterTaskDefinition,
            control.RegisterTaskDefinitionRequest(spec=no_image),
            metadata=auth,
            timeout=15,
        )
        if "containerDefinitions[0].image" not in error.details():
            fail(f"INVALID_ARGUMENT does not name the field: {error.details()!r}")
        ok(f"a container without an image: INVALID_ARGUMENT, {error.details()!r}")
        error = expect_error(
            grpc.StatusCode.NOT_FOUND,
            clusters.DescribeCluster,
            control.DescribeClusterRequest(name="no-such-cluster"),
            metadata=auth,
            timeout=15,
        )
        ok(f"an unknown cluster: NOT_FOUND, {error.details()!r}")

        # A readonly token reads but does not write.
        tokens = identity_grpc.AuthServiceStub(channel)
        readonly = tokens.CreateApiToken(
            identity.CreateApiTokenRequest(role="readonly", description="python client test"),
            metadata=auth,
            timeout=15,
        )
        as_reader = [("authorization", f"Bearer {readonly.secret}")]
        clusters.DescribeCluster(control.DescribeClusterRequest(name=name), metadata=as_reader, timeout=15)
        error = expect_error(
            grpc.StatusCode.PERMISSION_DENIED,
            clusters.DeleteCluster,
            control.DeleteClusterRequest(name=name),
            metadata=as_reader,
            timeout=15,
        )
        ok(f"a readonly token reads, and writes get PERMISSION_DENIED: {error.details()!r}")

        # A server-streaming call: the journal's events for the new cluster.
        stream = events_grpc.EventServiceStub(channel).WatchEvents(
            events.WatchEventsRequest(resource=f"cluster/{name}"), metadata=auth, timeout=15
        )
        seen = [e for reply in stream for e in reply.events]
        if not seen or not seen[0].cursor:
            fail(f"WatchEvents(cluster/{name}) sent no event with a cursor: {seen}")
        ok(f"WatchEvents streams the cluster's events ({len(seen)}, resumable at {seen[-1].cursor})")

        for version in ("v1", "v1alpha"):
            reflect(channel, out, version)
        channel.close()
    finally:
        shutil.rmtree(out, ignore_errors=True)
    print(f"{checks} passed, 0 failed", flush=True)


if __name__ == "__main__":
    main()
