"""A CRI client on Python's grpcio with its default channel options, as a user writes one.

grpcio (since 1.57) sends the socket path, percent-encoded, as the HTTP/2 :authority of a
unix: target; dockpod must serve it. The CRI stubs are generated with grpcio-tools at start
from upstream's api.proto, the same file (Debian's golang-k8s-cri-api-dev) that dockpod's
bindings come from, so this client speaks the kubelet's API, not dockpod's.

usage: cri_client.py PROTO SOCKET SCENARIO [JSON ARGUMENTS]
  version                 Version
  list                    ListPodSandbox
  containers              ListContainers (a shim's socket answers for its own pod)
  lifecycle {name, uid, log_directory, image}
                          RunPodSandbox, CreateContainer, StartContainer, ContainerStatus,
                          ExecSync, ListContainers, StopPodSandbox, RemovePodSandbox,
                          ListPodSandbox
  todays_cri {name, uid, log_directory, image}
                          as a 1.36 kubelet sends them: a container with a stop signal and
                          an environment value as bytes, UpdatePodSandboxResources, and the
                          streaming lists; the pod is left running for the caller to inspect
Prints one JSON object with what each call answered.
"""

import importlib
import json
import os
import sys
import tempfile

import grpc
import grpc_tools
from grpc_tools import protoc


def stubs(proto):
    out = tempfile.mkdtemp(prefix="dockpod-cri-stubs-")
    directory, name = os.path.split(proto)
    includes = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    rc = protoc.main(
        [
            "protoc",
            f"-I{directory}",
            f"-I{includes}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            name,
        ]
    )
    if rc != 0:
        raise SystemExit(f"protoc failed on {proto}: {rc}")
    sys.path.insert(0, out)
    module = os.path.splitext(name)[0]
    return importlib.import_module(f"{module}_pb2"), importlib.import_module(f"{module}_pb2_grpc")


def main():
    proto, socket, scenario = sys.argv[1:4]
    args = json.loads(sys.argv[4]) if len(sys.argv) > 4 else {}
    pb, rpc = stubs(proto)
    # Default options: no grpc.default_authority.
    channel = grpc.insecure_channel(f"unix://{socket}")
    runtime = rpc.RuntimeServiceStub(channel)
    result = {}
    if scenario == "version":
        v = runtime.Version(pb.VersionRequest(), timeout=30)
        result = {"runtime_name": v.runtime_name, "runtime_api_version": v.runtime_api_version}
    elif scenario == "list":
        pods = runtime.ListPodSandbox(pb.ListPodSandboxRequest(), timeout=30)
        result = {"pods": [p.id for p in pods.items]}
    elif scenario == "containers":
        containers = runtime.ListContainers(pb.ListContainersRequest(), timeout=30)
        result = {"containers": [c.id for c in containers.containers]}
    elif scenario == "lifecycle":
        result = lifecycle(pb, runtime, args)
    elif scenario == "todays_cri":
        result = todays_cri(pb, runtime, args)
    else:
        raise SystemExit(f"unknown scenario {scenario}")
    print(json.dumps(result))


def lifecycle(pb, runtime, args):
    name = args["name"]
    pod = pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(
            name=name, uid=args["uid"], namespace="dockpod-test", attempt=0
        ),
        log_directory=args["log_directory"],
        labels={"dockpod-test": "pod"},
    )
    sandbox = runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=pod), timeout=120).pod_sandbox_id
    container = runtime.CreateContainer(
        pb.CreateContainerRequest(
            pod_sandbox_id=sandbox,
            sandbox_config=pod,
            config=pb.ContainerConfig(
                metadata=pb.ContainerMetadata(name="main", attempt=0),
                image=pb.ImageSpec(image=args["image"]),
                command=["sh", "-c", "echo from-python; exec sleep 3600"],
                log_path="main/0.log",
            ),
        ),
        timeout=120,
    ).container_id
    runtime.StartContainer(pb.StartContainerRequest(container_id=container), timeout=120)
    status = runtime.ContainerStatus(
        pb.ContainerStatusRequest(container_id=container), timeout=30
    ).status
    executed = runtime.ExecSync(
        pb.ExecSyncRequest(container_id=container, cmd=["sh", "-c", "echo exec-ok; exit 3"], timeout=30),
        timeout=60,
    )
    listed = runtime.ListContainers(
        pb.ListContainersRequest(filter=pb.ContainerFilter(pod_sandbox_id=sandbox)), timeout=30
    )
    runtime.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=sandbox), timeout=120)
    stopped = runtime.PodSandboxStatus(
        pb.PodSandboxStatusRequest(pod_sandbox_id=sandbox), timeout=30
    ).status
    runtime.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=sandbox), timeout=120)
    remaining = runtime.ListPodSandbox(pb.ListPodSandboxRequest(), timeout=30)
    return {
        "sandbox": sandbox,
        "container": container,
        "state": pb.ContainerState.Name(status.state),
        "exec_stdout": executed.stdout.decode(),
        "exec_exit_code": executed.exit_code,
        "listed": [c.id for c in listed.containers],
        "stopped_state": pb.PodSandboxState.Name(stopped.state),
        "remaining": [p.id for p in remaining.items],
    }


def todays_cri(pb, runtime, args):
    pod = pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(
            name=args["name"], uid=args["uid"], namespace="dockpod-test", attempt=0
        ),
        log_directory=args["log_directory"],
    )
    sandbox = runtime.RunPodSandbox(pb.RunPodSandboxRequest(config=pod), timeout=120).pod_sandbox_id
    container = runtime.CreateContainer(
        pb.CreateContainerRequest(
            pod_sandbox_id=sandbox,
            sandbox_config=pod,
            config=pb.ContainerConfig(
                metadata=pb.ContainerMetadata(name="main", attempt=0),
                image=pb.ImageSpec(image=args["image"]),
                command=["sh", "-c", 'echo "env=$GREETING"; exec sleep 3600'],
                envs=[pb.KeyValue(key="GREETING", value="grüße".encode())],
                log_path="main/0.log",
                stop_signal=pb.SIGQUIT,
            ),
        ),
        timeout=120,
    ).container_id
    runtime.StartContainer(pb.StartContainerRequest(container_id=container), timeout=120)
    status = runtime.ContainerStatus(
        pb.ContainerStatusRequest(container_id=container), timeout=30
    ).status
    runtime.UpdatePodSandboxResources(
        pb.UpdatePodSandboxResourcesRequest(
            pod_sandbox_id=sandbox,
            resources=pb.LinuxContainerResources(cpu_shares=384, memory_limit_in_bytes=80 << 20),
        ),
        timeout=60,
    )
    streamed = [
        c.id
        for chunk in runtime.StreamContainers(pb.StreamContainersRequest(), timeout=30)
        for c in chunk.containers
    ]
    pods = [
        p.id
        for chunk in runtime.StreamPodSandboxes(pb.StreamPodSandboxesRequest(), timeout=30)
        for p in chunk.pod_sandboxes
    ]
    return {
        "sandbox": sandbox,
        "container": container,
        "stop_signal": pb.Signal.Name(status.stop_signal),
        "image_ref": status.image.image_ref,
        "streamed_containers": streamed,
        "streamed_pods": pods,
    }


if __name__ == "__main__":
    main()
