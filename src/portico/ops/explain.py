"""`portico explain service/NAME` (or gateway/NAME): the path a user debugs by hand — class, pool, address,
announcement, rules, endpoints, health — walked in order up to the first broken step, which says what to change
(pure). A later step is not judged while an earlier one is broken: it depends on it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from portico.api.gateway import CONTROLLER_NAME
from portico.controller.annotations import LOAD_BALANCER_CLASS
from portico.controller.node_reports import ANNOUNCED
from portico.controller.services import CONDITION as ADDRESS_ASSIGNED
from portico.ipam.allocator import Reason
from portico.ops import facts
from portico.ops.facts import key
from portico.ops.snapshot import Obj, Snapshot

OK, WARN, BROKEN = "ok", "warn", "broken"
MARKS = {OK: "✔", WARN: "!", BROKEN: "✘"}

# What to change, per reason the controller gives for not assigning an address (portico.ipam.allocator.Reason).
ALLOCATION_FIXES = {
    Reason.POOL_EXHAUSTED: "add addresses to the pool's spec.addresses, or free one (a Service that no longer needs "
                           "its address), or let this Service use another pool (portico.io/ip-pool)",
    Reason.NO_MATCHING_POOL: "create an IPPool that selects this Service (autoAssign, or name it in the "
                             "portico.io/ip-pool annotation; check its serviceSelector/namespaceSelector)",
    Reason.REQUESTED_IP_NOT_IN_ANY_POOL: "request an address inside an IPPool's spec.addresses, or add the address "
                                         "to a pool",
    Reason.REQUESTED_IP_IN_USE: "request another address, or let both Services share it (the same "
                                "portico.io/allow-shared-ip key on each, with no port in common)",
    Reason.INVALID_ANNOTATION: "correct the annotation the message names",
    Reason.SHARING_CONFLICT: "give the Services sharing the address distinct ports and the same "
                             "externalTrafficPolicy, or request another address",
}


@dataclass(frozen=True)
class Step:
    name: str
    verdict: str  # OK, WARN or BROKEN
    says: str
    details: list[str] = field(default_factory=list)
    fix: str = ""


@dataclass(frozen=True)
class Explanation:
    target: str  # kind/namespace/name
    steps: list[Step]
    events: list[str]  # the object's recent Warning Events, newest last

    @property
    def broken(self) -> Step | None:
        return next((s for s in self.steps if s.verdict == BROKEN), None)


def explain(snap: Snapshot, kind: str, namespace: str, name: str) -> Explanation:
    """kind: service or gateway."""
    if kind == "gateway":
        gateway = facts.find(snap.gateways, namespace, name)
        steps = _gateway_steps(snap, gateway) if gateway else [
            Step("found", BROKEN, f"no Gateway {name} in namespace {namespace}")]
    else:
        svc = facts.find(snap.services, namespace, name)
        steps = _walk([lambda: _class(svc), *_service_path(snap, svc)]) if svc else [
            Step("found", BROKEN, f"no Service {name} in namespace {namespace}")]
    return Explanation(f"{kind}/{namespace}/{name}", steps, _warnings(snap, kind, namespace, name))


def _walk(steps: list[Callable[[], Step]]) -> list[Step]:
    out: list[Step] = []
    for step in steps:
        out.append(step())
        if out[-1].verdict == BROKEN:
            break
    return out


def _service_path(snap: Snapshot, svc: Obj) -> list[Callable[[], Step]]:
    """The steps from the pool on, shared by a Service and a Gateway's address Service."""
    l7 = facts.l7_backends(snap, svc)
    backends = sorted(l7) if l7 is not None else [(svc["metadata"]["namespace"], svc["metadata"]["name"])]
    return [lambda: _pool(snap, svc), lambda: _announced(snap, svc), lambda: _programmed(svc),
            lambda: _endpoints(snap, backends, svc), lambda: _health(snap, backends)]


