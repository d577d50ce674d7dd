"""The agent in this process against the real API server and the controller, programming a real nftables
table in a namespace of its own (no packets here: `test_dataplane_nft` and the e2e tier send them).

Bad input must give correct rules for what is valid, an event or a metric for what is not, and a
running agent. Services have no selector; the tests write their EndpointSlices by hand.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import json
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from datetime import UTC, datetime
from typing import Any, cast

import httpx2 as httpx
import pytest
from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.models.core_v1 import NodeSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Event, Node, NodeStatus
from lightkube.resources.core_v1 import Node as NodeResource
from lightkube.resources.discovery_v1 import EndpointSlice
from lightkube.types import PatchType

from portico.agent import forwarding as forwarding_module
from portico.agent.agent import Agent
from portico.agent.caches import SERVICE_NAME_LABEL, TRIGGER_TIME
from portico.api.resources import L2AdvertisementResource
from portico.dataplane.model import Frontend, FrontendPolicy
from portico.dataplane.nft import Nft
from portico.dataplane.nftables import FRONTENDS, VIPS, Ruleset, frontend_key, render_frontend
from portico.dev.controlplane import ControlPlaneConfig
from portico.kube.client import async_client
from tests.integration.controller_helpers import Scope, wait_until

pytestmark = pytest.mark.usefixtures("controller")
NODE = f"ptag-{uuid.uuid4().hex[:6]}"  # a Node object and a network namespace of that name


@pytest.fixture(scope="module")
async def agent(controlplane: ControlPlaneConfig) -> AsyncIterator[tuple[Agent, str]]:
    """A running agent for an IPv4-only node, and the URL of its /metrics."""
    await asyncio.to_thread(subprocess.run, ["ip", "netns", "add", NODE], check=True)
    client = async_client(controlplane.admin_kubeconfig, field_manager="portico-tests")
    agent_client = async_client(controlplane.admin_kubeconfig, field_manager="portico-agent")
    agent = Agent(agent_client, NODE, Nft(netns=NODE))
    server = agent.serve("127.0.0.1", 0)
    task: asyncio.Task[None] | None = None
    try:
        await client.create(Node(metadata=ObjectMeta(name=NODE), spec=NodeSpec(podCIDRs=["198.19.0.0/24"])))
        await client.patch(NodeStatus, NODE, {"status": {"addresses": [
            {"type": "InternalIP", "address": "198.19.255.1"}]}}, patch_type=PatchType.MERGE)
        task = asyncio.create_task(agent.run())
        yield agent, f"http://127.0.0.1:{server.server_port}/metrics"
    finally:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        server.shutdown()
        server.server_close()
        with contextlib.suppress(ApiError):
            await client.delete(Node, NODE)
        await client.close()
        await agent_client.close()
        await asyncio.to_thread(subprocess.run, ["ip", "netns", "del", NODE], check=True)


def endpoint_slice(ns: str, service: str, name: str, addresses: list[str], *, port: str = "p80-tcp",
                   family: str = "IPv4", trigger: bool = False) -> EndpointSlice:
    annotations = {TRIGGER_TIME: datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")} if trigger else {}
    return cast(EndpointSlice, EndpointSlice.from_dict({
        "metadata": {"name": name, "namespace": ns, "annotations": annotations,
                     "labels": {SERVICE_NAME_LABEL: service, "endpointslice.kubernetes.io/managed-by": "tests"}},
        "addressType": family, "ports": [{"name": port, "port": 8080, "protocol": "TCP"}],
        "endpoints": [{"addresses": [a], "conditions": {"ready": True}, "nodeName": NODE} for a in addresses]}))


async def kernel_backends(vip: str, count: int | None = None) -> dict[int, str] | None:
    """Slot -> backend of a VIP's port 80, as the kernel has them (None until there are `count`)."""
    proc = await asyncio.to_thread(subprocess.run, ["ip", "netns", "exec", NODE, "nft", "-j", "list", "map", "inet",
                                                    "portico", "backends4_tcp"], check=False, capture_output=True,
                                   text=True)
    if proc.returncode != 0:  # no table (flushed)
        return None
    out = proc.stdout
    elements = json.loads(out)["nftables"][1]["map"].get("elem", [])
    found = {key["concat"][2]: value["concat"][0] for key, value in elements
             if key["concat"][0] == vip and key["concat"][1] == 80}
    return found if found and (count is None or len(found) == count) else None


