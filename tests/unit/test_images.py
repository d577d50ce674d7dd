from __future__ import annotations

import pytest
from lightkube.models.core_v1 import Container, ContainerPort

from portico.dev.kubelet.images import container_argv, image_name
from portico.dev.registry import mirrored


@pytest.mark.parametrize("image", ["portico.dev/echo", "portico.dev/echo:latest", "portico.dev/echo@sha256:ab"])
def test_image_name_strips_tag_and_digest(image: str) -> None:
    assert image_name(image) == "portico.dev/echo"


def test_registry_port_is_not_a_tag() -> None:
    assert image_name("registry:5000/echo") == "registry:5000/echo"


def test_echo_listens_on_declared_ports_or_default() -> None:
    ports = [ContainerPort(containerPort=80), ContainerPort(containerPort=53, protocol="UDP")]
    argv = container_argv(Container(name="c", image="portico.dev/echo", ports=ports), pod="p", node="n")
    assert argv is not None and argv[-2:] == ["--listen=80/TCP", "--listen=53/UDP"]
    default = container_argv(Container(name="c", image="portico.dev/echo"), pod="p", node="n")
    assert default is not None and default[-1] == "--listen=8080/TCP"


def test_every_other_image_is_one_to_pull() -> None:
    assert container_argv(Container(name="c", image="nginx"), pod="p", node="n") is None
    assert container_argv(Container(name="c", image="127.0.0.1:5055/portico:1"), pod="p", node="n") is None


def test_static_image_is_haproxy_answering_on_the_declared_tcp_ports() -> None:
    ports = [ContainerPort(containerPort=80), ContainerPort(containerPort=53, protocol="UDP")]
    argv = container_argv(Container(name="c", image="portico.dev/static", ports=ports), pod="p", node="n")
    assert argv is not None and argv[:2] == ["sh", "-c"] and "haproxy" in argv[2]
    assert "bind :::80 v4v6" in argv[2] and ":::53" not in argv[2]
    assert "nbthread" not in argv[2]  # a thread per CPU, HAProxy's default
    one = container_argv(Container(name="c", image="portico.dev/static", args=["--threads=1"]), pod="p", node="n")
    assert one is not None and "  nbthread 1\n" in one[2]


@pytest.mark.parametrize(("reference", "source"), [
    ("registry.k8s.io/gateway-api/echo-basic:v1.5.1", "127.0.0.1:5055/gateway-api/echo-basic:v1.5.1"),
    ("127.0.0.1:5055/portico:1", "127.0.0.1:5055/portico:1"),
    ("docker.io/library/nginx", "docker.io/library/nginx"),
    ("registry.k8s.io.evil/x:1", "registry.k8s.io.evil/x:1"),  # only that registry, not a look-alike
])
def test_the_lab_registry_mirrors_registry_k8s_io_and_nothing_else(reference: str, source: str) -> None:
    assert mirrored(reference) == source