def _class(svc: Obj) -> Step:
    spec = svc.get("spec") or {}
    if not facts.is_load_balancer(svc):
        return Step("class", BROKEN, f"spec.type is {spec.get('type', 'ClusterIP')}: Portico serves only "
                    "Services of type LoadBalancer", fix="set spec.type: LoadBalancer")
    cls = spec.get("loadBalancerClass")
    if cls is not None and cls != LOAD_BALANCER_CLASS:
        return Step("class", BROKEN, f"spec.loadBalancerClass is {cls}: another load balancer's Service",
                    fix=f"recreate it with spec.loadBalancerClass: {LOAD_BALANCER_CLASS} (the field is immutable)")
    if not facts.claimed(svc):
        return Step("class", BROKEN, "no spec.loadBalancerClass, and the controller has not taken it (it takes "
                    "classless Services only with --default-class)",
                    fix=f"set spec.loadBalancerClass: {LOAD_BALANCER_CLASS}, or install with "
                        "controller.defaultClass=true")
    return Step("class", OK, f"type LoadBalancer, {'class ' + cls if cls else 'no class (Portico is the default)'}")


def _pool(snap: Snapshot, svc: Obj) -> Step:
    assigned = facts.condition(svc, ADDRESS_ASSIGNED)
    addresses, pool = facts.addresses(svc), facts.pool_of(snap, svc)
    if assigned is None:
        return Step("address", BROKEN, "the controller has not answered for this Service",
                    fix="check that portico-controller runs and is the leader (kubectl -n portico-system get pods; "
                        "its log)")
    if assigned.get("status") != "True":
        reason, message = assigned.get("reason", ""), assigned.get("message", "")
        fix = ALLOCATION_FIXES.get(reason, "see the message")
        if addresses:  # it keeps what it holds: serving, but not what was asked
            return Step("address", WARN, f"{', '.join(addresses)} from IPPool {pool}, but {reason}: {message}",
                        fix=fix)
        return Step("address", BROKEN, f"no address: {reason}: {message}", _pools_summary(snap), fix)
    return Step("address", OK, f"{', '.join(addresses)} from IPPool {pool}")


def _pools_summary(snap: Snapshot) -> list[str]:
    out = []
    for pool in sorted(snap.pools, key=lambda p: p["metadata"]["name"]):
        spec, status = pool.get("spec") or {}, pool.get("status") or {}
        usage = ", ".join(f"{f} {u['used']}/{u['total']} used" for f in ("ipv4", "ipv6") if (u := status.get(f)))
        out.append(f"IPPool {pool['metadata']['name']}: {', '.join(spec.get('addresses') or [])} ({usage or 'empty'}"
                   f"{'' if spec.get('autoAssign', True) else ', autoAssign off'})")
    return out or ["no IPPool exists"]


def _announced(snap: Snapshot, svc: Obj) -> Step:
    pool = (facts.pool_of(snap, svc) or "").split(", ")[0]
    addresses = facts.addresses(svc)
    details = [f"{address}: {node}: {verdict}" for address in addresses
               for node, verdict in facts.node_verdicts(snap, svc, address, pool).items()]
    announced = facts.condition(svc, ANNOUNCED)
    if announced is not None and announced.get("status") == "True":
        return Step("announced", OK, str(announced.get("message")), details)
    says = (f"{announced.get('reason')}: {announced.get('message')}" if announced
            else "no node reports announcing it")
    return Step("announced", BROKEN, says, details, _announce_fix(snap, pool, details))


def _announce_fix(snap: Snapshot, pool: str, details: list[str]) -> str:
    l2, bgp = facts.advertisements(snap, pool)
    if not l2 and not bgp:
        return (f"create an L2Advertisement (or a BGPAdvertisement and BGPPeer) whose spec.ipPools includes {pool}, "
                "or leaves ipPools empty")
    text = " ".join(details)
    if "does not exist on" in text or "no interface holding" in text:
        return "correct the L2Advertisement's spec.interfaces to interfaces the selected nodes have"
    if "externalTrafficPolicy Local" in text:
        return ("run a ready endpoint on a node that may announce, or use externalTrafficPolicy Cluster")
    if "no BGP session" in text:
        return "bring up a BGP session: check the BGPPeer's address, ASN and password against the router"
    if "no Portico agent" in text or "agent is not ready" in text:
        return "check the portico-agent pods on those nodes (kubectl -n portico-system get pods -o wide; their logs)"
    return "see each node's line above"


