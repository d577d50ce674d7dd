"""Facts about one Service (or Gateway) read off a Snapshot: its addresses and pool, its endpoints and their health,
who announces it and why each other node does not (pure). `status` and `explain` are both made of these."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast

import msgspec
from lightkube.resources.networking_v1 import Ingress, IngressClass

from portico.agent.announcements import EXCLUDE_FROM_LOAD_BALANCERS
from portico.api.gateway import CONTROLLER_NAME
from portico.api.v1alpha1 import BGPAdvertisementSpec, L2AdvertisementSpec
from portico.controller.annotations import LOAD_BALANCER_CLASS
from portico.controller.node_reports import ANNOUNCED, FORWARDING
from portico.controller.services import CONDITION as ADDRESS_ASSIGNED
from portico.ipam.selectors import selector_matches
from portico.l7.gateway_service import MANAGED_BY, service_name
from portico.l7.ingress import INGRESS_SERVICE, ingress_inputs, our_ingress_classes, our_ingresses
from portico.ops.snapshot import Obj, Snapshot

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
MODES = {"Layer2": "L2", "BGP": "BGP", "Layer2AndBGP": "L2+BGP"}  # the Announced condition's reasons


def key(obj: Obj) -> str:
    meta = obj["metadata"]
    return f"{meta['namespace']}/{meta['name']}" if meta.get("namespace") else str(meta["name"])


def condition(obj: Obj, type: str) -> Obj | None:
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c.get("type") == type), None)


def find(objs: list[Obj], namespace: str | None, name: str) -> Obj | None:
    return next((o for o in objs if o["metadata"]["name"] == name
                 and (namespace is None or o["metadata"].get("namespace") == namespace)), None)


def is_gateway_address(svc: Obj) -> bool:
    """A `portico-gw-NAME` Service the controller keeps for a Gateway's address (shown as the Gateway)."""
    return (svc["metadata"].get("labels") or {}).get(MANAGED_BY[0]) == MANAGED_BY[1]


def is_load_balancer(svc: Obj) -> bool:
    return (svc.get("spec") or {}).get("type") == "LoadBalancer"


def claimed(svc: Obj) -> bool:
    """Portico's: its class, or no class and the controller has written its condition (it runs --default-class)."""
    spec = svc.get("spec") or {}
    if not is_load_balancer(svc):
        return False
    if spec.get("loadBalancerClass") is None:
        return condition(svc, ADDRESS_ASSIGNED) is not None
    return bool(spec["loadBalancerClass"] == LOAD_BALANCER_CLASS)


def addresses(svc: Obj) -> list[str]:
    ingress = ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    return [i["ip"] for i in ingress if i.get("ip")]


def allocations(snap: Snapshot, svc: Obj) -> list[Obj]:
    uid = svc["metadata"].get("uid")
    return [a for a in snap.allocations if any(s.get("uid") == uid for s in a["spec"].get("services") or [])]


def pool_of(snap: Snapshot, svc: Obj) -> str | None:
    pools = sorted({a["spec"]["pool"] for a in allocations(snap, svc)})
    return ", ".join(pools) if pools else None


@dataclass(frozen=True)
class Endpoint:
    address: str
    node: str | None
    pod: str | None
    ready: bool
    terminating: bool


def endpoints(snap: Snapshot, namespace: str, service: str) -> list[Endpoint]:
    """The Service's endpoints (one per address), from its EndpointSlices; `ready` unset counts as ready, as for
    kube-proxy."""
    out: dict[str, Endpoint] = {}
    for eps in snap.endpoint_slices:
        meta = eps["metadata"]
        if meta.get("namespace") != namespace or (meta.get("labels") or {}).get(SERVICE_NAME_LABEL) != service:
            continue
        for ep in eps.get("endpoints") or []:
            conditions = ep.get("conditions") or {}
            target = ep.get("targetRef") or {}
            for address in (ep.get("addresses") or [])[:1]:
                out[address] = Endpoint(address, ep.get("nodeName"), target.get("name") if target.get(
                    "kind") == "Pod" else None, conditions.get("ready") is not False,
                    bool(conditions.get("terminating")))
    return sorted(out.values(), key=lambda e: e.address)


def serving(eps: list[Endpoint]) -> list[Endpoint]:
    return [e for e in eps if e.ready and not e.terminating]


def health(snap: Snapshot, service: str) -> tuple[int, int] | None:
    """(healthy, monitored) over every node's report, or None while no health monitor covers the Service."""
    entries = [h for r in snap.portico_nodes for h in (r.get("status") or {}).get("health") or []
               if h.get("service") == service]
    return (sum(h["healthy"] for h in entries), sum(h["total"] for h in entries)) if entries else None


