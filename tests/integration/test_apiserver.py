"""The real kube-apiserver: versions, Service status subresource, watches, CEL validation, RBAC."""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid
from pathlib import Path

import pytest
from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.generic_resource import create_namespaced_resource
from lightkube.models.core_v1 import ServicePort, ServiceSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.apiextensions_v1 import CustomResourceDefinition
from lightkube.resources.core_v1 import Namespace, Service, ServiceStatus
from lightkube.types import PatchType

from portico.dev.controlplane import BUILD_SCRIPT, ControlPlaneConfig
from portico.kube.crds import ensure_crd

KUBE_VERSION = "v1.36.3"
ETCD_VERSION = "3.6.8"


def kubectl(config: ControlPlaneConfig, *args: str) -> str:
    return subprocess.run(["kubectl", "--kubeconfig", str(config.admin_kubeconfig), *args],
                          capture_output=True, text=True, check=True).stdout


def test_kubectl_reports_the_upstream_release(controlplane: ControlPlaneConfig) -> None:
    version = json.loads(kubectl(controlplane, "version", "-o", "json"))
    assert version["serverVersion"]["gitVersion"] == KUBE_VERSION
    namespaces = kubectl(controlplane, "get", "namespaces", "-o", "name").split()
    assert "namespace/kube-system" in namespaces


async def _namespace(client: AsyncClient) -> str:
    name = f"it-{uuid.uuid4().hex[:8]}"
    await client.create(Namespace(metadata=ObjectMeta(name=name)))
    return name


async def test_service_status_subresource_and_watch(client: AsyncClient) -> None:
    ns = await _namespace(client)
    svc = Service(metadata=ObjectMeta(name="web", namespace=ns),
                  spec=ServiceSpec(type="LoadBalancer", ports=[ServicePort(port=80, protocol="TCP")]))
    created = await client.create(svc)
    assert created.spec is not None and created.spec.clusterIP  # the API server allocated a ClusterIP

    seen: asyncio.Queue[Service] = asyncio.Queue()

    async def watch() -> None:
        assert created.metadata is not None
        async for kind, obj in client.watch(Service, namespace=ns, resource_version=created.metadata.resourceVersion):
            if kind == "MODIFIED":
                await seen.put(obj)

    watcher = asyncio.create_task(watch())
    try:
        # A status written through the main resource is ignored: status is a subresource.
        ignored = await client.patch(
            Service, "web", {"status": {"loadBalancer": {"ingress": [{"ip": "198.18.100.1"}]}}},
            namespace=ns, patch_type=PatchType.MERGE)
        assert ignored.status is None or ignored.status.loadBalancer is None or not ignored.status.loadBalancer.ingress
        patched = await client.patch(
            ServiceStatus, "web",
            {"status": {"loadBalancer": {"ingress": [{"ip": "198.18.100.1", "ipMode": "VIP"}]}}},
            namespace=ns, patch_type=PatchType.MERGE)
        assert patched.status is not None and patched.status.loadBalancer is not None
        assert [i.ip for i in patched.status.loadBalancer.ingress or []] == ["198.18.100.1"]
        event = await asyncio.wait_for(seen.get(), 10)
        assert event.status is not None and event.status.loadBalancer is not None
        ingress = event.status.loadBalancer.ingress or []
        assert [(i.ip, i.ipMode) for i in ingress] == [("198.18.100.1", "VIP")]
    finally:
        watcher.cancel()
        await client.delete(Namespace, ns)


WIDGET_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.test.portico.io"},
    "spec": {
        "group": "test.portico.io",
        "scope": "Namespaced",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
        "versions": [{
            "name": "v1", "served": True, "storage": True,
            "schema": {"openAPIV3Schema": {
                "type": "object",
                "properties": {"spec": {
                    "type": "object",
                    "properties": {"minReplicas": {"type": "integer"}, "maxReplicas": {"type": "integer"}},
                    "x-kubernetes-validations": [{"rule": "self.minReplicas <= self.maxReplicas",
                                                  "message": "minReplicas must not exceed maxReplicas",
                                                  "fieldPath": ".minReplicas"}],
                }},
            }},
        }],
    },
}


async def test_crd_cel_validation_rejects_bad_object(client: AsyncClient) -> None:
    await ensure_crd(client, WIDGET_CRD)
    Widget = create_namespaced_resource("test.portico.io", "v1", "Widget", "widgets")
    ns = await _namespace(client)
    try:
        good = Widget(metadata=ObjectMeta(name="ok", namespace=ns), spec={"minReplicas": 1, "maxReplicas": 3})
        await client.create(good)
        bad = Widget(metadata=ObjectMeta(name="bad", namespace=ns), spec={"minReplicas": 5, "maxReplicas": 3})
        with pytest.raises(ApiError) as err:
            await client.create(bad)
        assert err.value.status.code == 422
        message = err.value.status.message or ""
        assert "spec.minReplicas: Invalid value" in message
        assert "minReplicas must not exceed maxReplicas" in message
    finally:
        await client.delete(Namespace, ns)
        await client.delete(CustomResourceDefinition, "widgets.test.portico.io")


def test_rbac_is_enforced(controlplane: ControlPlaneConfig) -> None:
    # A service account with no bindings may not list Secrets: RBAC is on, not AlwaysAllow.
    out = subprocess.run(
        ["kubectl", "--kubeconfig", str(controlplane.admin_kubeconfig), "auth", "can-i", "list", "secrets",
         "--as=system:serviceaccount:default:default"], capture_output=True, text=True, check=False)
    assert out.stdout.strip() == "no"
    assert kubectl(controlplane, "auth", "can-i", "list", "secrets").strip() == "yes"


def test_control_plane_build_is_cached() -> None:
    # The session fixture already built it: a second run reuses the cache and builds nothing.
    proc = subprocess.run([str(BUILD_SCRIPT)], capture_output=True, text=True, check=True)
    out = Path(proc.stdout.strip())
    assert proc.stderr == ""  # build.sh announces every real build on stderr
    assert sorted(p.name for p in out.iterdir()) == ["etcd", "kube-apiserver", "kube-controller-manager", "kube-proxy"]
    assert f"etcd Version: {ETCD_VERSION}" in subprocess.run([str(out / "etcd"), "--version"], capture_output=True,
                                                            text=True, check=True).stdout
