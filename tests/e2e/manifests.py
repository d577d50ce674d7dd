"""Objects the e2e modules apply, as JSON lines for `kubectl apply -f -` (JSON is YAML): the echo Deployment and
Portico-class LoadBalancer Services in front of it."""

from __future__ import annotations

import json


def echo_deployment(name: str, namespace: str, replicas: int = 1) -> str:
    """`replicas` pods of the lab's echo (portico.dev.echo), labelled app=NAME, serving HTTP on 8080."""
    return json.dumps({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": namespace},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [
                     {"name": "echo", "image": "portico.dev/echo",
                      "ports": [{"name": "http", "containerPort": 8080}]}]}}}})


def lb_service(name: str, namespace: str, app: str, annotations: dict[str, str]) -> str:
    """A LoadBalancer Service of Portico's class on port 80, to app=APP's port 8080."""
    return json.dumps({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": namespace, "annotations": annotations},
        "spec": {"type": "LoadBalancer", "loadBalancerClass": "portico.io/lb", "selector": {"app": app},
                 "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}})


def documents(*objects: str) -> str:
    """The objects as YAML documents to follow a YAML text ending in a newline."""
    return "".join(f"---\n{obj}\n" for obj in objects)