def health_policy(snap: Snapshot, namespace: str, service: str) -> Obj | None:
    """The TrafficPolicy with a health check that governs the Service (accepted for it)."""
    for policy in snap.traffic_policies:
        if policy["metadata"].get("namespace") != namespace or not (policy.get("spec") or {}).get("healthCheck"):
            continue
        for ancestor in (policy.get("status") or {}).get("ancestors") or []:
            ref = ancestor.get("ancestorRef") or {}
            accepted: Obj = next((c for c in ancestor.get("conditions") or [] if c.get("type") == "Accepted"), {})
            if ref.get("name") == service and accepted.get("status") == "True":
                return policy
    return None


def announcers(snap: Snapshot, address: str) -> tuple[list[str], list[str]]:
    """(nodes answering ARP/NDP for the address, nodes advertising it over BGP), as each node reports."""
    l2, bgp = [], []
    for report in sorted(snap.portico_nodes, key=lambda r: r["metadata"]["name"]):
        status = report.get("status") or {}
        if address in (status.get("layer2") or []):
            l2.append(report["metadata"]["name"])
        if address in (status.get("bgp") or []):
            bgp.append(report["metadata"]["name"])
    return l2, bgp


def _specs(objs: list[Obj], kind: type[Any]) -> Iterator[tuple[str, Any]]:
    for obj in objs:
        try:
            yield obj["metadata"]["name"], msgspec.convert(obj.get("spec") or {}, kind)
        except msgspec.ValidationError:
            continue


def advertisements(snap: Snapshot, pool: str, labels: dict[str, str] | None = None) -> tuple[list[str], list[str]]:
    """(L2Advertisements, BGPAdvertisements) that announce addresses of `pool` (from a node with `labels`, if
    given)."""
    def selects(spec: Any) -> bool:
        return (not spec.ipPools or pool in spec.ipPools) and (labels is None or selector_matches(
            spec.nodeSelector, labels))
    return ([name for name, spec in _specs(snap.l2_advertisements, L2AdvertisementSpec) if selects(spec)],
            [name for name, spec in _specs(snap.bgp_advertisements, BGPAdvertisementSpec) if selects(spec)])


def mode(snap: Snapshot, svc: Obj, pool: str | None) -> str:
    """L2, BGP or L2+BGP: how the Service's addresses are (or would be) announced; '-' when nothing announces them."""
    announced = condition(svc, ANNOUNCED)
    if announced is not None and announced.get("status") == "True":
        reason = str(announced.get("reason", "-"))
        return MODES.get(reason, reason)
    if pool is None:
        return "-"
    l2, bgp = advertisements(snap, pool)
    return "L2+BGP" if l2 and bgp else "L2" if l2 else "BGP" if bgp else "-"


def _labels(node: Obj) -> dict[str, str]:
    return dict(node["metadata"].get("labels") or {})


def agent_ready(snap: Snapshot, node: str) -> bool | None:
    """The node's agent pod Ready (its rules programmed, its last sync good); None when no agent pod runs there."""
    pods = [p for p in snap.agent_pods if (p.get("spec") or {}).get("nodeName") == node]
    if not pods:
        return None
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for p in pods for c in (p.get("status") or {}).get("conditions") or [])


def unheard_by(snap: Snapshot, node: str) -> list[str]:
    """Peers that report not hearing this node's heartbeats."""
    return sorted(r["metadata"]["name"] for r in snap.portico_nodes
                  if node in ((r.get("status") or {}).get("unreachable") or []) and r["metadata"]["name"] != node)


def node_verdicts(snap: Snapshot, svc: Obj, address: str, pool: str) -> dict[str, str]:
    """Per node: what it does for `address` ('answers ARP/NDP', 'advertises over BGP', 'standby …'), or why it may
    not announce it — the agents' own rules (portico.agent.announcements) read back from what they report."""
    l2_nodes, bgp_nodes = announcers(snap, address)
    reports = {r["metadata"]["name"]: r.get("status") or {} for r in snap.portico_nodes}
    local = (svc.get("spec") or {}).get("externalTrafficPolicy") == "Local"
    eps = serving(endpoints(snap, svc["metadata"]["namespace"], svc["metadata"]["name"]))
    verdicts = {}
    for node in sorted(snap.nodes, key=lambda n: n["metadata"]["name"]):
        name, labels = node["metadata"]["name"], _labels(node)
        l2_ads, bgp_ads = advertisements(snap, pool, labels)
        report = reports.get(name)
        doing = [what for what, nodes in (("answers ARP/NDP", l2_nodes), ("advertises over BGP", bgp_nodes))
                 if name in nodes]
        problems = [p["message"] for p in (report or {}).get("l2Problems") or [] if p.get("advertisement") in l2_ads]
        problems += [p["message"] for p in (report or {}).get("forwardingProblems") or []
                     if p.get("service") == key(svc)]
        if doing:
            verdicts[name] = " and ".join(doing) + (f" (but: {'; '.join(problems)})" if problems else "")
        elif EXCLUDE_FROM_LOAD_BALANCERS in labels:
            verdicts[name] = f"excluded from external load balancers (label {EXCLUDE_FROM_LOAD_BALANCERS})"
        elif not l2_ads and not bgp_ads:
            verdicts[name] = f"no L2Advertisement or BGPAdvertisement selects both this node and IPPool {pool}"
        elif report is None or agent_ready(snap, name) is None:
            verdicts[name] = "no Portico agent runs here (its DaemonSet's pod is missing)"
        elif not agent_ready(snap, name):
            verdicts[name] = "its agent is not ready: it is starting, or its last rule sync failed (its log says why)"
        elif unheard := unheard_by(snap, name):
            verdicts[name] = f"{', '.join(unheard)} cannot hear its heartbeats (down, or cut off from its peers)"
        elif problems:
            verdicts[name] = "; ".join(problems)
        elif local and not any(e.node == name for e in eps):
            verdicts[name] = "no ready local endpoint (externalTrafficPolicy Local)"
        elif l2_ads and l2_nodes:
            verdicts[name] = f"standby: {', '.join(l2_nodes)} answers (one node per address in layer 2)"
        elif bgp_ads and not any(s.get("state") == "Established" for s in report.get("bgpSessions") or []):
            verdicts[name] = "no BGP session established: " + ("; ".join(
                f"{s.get('peer')}: {s.get('message')}" for s in report.get("bgpSessions") or []) or "no BGPPeer")
        else:
            verdicts[name] = "eligible, not announcing (yet)"
    return verdicts


