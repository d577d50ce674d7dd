"""A Gateway's listeners judged as the Gateway API spec asks (pure): each listener's conditions and supported route
kinds, and the Gateway's own Accepted condition, from the listeners, the Secrets they name and the ReferenceGrants.

Conditions are `Cond` values; the controller turns them into metav1.Conditions with the Gateway's generation.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from portico.api.gateway import GROUP, Listener, ObjectKey, RouteGroupKind
from portico.l7.references import Grant, Reference, permitted

HTTP_ROUTE = RouteGroupKind(kind="HTTPRoute", group=GROUP)
# Route kinds each supported listener protocol takes (the first is what an empty allowedRoutes.kinds means).
ROUTE_KINDS: Mapping[str, tuple[RouteGroupKind, ...]] = {"HTTP": (HTTP_ROUTE,), "HTTPS": (HTTP_ROUTE,)}


@dataclass(frozen=True)
class Cond:
    type: str
    status: bool
    reason: str
    message: str = ""


@dataclass(frozen=True)
class ListenerResult:
    name: str
    supported_kinds: tuple[RouteGroupKind, ...]
    conditions: tuple[Cond, ...]
    certificates: tuple[ObjectKey, ...] = field(default=())  # the Secrets it serves, when every ref resolved

    def condition(self, type: str) -> Cond:
        return next(c for c in self.conditions if c.type == type)

    @property
    def usable(self) -> bool:
        """Accepted and with every reference resolved: its port is programmed and routes may attach."""
        return self.condition("Accepted").status and self.condition("ResolvedRefs").status


def _conflicts(listeners: list[Listener]) -> dict[str, Cond]:
    """Listeners that share a port with another of a different protocol, or with one of the same protocol and
    hostname: each is Conflicted, and none of them is programmed."""
    protocols: dict[int, set[str]] = {}
    for lst in listeners:
        protocols.setdefault(lst.port, set()).add(lst.protocol)
    same = Counter((lst.port, lst.protocol, lst.hostname or "") for lst in listeners)
    out: dict[str, Cond] = {}
    for lst in listeners:
        if len(protocols[lst.port]) > 1:
            out[lst.name] = Cond("Conflicted", True, "ProtocolConflict",
                                 f"port {lst.port} is used with protocols {', '.join(sorted(protocols[lst.port]))}")
        elif same[(lst.port, lst.protocol, lst.hostname or "")] > 1:
            out[lst.name] = Cond("Conflicted", True, "HostnameConflict",
                                 f"another {lst.protocol} listener on port {lst.port} has hostname "
                                 f"{lst.hostname or '(any)'}")
    return out


def _certificate_refs(gateway: ObjectKey, listener: Listener, secrets: Mapping[ObjectKey, str | None],
                      grants: Iterable[Grant]) -> tuple[Cond, tuple[ObjectKey, ...]]:
    """ResolvedRefs of an HTTPS listener's certificates. `secrets` maps each existing Secret to the reason its
    content is not a usable certificate and key (None when it is)."""
    refs = listener.tls.certificateRefs if listener.tls else []
    if not refs:
        return Cond("ResolvedRefs", False, "InvalidCertificateRef", "an HTTPS listener needs tls.certificateRefs"), ()
    keys = []
    for i, ref in enumerate(refs):
        where = f"tls.certificateRefs[{i}]"
        if ref.group != "" or ref.kind != "Secret":
            return Cond("ResolvedRefs", False, "InvalidCertificateRef",
                        f"{where}: {ref.group or 'core'}/{ref.kind} is not a Secret"), ()
        key = ObjectKey(ref.namespace or gateway.namespace, ref.name)
        if not permitted(Reference(GROUP, "Gateway", gateway.namespace, "", "Secret", key.namespace, key.name), grants):
            return Cond("ResolvedRefs", False, "RefNotPermitted",
                        f"{where}: Secret {key} is in another namespace and no ReferenceGrant there allows it"), ()
        if key not in secrets:
            return Cond("ResolvedRefs", False, "InvalidCertificateRef", f"{where}: Secret {key} does not exist"), ()
        if (problem := secrets[key]) is not None:
            return Cond("ResolvedRefs", False, "InvalidCertificateRef", f"{where}: Secret {key}: {problem}"), ()
        keys.append(key)
    return Cond("ResolvedRefs", True, "ResolvedRefs"), tuple(keys)


def judge_listener(gateway: ObjectKey, listener: Listener, conflict: Cond | None,
                   secrets: Mapping[ObjectKey, str | None], grants: Iterable[Grant]) -> ListenerResult:
    kinds = ROUTE_KINDS.get(listener.protocol)
    if kinds is None:
        message = f"protocol {listener.protocol} is not supported (supported: {', '.join(ROUTE_KINDS)})"
        return ListenerResult(listener.name, (), (
            Cond("Accepted", False, "UnsupportedProtocol", message), Cond("ResolvedRefs", True, "ResolvedRefs"),
            Cond("Conflicted", False, "NoConflicts"), Cond("Programmed", False, "Invalid", message)))
    wanted = listener.allowedRoutes.kinds or [kinds[0]]
    supported = tuple(k for k in wanted if k in kinds)
    resolved = Cond("ResolvedRefs", True, "ResolvedRefs")
    certificates: tuple[ObjectKey, ...] = ()
    if len(supported) < len(wanted):
        unknown = ", ".join(f"{k.group}/{k.kind}" for k in wanted if k not in kinds)
        resolved = Cond("ResolvedRefs", False, "InvalidRouteKinds",
                        f"allowedRoutes.kinds: {unknown} cannot attach to a {listener.protocol} listener")
    elif listener.protocol == "HTTPS":
        resolved, certificates = _certificate_refs(gateway, listener, secrets, grants)
    accepted = (Cond("Accepted", False, conflict.reason, conflict.message) if conflict
                else Cond("Accepted", True, "Accepted"))
    programmed = (Cond("Programmed", True, "Programmed") if accepted.status and resolved.status else
                  Cond("Programmed", False, "Invalid", (conflict or resolved).message))
    return ListenerResult(listener.name, supported,
                          (accepted, resolved, conflict or Cond("Conflicted", False, "NoConflicts"), programmed),
                          certificates)


def judge_listeners(gateway: ObjectKey, listeners: list[Listener], secrets: Mapping[ObjectKey, str | None],
                    grants: Iterable[Grant]) -> list[ListenerResult]:
    conflicts = _conflicts(listeners)
    grants = list(grants)
    return [judge_listener(gateway, lst, conflicts.get(lst.name), secrets, grants) for lst in listeners]


def gateway_accepted(results: list[ListenerResult]) -> Cond:
    """Accepted when at least one listener is; the reason says when some are not valid."""
    bad = [r.name for r in results if not r.usable]
    if not bad:
        return Cond("Accepted", True, "Accepted")
    return Cond("Accepted", any(r.condition("Accepted").status for r in results), "ListenersNotValid",
                f"listeners not valid: {', '.join(bad)}")
