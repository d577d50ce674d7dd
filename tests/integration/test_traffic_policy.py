"""TrafficPolicy on the real API server: schema validation naming the field, defaults, and the controller's
policy status (Accepted, Conflicted, TargetNotFound, Invalid), override Events and `kubectl get`."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from typing import Any

import pytest
from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.models.meta_v1 import ObjectMeta

from portico.api.resources import TrafficPolicyResource
from portico.dev.controlplane import ControlPlaneConfig
from portico.policy.traffic import LB_ALGORITHM
from tests.integration.controller_helpers import Scope, wait_until

pytestmark = pytest.mark.usefixtures("controller")
TARGET = [{"kind": "Service", "name": "web"}]


def policy(namespace: str, spec: dict[str, Any], name: str | None = None) -> Any:
    return TrafficPolicyResource(metadata=ObjectMeta(name=name or f"p-{uuid.uuid4().hex[:8]}", namespace=namespace),
                                 spec=spec)


@pytest.mark.parametrize(("spec", "field", "message"), [
    ({"targetRefs": []}, "spec.targetRefs", "should have at least 1 items"),
    ({"targetRefs": [{"kind": "Deployment", "name": "web"}]}, "spec.targetRefs[0].kind", "Unsupported value"),
    ({"targetRefs": TARGET * 2}, "spec.targetRefs", "must not name a target twice"),
    ({"targetRefs": TARGET, "loadBalancing": {"algorithm": "fastest"}}, "spec.loadBalancing.algorithm",
     "Unsupported value"),
    ({"targetRefs": TARGET, "loadBalancing": {"algorithm": "random", "hashKey": "FiveTuple"}},
     "spec.loadBalancing.hashKey", "hashKey applies to algorithm maglev only"),
    ({"targetRefs": TARGET, "persistence": {"ipv4PrefixLength": 33}}, "spec.persistence.ipv4PrefixLength",
     "should be less than or equal to 32"),
    ({"targetRefs": TARGET, "persistence": {"timeout": "3 hours"}}, "spec.persistence.timeout", "should match"),
    ({"targetRefs": TARGET, "healthCheck": {"type": "TCP", "interval": "50ms", "timeout": "10ms"}},
     "spec.healthCheck.interval", "must be between 100ms and 5m"),
    ({"targetRefs": TARGET, "healthCheck": {"type": "TCP", "interval": "1s", "timeout": "2s"}},
     "spec.healthCheck.timeout", "must not be longer than interval"),
    ({"targetRefs": TARGET, "healthCheck": {"type": "UDP"}}, "spec.healthCheck.udp", "type UDP needs udp.send"),
    ({"targetRefs": TARGET, "healthCheck": {"type": "TCP", "http": {"path": "/"}}}, "spec.healthCheck.http",
     "applies to type HTTP or HTTPS only"),
    ({"targetRefs": TARGET, "healthCheck": {"type": "HTTP", "http": {"expectedStatuses": ["600"]}}},
     "spec.healthCheck.http.expectedStatuses[0]", "should match"),
    ({"targetRefs": TARGET, "healthCheck": {"type": "HTTP", "http": {"path": "health"}}},
     "spec.healthCheck.http.path", "should match"),
    ({"targetRefs": TARGET, "healthCheck": {"type": "ICMP", "unhealthyThreshold": 0}},
     "spec.healthCheck.unhealthyThreshold", "should be greater than or equal to 1"),
    ({"targetRefs": TARGET, "limits": {"maxConnections": 0}}, "spec.limits.maxConnections",
     "should be greater than or equal to 1"),
    ({"targetRefs": TARGET, "limits": {"bandwidth": "10Mbps"}}, "spec.limits.bandwidth", "should match"),
    ({"targetRefs": TARGET, "limits": {"connectionRatePerClient": {"burst": 5}}},
     "spec.limits.connectionRatePerClient.perSecond", "Required value"),
    ({"targetRefs": TARGET, "limits": {"requestRatePerClient": {"perSecond": 0}}},
     "spec.limits.requestRatePerClient.perSecond", "should be greater than or equal to 1"),
    ({"targetRefs": TARGET, "persistence": {"idleTimeout": "5m"}}, "spec.persistence.type",
     "sessionName, absoluteTimeout, idleTimeout and cookieConfig apply to type Cookie only"),
    ({"targetRefs": TARGET, "persistence": {"type": "Cookie", "cookieConfig": {"lifetimeType": "Permanent"}}},
     "spec.persistence.cookieConfig.lifetimeType", "lifetimeType Permanent needs absoluteTimeout"),
    ({"targetRefs": TARGET, "persistence": {"type": "Cookie", "sessionName": "a;b"}},
     "spec.persistence.sessionName", "should match"),
])
async def test_a_bad_policy_is_refused_naming_the_field(client: AsyncClient, spec: dict[str, Any], field: str,
                                                        message: str) -> None:
    with pytest.raises(ApiError) as err:
        await client.create(policy("default", spec))
    assert err.value.status.code == 422
    text = err.value.status.message or ""
    assert f"{field}:" in text and message in text, text


async def test_defaults_are_filled_in_by_the_api_server(client: AsyncClient) -> None:
    created = await client.create(policy("default", {"targetRefs": TARGET, "healthCheck": {"type": "TCP"},
                                                     "persistence": {}, "loadBalancing": {}}))
    try:
        check = created.spec["healthCheck"]
        assert (check["interval"], check["timeout"], check["healthyThreshold"], check["unhealthyThreshold"],
                check["whenNoneHealthy"]) == ("1s", "500ms", 2, 3, "Reject")
        assert created.spec["persistence"] == {"type": "ClientAddress", "timeout": "3h", "ipv4PrefixLength": 32,
                                               "ipv6PrefixLength": 128}
        assert created.spec["loadBalancing"] == {"algorithm": "random", "hashKey": "ClientAddress",
                                                 "defaultWeight": 1}
        assert created.spec["targetRefs"] == [{"kind": "Service", "name": "web", "group": ""}]
    finally:
        await client.delete(TrafficPolicyResource, created.metadata.name, namespace="default")


async def standing(client: AsyncClient, namespace: str, name: str) -> dict[str, tuple[str, str]]:
    """Target -> (status, reason) of its Accepted condition."""
    obj: Any = await client.get(TrafficPolicyResource, name, namespace=namespace)
    out: dict[str, tuple[str, str]] = {}
    for ancestor in (obj.status or {}).get("ancestors", []):
        assert ancestor["controllerName"] == "portico.io/traffic-policy-controller"
        cond = next(c for c in ancestor["conditions"] if c["type"] == "Accepted")
        out[ancestor["ancestorRef"]["name"]] = (cond["status"], cond["reason"])
    return out


async def wait_standing(client: AsyncClient, namespace: str, name: str,
                        wanted: dict[str, tuple[str, str]]) -> None:
    async def check() -> dict[str, tuple[str, str]] | None:
        got = await standing(client, namespace, name)
        return got if got == wanted else None
    await wait_until(check, 10, f"{name} standing {wanted}")


async def test_policy_status_per_target(client: AsyncClient, controlplane: ControlPlaneConfig) -> None:
    async with Scope(client) as s:
        await s.pool(["198.18.111.0/29"])
        await s.service("web")
        await s.service("api")
        await s.service("internal", type="ClusterIP", loadBalancerClass=None)
        await client.create(policy(s.ns, {"targetRefs": [{"kind": "Service", "name": "web"}]}, "older"))
        await asyncio.sleep(1.1)  # creation timestamps have one-second resolution
        await client.create(policy(s.ns, {"targetRefs": [{"kind": "Service", "name": n} for n in
                                                         ("web", "api", "later", "internal")]}, "younger"))
        await wait_standing(client, s.ns, "older", {"web": ("True", "Accepted")})
        await wait_standing(client, s.ns, "younger", {"web": ("False", "Conflicted"), "api": ("True", "Accepted"),
                                                      "later": ("False", "TargetNotFound"),
                                                      "internal": ("False", "Invalid")})
        younger: Any = await client.get(TrafficPolicyResource, "younger", namespace=s.ns)
        summary = next(c for c in younger.status["conditions"] if c["type"] == "Accepted")
        assert summary["status"] == "False" and "older TrafficPolicy older" in summary["message"]
        assert summary["observedGeneration"] == younger.metadata.generation
        for reason in ("Conflicted", "TargetNotFound", "Invalid"):
            assert (await s.wait_event("younger", reason))[0] == "Warning"

        # the missing target appears; the older policy goes and the younger one takes over its target
        await s.service("later")
        await client.delete(TrafficPolicyResource, "older", namespace=s.ns)
        await wait_standing(client, s.ns, "younger", {"web": ("True", "Accepted"), "api": ("True", "Accepted"),
                                                      "later": ("True", "Accepted"),
                                                      "internal": ("False", "Invalid")})

        argv = ["kubectl", "--kubeconfig", str(controlplane.admin_kubeconfig), "get", "trafficpolicies", "-n", s.ns]
        out = (await asyncio.to_thread(subprocess.run, argv, capture_output=True, text=True, check=True)).stdout
        header, row = out.splitlines()[0].split(), out.splitlines()[1].split()
        assert header[:5] == ["NAME", "TARGETS", "ACCEPTED", "HEALTHY", "BACKENDS"], out
        assert row[0] == "younger" and row[1] == '["web","api","later","internal"]' and row[2] == "False", out


async def test_a_policy_overriding_an_annotation_says_so(client: AsyncClient) -> None:
    async with Scope(client) as s:
        await s.pool(["198.18.111.8/29"])
        await s.service("web", annotations={LB_ALGORITHM: "random"})
        await client.create(policy(s.ns, {"targetRefs": TARGET, "loadBalancing": {"algorithm": "maglev"}}, "hash"))
        kind, message = await s.wait_event("web", "PolicyOverrides")
        assert kind == "Normal"
        assert message == ("TrafficPolicy hash sets loadBalancing.algorithm maglev; annotation "
                           f"{LB_ALGORITHM}='random' is ignored")


def test_the_example_policy_is_valid(controlplane: ControlPlaneConfig) -> None:
    from pathlib import Path
    example = Path(__file__).parents[2] / "examples" / "traffic-policy.yaml"
    argv = ["kubectl", "--kubeconfig", str(controlplane.admin_kubeconfig), "apply", "--dry-run=server", "-f",
            str(example)]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert proc.returncode == 0 and "trafficpolicy.portico.io/echo created (server dry run)" in proc.stdout, (
        proc.stderr)