def gateway_address_service(snap: Snapshot, gateway: Obj) -> Obj | None:
    return find(snap.services, gateway["metadata"]["namespace"], service_name(gateway["metadata"]["name"]))


def our_gateway_classes(snap: Snapshot) -> set[str]:
    return {c["metadata"]["name"] for c in snap.gateway_classes
            if (c.get("spec") or {}).get("controllerName") == CONTROLLER_NAME}


def routes_of(snap: Snapshot, gateway: Obj) -> list[Obj]:
    """HTTPRoutes whose parentRefs name the Gateway."""
    ns, name = gateway["metadata"]["namespace"], gateway["metadata"]["name"]
    return [r for r in snap.http_routes for p in (r.get("spec") or {}).get("parentRefs") or []
            if p.get("name") == name and p.get("namespace", r["metadata"]["namespace"]) == ns
            and p.get("kind", "Gateway") == "Gateway"]


def route_backends(route: Obj) -> set[tuple[str, str]]:
    """(namespace, Service) of every backendRef of the route."""
    ns = route["metadata"]["namespace"]
    return {(ref.get("namespace", ns), ref["name"]) for rule in (route.get("spec") or {}).get("rules") or []
            for ref in rule.get("backendRefs") or [] if ref.get("kind", "Service") == "Service"}


def is_ingress_address(svc: Obj) -> bool:
    """The chart's shared Ingress address Service (HAProxy on the nodes serves it)."""
    return svc["metadata"]["name"] == INGRESS_SERVICE and not (svc.get("spec") or {}).get("selector") and (
        svc["metadata"].get("labels") or {}).get("app.kubernetes.io/component") == "ingress"


def ingress_backends(snap: Snapshot) -> set[tuple[str, str]]:
    """(namespace, Service) of every backend of the Ingresses Portico serves (portico.l7.ingress decides which)."""
    classes = our_ingress_classes([cast(IngressClass, IngressClass.from_dict(c)) for c in snap.ingress_classes])
    ours = our_ingresses(ingress_inputs([cast(Ingress, Ingress.from_dict(i)) for i in snap.ingresses]), classes)
    backends = set()
    for ing in ours:
        refs = [ing.spec.defaultBackend, *(p.backend for r in ing.spec.rules for p in (r.http.paths if r.http else []))]
        backends |= {(ing.key.namespace, b.service.name) for b in refs if b is not None and b.service is not None}
    return backends


def l7_backends(snap: Snapshot, svc: Obj) -> set[tuple[str, str]] | None:
    """For an address Service HAProxy serves (a Gateway's, the Ingress one): the Services behind its routes; None
    for any other Service (its endpoints are its own)."""
    if is_ingress_address(svc):
        return ingress_backends(snap)
    if is_gateway_address(svc):
        gateway = next((g for g in snap.gateways if g["metadata"]["namespace"] == svc["metadata"]["namespace"]
                        and service_name(g["metadata"]["name"]) == svc["metadata"]["name"]), None)
        return gateway_backends(snap, gateway) if gateway else set()
    return None


def gateway_backends(snap: Snapshot, gateway: Obj) -> set[tuple[str, str]]:
    return {b for r in routes_of(snap, gateway) for b in route_backends(r)}


def forwarding_problem(svc: Obj) -> str | None:
    forwarding = condition(svc, FORWARDING)
    return str(forwarding.get("message")) if forwarding and forwarding.get("status") == "False" else None