def _programmed(svc: Obj) -> Step:
    problem = facts.forwarding_problem(svc)
    if problem:
        return Step("rules", BROKEN, f"not programmed everywhere: {problem}",
                    fix="correct what the message names (the Service's annotations, ports or TrafficPolicy)")
    return Step("rules", OK, "programmed on every node that reports (no ForwardingProblem)")


def _endpoints(snap: Snapshot, backends: list[tuple[str, str]], svc: Obj | None) -> Step:
    """backends: (namespace, Service) whose endpoints serve the VIP (the Service itself, or the routes' Services
    behind an address HAProxy serves)."""
    eps = [e for ns, name in backends for e in facts.endpoints(snap, ns, name)]
    ready = facts.serving(eps)
    if not backends:
        return Step("endpoints", BROKEN, "no route sends requests to a Service yet",
                    fix="attach a route (an HTTPRoute, or an Ingress rule) with a backend Service")
    if not eps:
        selector = ((svc or {}).get("spec") or {}).get("selector")
        shown = ",".join(f"{k}={v}" for k, v in (selector or {}).items())
        who = ", ".join(name for _, name in backends)
        return Step("endpoints", BROKEN, f"{who} has no endpoints" + (f": no pod matches {shown}" if shown else ""),
                    fix="check the selector against the pods' labels, and that the pods run")
    details = [f"{e.address} ({e.pod or '?'} on {e.node or '?'}): "
               f"{'terminating' if e.terminating else 'ready' if e.ready else 'not ready'}" for e in eps]
    if not ready:
        return Step("endpoints", BROKEN, f"0 of {len(eps)} endpoints ready", details,
                    "look at why the pods fail their readiness probe (kubectl describe pod)")
    if len(ready) < len(eps):
        return Step("endpoints", WARN, f"{len(ready)} of {len(eps)} endpoints ready", details)
    return Step("endpoints", OK, f"{len(ready)} of {len(eps)} endpoints ready", details)


def _health(snap: Snapshot, backends: list[tuple[str, str]]) -> Step:
    """The health monitors' verdict on the endpoints, when a TrafficPolicy monitors them."""
    counts = [h for ns, name in backends if (h := facts.health(snap, f"{ns}/{name}"))]
    if not counts:
        return Step("health", OK, "no health monitor (a TrafficPolicy's healthCheck) covers the endpoints")
    healthy, total = sum(h[0] for h in counts), sum(h[1] for h in counts)
    policies = ", ".join(p["metadata"]["name"] for ns, name in backends if (p := facts.health_policy(snap, ns, name)))
    down = [e["message"] for e in _events(snap, backends, "BackendUnhealthy")]
    if healthy == 0:
        return Step("health", BROKEN, f"0 of {total} endpoints pass their health check (TrafficPolicy {policies})",
                    down[-5:], "fix the backends, or the check (its port, path or expected status) if it is wrong")
    if healthy < total:
        return Step("health", WARN, f"{healthy} of {total} endpoints healthy (TrafficPolicy {policies}); "
                    "the others are out of rotation", down[-5:])
    return Step("health", OK, f"{healthy} of {total} endpoints healthy (TrafficPolicy {policies})")


def _gateway_steps(snap: Snapshot, gateway: Obj) -> list[Step]:
    svc = facts.gateway_address_service(snap, gateway)

    def address_service() -> Step:
        if svc is None:
            return Step("address", BROKEN, "the controller has not created this Gateway's address Service",
                        fix="check that portico-controller runs (and that no other Service has its name)")
        return Step("address service", OK, f"Service {key(svc)} holds the Gateway's address")

    backends = sorted(facts.gateway_backends(snap, gateway))
    steps = [lambda: _gateway_class(snap, gateway), lambda: _gateway_condition(gateway, "Accepted"),
             address_service]
    if svc is not None:
        steps += _service_path(snap, svc)[:3]  # pool, announced, rules: a Gateway's endpoints are its routes'
    steps += [lambda: _gateway_condition(gateway, "Programmed"), lambda: _routes(snap, gateway),
              lambda: _endpoints(snap, backends, None), lambda: _health(snap, backends)]
    return _walk(steps)