async def warnings(s: Scope, name: str) -> list[str]:
    return [message for kind, reason, message in await s.events(name) if reason == "ForwardingProblem"]


async def test_thousands_of_endpoints_with_duplicates_and_unresolvable_ports(
        client: AsyncClient, agent: tuple[Agent, str]) -> None:
    async with Scope(client) as s:
        await s.pool(["198.18.120.0/29"])
        await s.service("big")
        vip = (await s.wait_ingress("big"))[0]
        pods = [f"198.19.{i // 250}.{i % 250 + 1}" for i in range(2500)]
        for i, chunk in enumerate((pods[:1000], pods[1000:2000], pods[2000:] + pods[:500])):  # 500 twice
            await client.create(endpoint_slice(s.ns, "big", f"big-{i}", chunk))
        await client.create(endpoint_slice(s.ns, "big", "big-odd", ["198.19.20.1"], port="metrics"))
        slots = await wait_until(lambda: kernel_backends(vip, 2500), 20, "2,500 backends in the kernel")
        assert sorted(slots.values()) == sorted(pods)  # each distinct endpoint once, none of the odd slice
        problems = await wait_until(lambda: warnings(s, "big"), 10, "an event for the unresolvable port")
        assert problems == ["port p80-tcp: some endpoints have no such port; skipped"]


async def test_an_ipv6_service_on_an_ipv4_only_node_is_reported_not_programmed(
        client: AsyncClient, agent: tuple[Agent, str]) -> None:
    _, metrics_url = agent
    async with Scope(client) as s:
        await s.pool(["fd00:198:18:120::/125"])
        await s.pool(["198.18.120.8/29"])
        await s.service("v6", ipFamilies=["IPv6"], ipFamilyPolicy="SingleStack")
        await s.service("v4")
        vip6, vip4 = (await s.wait_ingress("v6"))[0], (await s.wait_ingress("v4"))[0]
        await client.create(endpoint_slice(s.ns, "v6", "v6-0", ["fd00:198:18:1::2"], family="IPv6"))
        await client.create(endpoint_slice(s.ns, "v4", "v4-0", ["198.19.0.2"]))
        problems = await wait_until(lambda: warnings(s, "v6"), 10, "an event for the IPv6 Service")
        assert problems == [f"node {NODE} has no IPv6 address: {vip6} not served from this node"]
        assert await wait_until(lambda: kernel_backends(vip4), 10, "the IPv4 Service still programmed")
        text = await scrape(metrics_url)
        assert f'portico_agent_forwarding_problems{{service="{s.ns}/v6"}} 1.0' in text
        assert f'portico_frontend_packets_total{{port="80",protocol="tcp",service="{s.ns}/v4",vip="{vip4}"}}' in text
        assert f'vip="{vip6}"' not in text


