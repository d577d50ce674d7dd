"""The lab kubelet's OCI runtime spec from a pod's container and its image (pure)."""

from __future__ import annotations

import pytest
from lightkube.models.core_v1 import Capabilities, Container, PodSecurityContext, SecurityContext

from portico.dev.kubelet.oci import (
    DEFAULT_CAPABILITIES,
    ContainerConfigError,
    Mount,
    capabilities,
    command_line,
    merged_env,
    runtime_spec,
    user,
)
from portico.dev.kubelet.volumes import quantity_bytes

IMAGE = {"config": {"Entrypoint": ["/usr/local/bin/portico"], "Cmd": ["--help"], "User": "65532:65532",
                    "Env": ["PYTHONUNBUFFERED=1", "MODE=image"], "WorkingDir": "/srv"}}
PASSWD = "root:x:0:0:root:/root:/bin/sh\nnonroot:x:65532:65532::/home/nonroot:/bin/false\n"
GROUP = "root:x:0:\nnonroot:x:65532:\n"


def test_command_replaces_the_entrypoint_and_args_the_cmd() -> None:
    entrypoint, cmd = ["/entry"], ["default"]
    assert command_line(Container(name="c"), entrypoint, cmd) == ["/entry", "default"]
    assert command_line(Container(name="c", args=["agent"]), entrypoint, cmd) == ["/entry", "agent"]
    assert command_line(Container(name="c", command=["nft"]), entrypoint, cmd) == ["nft"]  # the Cmd goes too
    assert command_line(Container(name="c", command=["nft"], args=["list"]), entrypoint, cmd) == ["nft", "list"]


def test_the_container_environment_wins_over_the_image_and_a_path_is_always_set() -> None:
    env = merged_env(["MODE=image", "EMPTY"], {"MODE": "pod", "NODE_NAME": "node-1"})
    assert env[0].startswith("PATH=/usr/local/sbin:")
    assert env[1:] == ["MODE=pod", "EMPTY=", "NODE_NAME=node-1"]
    assert merged_env(["PATH=/opt/bin"], {}) == ["PATH=/opt/bin"]


def test_the_user_comes_from_run_as_over_the_image_and_names_resolve_in_the_image() -> None:
    assert user("65532:65532", None, None) == user("nonroot", None, None, PASSWD, GROUP)
    assert user("nonroot", None, None, PASSWD, GROUP).gid == 65532  # the primary group from /etc/passwd
    assert user("65532:65532", SecurityContext(runAsUser=0), PodSecurityContext(runAsUser=7)).uid == 0
    assert user("65532", None, PodSecurityContext(runAsUser=7, runAsGroup=8, supplementalGroups=[9],
                                                   fsGroup=10)).__dict__ == {
        "uid": 7, "gid": 8, "additional_gids": (9, 10)}
    with pytest.raises(ContainerConfigError, match="runAsNonRoot and image will run as root"):
        user("", SecurityContext(runAsNonRoot=True), None)
    with pytest.raises(ContainerConfigError, match="unable to find user 'ghost'"):
        user("ghost", None, None, PASSWD, GROUP)


def test_capabilities_are_the_runtime_default_minus_drop_plus_add() -> None:
    assert capabilities(None) == list(DEFAULT_CAPABILITIES)
    agent = SecurityContext(capabilities=Capabilities(drop=["ALL"], add=["NET_ADMIN", "NET_RAW"]))
    assert capabilities(agent) == ["CAP_NET_ADMIN", "CAP_NET_RAW"]
    dropped = capabilities(SecurityContext(capabilities=Capabilities(drop=["NET_RAW", "CAP_KILL"])))
    assert "CAP_NET_RAW" not in dropped and "CAP_KILL" not in dropped and "CAP_CHOWN" in dropped


def test_the_spec_joins_the_pod_network_and_keeps_the_security_context() -> None:
    container = Container(name="agent", args=["agent"], securityContext=SecurityContext(
        runAsUser=0, allowPrivilegeEscalation=False, readOnlyRootFilesystem=True,
        capabilities=Capabilities(drop=["ALL"], add=["NET_ADMIN"])))
    spec = runtime_spec(container=container, pod_security=None, image_config=IMAGE, rootfs="/b/rootfs",
                        hostname="node-1", netns_path="/run/netns/node-1", env={"NODE_NAME": "node-1"},
                        mounts=[Mount("/pods/x/volumes/run", "/run/portico"),
                                Mount("/pods/x/token", "/var/run/secrets/kubernetes.io/serviceaccount", True)])
    process = spec["process"]
    assert process["args"] == ["/usr/local/bin/portico", "agent"] and process["cwd"] == "/srv"
    assert process["user"] == {"uid": 0, "gid": 65532} and process["noNewPrivileges"] is True
    assert process["capabilities"]["effective"] == process["capabilities"]["bounding"] == ["CAP_NET_ADMIN"]
    assert "NODE_NAME=node-1" in process["env"] and "MODE=image" in process["env"]
    assert spec["root"] == {"path": "/b/rootfs", "readonly": True} and spec["hostname"] == "node-1"
    assert {"type": "network", "path": "/run/netns/node-1"} in spec["linux"]["namespaces"]
    assert {n["type"] for n in spec["linux"]["namespaces"]} == {"pid", "ipc", "uts", "mount", "network"}
    binds = {m["destination"]: m["options"] for m in spec["mounts"] if m["type"] == "bind"}
    assert binds == {"/run/portico": ["rbind", "rprivate", "rw"],
                     "/var/run/secrets/kubernetes.io/serviceaccount": ["rbind", "rprivate", "ro"]}
    assert "/proc/kcore" in spec["linux"]["maskedPaths"] and "/proc/sys" in spec["linux"]["readonlyPaths"]


def test_an_image_without_a_command_and_a_container_without_one_is_a_config_error() -> None:
    with pytest.raises(ContainerConfigError, match="no command specified"):
        runtime_spec(container=Container(name="c"), pod_security=None, image_config={"config": {}}, rootfs="/r",
                     hostname="h", netns_path="/n", env={}, mounts=[])


def test_quantities_in_bytes() -> None:
    assert quantity_bytes("1Mi") == 1 << 20
    assert quantity_bytes("64M") == 64_000_000
    assert quantity_bytes("1.5Gi") == 3 << 29
    assert quantity_bytes("1024") == 1024