def _gateway_class(snap: Snapshot, gateway: Obj) -> Step:
    name = (gateway.get("spec") or {}).get("gatewayClassName")
    cls = facts.find(snap.gateway_classes, None, name or "")
    if name not in facts.our_gateway_classes(snap):
        return Step("class", BROKEN, f"GatewayClass {name} " + ("is another controller's" if cls else "does not exist"),
                    fix=f"use a GatewayClass with spec.controllerName: {CONTROLLER_NAME}")
    accepted = facts.condition(cls or {}, "Accepted")
    if accepted is None or accepted.get("status") != "True":
        return Step("class", BROKEN, f"GatewayClass {name} is not accepted: "
                    f"{(accepted or {}).get('message', 'the controller has not answered')}")
    return Step("class", OK, f"GatewayClass {name} (Portico's)")


def _gateway_condition(gateway: Obj, type: str) -> Step:
    c = facts.condition(gateway, type)
    if c is None or c.get("status") != "True":
        listeners = [f"listener {lst.get('name')}: {x.get('type')} {x.get('reason')}: {x.get('message')}"
                     for lst in (gateway.get("status") or {}).get("listeners") or []
                     for x in lst.get("conditions") or [] if x.get("status") != ("False" if x.get("type") ==
                                                                                   "Conflicted" else "True")]
        return Step(type.lower(), BROKEN, f"{c.get('reason')}: {c.get('message')}" if c else
                    "the controller has not written it", listeners, "correct what the message names")
    return Step(type.lower(), OK, str(c.get("message") or c.get("reason")))


def _routes(snap: Snapshot, gateway: Obj) -> Step:
    name = gateway["metadata"]["name"]
    lines, bad = [], 0
    for route in sorted(facts.routes_of(snap, gateway), key=key):
        parents = [p for p in (route.get("status") or {}).get("parents") or []
                   if (p.get("parentRef") or {}).get("name") == name]
        conditions = [c for p in parents for c in p.get("conditions") or []]
        wrong = [f"{c.get('type')} {c.get('reason')}: {c.get('message')}" for c in conditions
                 if c.get("status") != "True"]
        bad += bool(wrong) or not conditions
        lines.append(f"HTTPRoute {key(route)}: " + ("; ".join(wrong) if wrong else "accepted" if conditions
                                                     else "no status from Portico yet"))
    if not lines:
        return Step("routes", OK, "no HTTPRoute attached yet")
    if bad:
        return Step("routes", WARN, f"{bad} of {len(lines)} HTTPRoutes not fully accepted", lines)
    return Step("routes", OK, f"{len(lines)} HTTPRoute(s) accepted", lines)


def _events(snap: Snapshot, objects: list[tuple[str, str]], reason: str) -> list[Obj]:
    return sorted((e for e in snap.events if e.get("reason") == reason and (
        (e.get("involvedObject") or {}).get("namespace"), (e.get("involvedObject") or {}).get("name")) in objects),
        key=_when)


def _when(event: Obj) -> str:
    return str(event.get("lastTimestamp") or event.get("eventTime") or event["metadata"].get("creationTimestamp"))


def _warnings(snap: Snapshot, kind: str, namespace: str, name: str) -> list[str]:
    kinds = {"service": "Service", "gateway": "Gateway"}
    mine = [e for e in snap.events if e.get("type") == "Warning"
            and (e.get("involvedObject") or {}).get("kind") == kinds[kind]
            and (e.get("involvedObject") or {}).get("namespace") == namespace
            and (e.get("involvedObject") or {}).get("name") == name]
    return [f"{e.get('reason')}: {e.get('message')}" for e in sorted(mine, key=_when)[-5:]]


def render(explanation: Explanation) -> str:
    lines = [explanation.target]
    for step in explanation.steps:
        lines.append(f"  {MARKS[step.verdict]} {step.name:<16} {step.says}")
        lines += [f"      {d}" for d in step.details]
        if step.fix and step.verdict != OK:
            lines.append(f"    → {step.fix}")
    if explanation.events:
        lines.append("  recent warnings:")
        lines += [f"      {e}" for e in explanation.events]
    broken = explanation.broken
    lines.append(f"first broken step: {broken.name}" if broken else "every step is in order")
    return "\n".join(lines)