async def test_a_service_the_kernel_refuses_is_left_out_and_reported(
        client: AsyncClient, agent: tuple[Agent, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """No user input is known to make nft refuse our rules, so a renderer that does is put in for one Service:
    masquerade in a chain prerouting reaches, which the kernel refuses when the transaction commits."""
    bad_vips: set[str] = set()

    def render(fe: Frontend, policy: FrontendPolicy) -> Ruleset:
        if str(fe.vip) not in bad_vips:
            return render_frontend(fe, policy)
        chain = f"bad-{fe.port}"
        return Ruleset(chains={chain: ("masquerade",)}, elements={
            VIPS[4]: {str(fe.vip): None}, FRONTENDS[4]: {frontend_key(fe): f"goto {chain}"}})

    monkeypatch.setattr(forwarding_module, "render_frontend", render)
    async with Scope(client) as s:
        await s.pool(["198.18.120.24/29"])
        await s.service("good")
        good = (await s.wait_ingress("good"))[0]
        await client.create(endpoint_slice(s.ns, "good", "good-0", ["198.19.0.4"]))
        await wait_until(lambda: kernel_backends(good), 10, "the good Service programmed")
        await s.service("bad", loadBalancerIP="198.18.120.30")
        bad_vips.add((await s.wait_ingress("bad"))[0])
        await client.create(endpoint_slice(s.ns, "bad", "bad-0", ["198.19.0.5"]))
        problems = await wait_until(lambda: warnings(s, "bad"), 10, "a ForwardingProblem for the refused Service")
        assert problems == [f"the kernel refused the rules for 198.18.120.30:80/tcp, which is not served from node "
                            f"{NODE}: Could not process rule: Operation not supported"]
        await client.create(endpoint_slice(s.ns, "good", "good-1", ["198.19.0.6"]))  # the others keep working
        assert await wait_until(lambda: kernel_backends(good, 2), 10, "a later change to another Service applied")
        assert await kernel_backends("198.18.120.30") is None
        agent_obj, _ = agent
        refused = ipaddress.ip_address("198.18.120.30")
        await wait_until(_async(lambda: not agent_obj.forwarding.frontends_of.get(refused)), 5,
                         "the refused frontend left out (so its VIP is not announced for it)")
        assert await warnings(s, "good") == []
        condition = await wait_until(lambda: _condition(s, "bad", "portico.io/Forwarding"), 10,
                                     "the Forwarding condition")
        assert condition["reason"] == "ForwardingProblem" and "the kernel refused" in condition["message"]
        assert await _condition(s, "good", "portico.io/Forwarding") is None


async def test_a_table_changed_by_someone_else_is_repaired(client: AsyncClient, agent: tuple[Agent, str]) -> None:
    _, metrics_url = agent
    async with Scope(client) as s:
        await s.pool(["198.18.120.32/29"])
        await s.service("web")
        vip = (await s.wait_ingress("web"))[0]
        await client.create(endpoint_slice(s.ns, "web", "web-0", ["198.19.0.7", "198.19.0.8"]))
        await wait_until(lambda: kernel_backends(vip, 2), 10, "the backends programmed")
        await client.create(endpoint_slice(s.ns, "web", "web-1", ["198.19.0.9"]))  # a sync of our own
        await wait_until(lambda: kernel_backends(vip, 3), 10, "the third backend programmed")
        repairs = _counter(await scrape(metrics_url), "portico_agent_table_repairs_total")
        for edit in (["flush", "ruleset"],  # what `nft flush ruleset` or a firewall reload does
                     ["delete", "element", "inet", "portico", "backends4_tcp", f"{{ {vip} . 80 . 1 }}"]):  # an admin
            await asyncio.to_thread(subprocess.run, ["ip", "netns", "exec", NODE, "nft", *edit], check=True)
            await wait_until(lambda: kernel_backends(vip, 3), 2, f"the table repaired after nft {' '.join(edit)}")
            repairs += 1
            assert _counter(await scrape(metrics_url), "portico_agent_table_repairs_total") == repairs


async def test_metrics_for_syncs_and_network_programming_latency(client: AsyncClient,
                                                                 agent: tuple[Agent, str]) -> None:
    _, metrics_url = agent
    before = _histogram_count(await scrape(metrics_url), "portico_agent_network_programming_duration_seconds")
    async with Scope(client) as s:
        await s.pool(["198.18.120.16/29"])
        await s.service("web")
        vip = (await s.wait_ingress("web"))[0]
        await client.create(endpoint_slice(s.ns, "web", "web-0", ["198.19.0.3"], trigger=True))
        await wait_until(lambda: kernel_backends(vip), 10, "the backend programmed")
        text = await scrape(metrics_url)
    assert _histogram_count(text, "portico_agent_network_programming_duration_seconds") == before + 1
    assert _histogram_count(text, 'portico_agent_sync_duration_seconds', 'kind="full"') >= 1
    assert _histogram_count(text, 'portico_agent_sync_duration_seconds', 'kind="partial"') >= 1
    assert 'portico_refused_packets_total{family="IPv4"} 0.0' in text
    assert f'portico_frontend_backends{{port="80",protocol="tcp",service="{s.ns}/web",vip="{vip}"}} 1.0' in text


async def test_scrapes_never_see_the_loops_state_mid_change(agent: tuple[Agent, str]) -> None:
    """/metrics runs in a thread; the state it reports is the event loop's. Scrape while the loop churns it."""
    agent_obj, metrics_url = agent
    churned = agent_obj.bgp.advertised  # no BGP here: the agent leaves it empty
    vips = [ipaddress.ip_address(f"198.18.{i // 250}.{i % 250 + 1}") for i in range(3000)]
    stop = False

    async def churn() -> None:
        while not stop:
            for vip in vips:
                churned[vip] = ("t/churn",)
            await asyncio.sleep(0.001)
            for vip in vips:
                del churned[vip]
            await asyncio.sleep(0.001)

    def scrape_many() -> list[int]:
        with httpx.Client() as http:
            return [http.get(metrics_url).status_code for _ in range(40)]

    task = asyncio.create_task(churn())
    try:
        codes = await asyncio.to_thread(scrape_many)
    finally:
        stop = True
        await task
    assert codes == [200] * 40


async def test_liveness_and_readiness(agent: tuple[Agent, str]) -> None:
    _, metrics_url = agent
    base = metrics_url.removesuffix("/metrics")
    async with httpx.AsyncClient() as http:
        assert (await http.get(f"{base}/healthz")).status_code == 200
        ready = await http.get(f"{base}/readyz")
        assert (ready.status_code, ready.text) == (200, "ok\n")
        assert (await http.get(f"{base}/other")).status_code == 404


def _async(predicate: Callable[[], bool]) -> Callable[[], Coroutine[Any, Any, bool]]:
    async def check() -> bool:
        return predicate()
    return check


async def _condition(s: Scope, name: str, kind: str) -> dict[str, Any] | None:
    svc = await s.get(name)
    found = next((c for c in (svc.status.conditions or []) if c.type == kind), None) if svc.status else None
    return found.to_dict() if found is not None else None


async def scrape(url: str) -> str:
    async with httpx.AsyncClient() as http:
        return (await http.get(url)).text


def _counter(text: str, name: str) -> float:
    return float(next(line for line in text.splitlines() if line.startswith(name + " ")).split()[-1])


def _histogram_count(text: str, name: str, labels: str = "") -> float:
    prefix = f"{name}_count{{{labels}}}" if labels else f"{name}_count"
    line = next((line for line in text.splitlines() if line.startswith(prefix + " ")), None)
    return float(line.split()[-1]) if line else 0.0



async def test_status_converges_after_an_object_is_recreated_or_its_status_wiped(
        client: AsyncClient, agent: tuple[Agent, str]) -> None:
    """Every status writer compares with the object as the cache shows it now: an L2Advertisement recreated
    unchanged gets its problems and its Warning event again; a wiped status is written again."""
    name = f"t-{uuid.uuid4().hex[:6]}"
    advertisement = {"apiVersion": "portico.io/v1alpha1", "kind": "L2Advertisement", "metadata": {"name": name},
                     "spec": {"interfaces": ["eth9"], "nodeSelector": {"matchLabels": {"kubernetes.io/hostname":
                                                                                      NODE}}}}
    expected = [{"node": NODE, "message": f"interface eth9 does not exist on {NODE}"}]

    async def problems() -> list[Any] | None:
        try:
            obj: Any = await client.get(L2AdvertisementResource, name)
        except ApiError:
            return None
        found: list[Any] | None = (obj.status or {}).get("problems") or None
        return found

    async def warnings_about() -> list[str]:
        events = [e async for e in client.list(Event, namespace="default",
                                               fields={"involvedObject.name": name})]
        return [e.message or "" for e in events if e.reason == "InterfaceMissing"]

    await client.patch(NodeResource, NODE, {"metadata": {"labels": {"kubernetes.io/hostname": NODE}}},
                       patch_type=PatchType.MERGE)
    try:
        for round_ in (1, 2):  # created, then deleted and created again unchanged
            await client.create(L2AdvertisementResource.from_dict(advertisement))
            assert await wait_until(problems, 10, f"problems (round {round_})") == expected
            await wait_until(functools.partial(_has_count, warnings_about, round_), 10,
                             f"{round_} InterfaceMissing events")
            if round_ == 1:
                await client.delete(L2AdvertisementResource, name)
                await wait_until(lambda: _gone(problems), 10, "the advertisement deleted")
        await client.patch(L2AdvertisementResource.Status, name, {"status": {"problems": None}},
                           patch_type=PatchType.MERGE)  # someone wipes it
        assert await wait_until(problems, 10, "problems written again") == expected
    finally:
        with contextlib.suppress(ApiError):
            await client.delete(L2AdvertisementResource, name)


async def _has_count(read: Callable[[], Coroutine[Any, Any, list[str]]], count: int) -> bool:
    return len(await read()) >= count


async def _gone(read: Callable[[], Coroutine[Any, Any, Any]]) -> bool:
    return await read() is None


async def frontend_rules(vip: str) -> str:
    """The kernel's rules for a VIP's port 80: where its verdict leads, and that chain's rules."""
    def listing(*what: str) -> str:
        return subprocess.run(["ip", "netns", "exec", NODE, "nft", "list", *what], capture_output=True, text=True,
                              check=False).stdout
    verdict = next((line for line in (await asyncio.to_thread(listing, "map", "inet", "portico", "frontends4"))
                    .split(",") if f"{vip} . tcp . 80" in line), "")
    chain = verdict.split("goto ")[-1].strip(" }\n\t") if "goto" in verdict else ""
    return chain + "\n" + (await asyncio.to_thread(listing, "chain", "inet", "portico", chain) if chain else "")


async def test_a_traffic_policy_shapes_the_rules_of_the_services_it_governs(
        client: AsyncClient, agent: tuple[Agent, str]) -> None:
    from portico.api.resources import TrafficPolicyResource

    async with Scope(client) as s:
        await s.pool(["198.18.120.40/29"])
        await s.service("web", sessionAffinity="ClientIP")
        vip = (await s.wait_ingress("web"))[0]
        await client.create(endpoint_slice(s.ns, "web", "web-0", ["198.19.0.10", "198.19.0.11"]))

        async def per_address() -> str | None:  # sessionAffinity: each client address pinned
            rules = await frontend_rules(vip)
            return rules if rules.count("ip saddr @aff-") == 2 and "numgen random" in rules else None
        await wait_until(per_address, 10, "both backends programmed, pinned per client address")

        await client.create(TrafficPolicyResource(metadata=ObjectMeta(name="pin-by-24", namespace=s.ns), spec={
            "targetRefs": [{"kind": "Service", "name": "web"}], "loadBalancing": {"algorithm": "maglev"},
            "persistence": {"timeout": "90s", "ipv4PrefixLength": 24}}))

        async def masked() -> str | None:
            rules = await frontend_rules(vip)
            return rules if "ip saddr & 255.255.255.0 == @aff-" in rules else None
        rules = await wait_until(masked, 10, "the policy's persistence mask in the kernel")
        assert "jhash ip saddr mod" in rules and "-90-24 goto be-" in rules  # maglev picks; 90 s pins per /24

        await client.delete(TrafficPolicyResource, "pin-by-24", namespace=s.ns)
        await wait_until(per_address, 10, "the Service's own sessionAffinity back in force")
