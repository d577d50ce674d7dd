"""An echo Deployment behind a LoadBalancer Service, in a pool of its own that the client reaches through node-1
by a static route (not announced): for modules about what node-1's rules do with new flows."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import yaml

from tests.e2e.conftest import Lab, wait_for

NODE1_LAN = "198.18.0.11"
HTTP = ("http", 8080, "TCP")
UDP = ("udp", 9090, "UDP")
HTTPS = ("https", 8443, "TCP")  # the echo serves TLS on ports named https*


Port = tuple[str, int, str]  # (name, port, protocol)


@dataclass(frozen=True)
class App:
    name: str
    pool: str
    cidr: str
    replicas: int
    ports: tuple[Port, ...]  # the containers'
    service_ports: tuple[Port, ...]  # the Service's: (target port name, port, protocol)


def manifests(spec: App) -> str:
    """No readiness probe: Kubernetes calls each pod ready while it runs."""
    app, pool, cidr, replicas, ports, service_ports = (spec.name, spec.pool, spec.cidr, spec.replicas, spec.ports,
                                                       spec.service_ports)
    meta = {"name": app, "namespace": "default"}
    objects: list[dict[str, Any]] = [
        {"apiVersion": "portico.io/v1alpha1", "kind": "IPPool", "metadata": {"name": pool},
         "spec": {"addresses": [cidr]}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta, "spec": {
            "replicas": replicas, "selector": {"matchLabels": {"app": app}},
            "template": {"metadata": {"labels": {"app": app}}, "spec": {"containers": [{
                "name": "echo", "image": "portico.dev/echo",
                "ports": [{"name": n, "containerPort": p, "protocol": proto} for n, p, proto in ports]}]}}}},
        # Its own pool by name: whatever another module left behind cannot hand it an address the route misses.
        {"apiVersion": "v1", "kind": "Service", "metadata": {**meta, "annotations": {"portico.io/ip-pool": pool}},
         "spec": {
            "type": "LoadBalancer", "allocateLoadBalancerNodePorts": False, "selector": {"app": app},
            "ports": [{"name": n, "port": p, "targetPort": n, "protocol": proto} for n, p, proto in service_ports]}},
    ]
    return yaml.safe_dump_all(objects)


def running_pods(lab: Lab, app: str) -> dict[str, str]:
    """Ready pod name -> node."""
    items = lab.get("pods", "-l", f"app={app}")["items"]
    return {p["metadata"]["name"]: p["spec"]["nodeName"] for p in items
            if any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))
            and not p["metadata"].get("deletionTimestamp")}


@contextlib.contextmanager
def routed_app(lab: Lab, spec: App) -> Iterator[tuple[str, dict[str, str]]]:
    """Yields the Service's address and its ready pods (name -> node), once all are running."""
    app, cidr, replicas = spec.name, spec.cidr, spec.replicas
    lab.kubectl("apply", "-f", "-", stdin=manifests(spec))
    lab.exec_in("client", "ip", "route", "add", cidr, "via", NODE1_LAN)
    try:
        pods = wait_for(lambda: running_pods(lab, app) if len(running_pods(lab, app)) == replicas else None, 60,
                        f"{replicas} {app} pods running")
        ingress = wait_for(lambda: lab.get("service", app).get("status", {}).get("loadBalancer", {}).get("ingress"),
                           20, f"{app} gets an address")
        yield ingress[0]["ip"], pods
    finally:
        lab.exec_in("client", "ip", "route", "del", cidr)
        lab.kubectl("delete", "trafficpolicy,deployment,service", app, "--ignore-not-found")
        lab.kubectl("delete", "ippool", spec.pool, "--wait=false")
