"""The lab's built-in images: each maps a container to a command on this machine (the test apps). Every other
image is pulled from the lab registry and run by the container runtime (runtime.py), Portico's own among them."""

from __future__ import annotations

import sys

from lightkube.models.core_v1 import Container

ECHO_IMAGE = "portico.dev/echo"
STATIC_IMAGE = "portico.dev/static"
# The Gateway API conformance manifests' CoreDNS, whose Corefile forwards to public resolvers: a whoami stand-in.
COREDNS_IMAGE = "registry.k8s.io/coredns/coredns"
BUILTIN_IMAGES = (ECHO_IMAGE, STATIC_IMAGE, COREDNS_IMAGE)
DEFAULT_ECHO_PORT = "8080/TCP"
# `portico.dev/static`: HTTP 200 "ok" at C speed (HAProxy answering by itself), so benchmarks measure the
# path to the pod, not a Python server. Its args: `--threads=N` sets HAProxy's nbthread (default: one per CPU).
STATIC_CONFIG = """global
  maxconn 4000
{threads}
defaults
  mode http
  timeout client 30s
  timeout server 30s
  timeout connect 5s
frontend static
{binds}
  http-request return status 200 content-type text/plain string ok
"""


def image_name(image: str) -> str:
    """`portico.dev/echo:latest` and `portico.dev/echo@sha256:...` are both `portico.dev/echo`."""
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    return name.rsplit(":", 1)[0] if ":" in last else name


def container_argv(container: Container, *, pod: str, node: str) -> list[str] | None:
    """The command a built-in image's container runs, or None for an image to pull."""
    match image_name(container.image or ""):
        case "portico.dev/echo":
            # A TCP port named https* serves TLS; args are the echo's own options (e.g. --drain=5).
            ports = [f"{p.containerPort}/{'TLS' if (p.name or '').startswith('https') else p.protocol or 'TCP'}"
                     for p in container.ports or []]
            return [sys.executable, "-m", "portico.dev.echo", "--pod", pod, "--node", node,
                    *(f"--listen={p}" for p in ports or [DEFAULT_ECHO_PORT]), *(container.args or [])]
        case "portico.dev/static":
            tcp = [p.containerPort for p in container.ports or [] if (p.protocol or "TCP") == "TCP"] or [8080]
            threads = [a.removeprefix("--threads=") for a in container.args or [] if a.startswith("--threads=")]
            config = STATIC_CONFIG.format(binds="\n".join(f"  bind :::{p} v4v6" for p in tcp),
                                          threads=f"  nbthread {int(threads[-1])}" if threads else "")
            return ["sh", "-c", f"exec haproxy -db -f /dev/stdin <<'EOF'\n{config}EOF\n"]
        case "registry.k8s.io/coredns/coredns":
            return [sys.executable, "-m", "portico.dev.dns", *(container.args or [])]
    return None
