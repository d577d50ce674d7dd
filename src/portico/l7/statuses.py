"""The translation's results (portico.l7.translate) as the Gateway API status fields the controller applies (pure).
Conditions carry the object's generation; transition times are kept while a status does not change."""

from __future__ import annotations

from typing import Any

from portico.api.gateway import CONTROLLER_NAME, GatewayClassSpec, ParentReference
from portico.controller.conditions import set_condition
from portico.ipam.blocks import IPAddress
from portico.l7.features import SUPPORTED_FEATURES
from portico.l7.gateway_service import UnsupportedAddress
from portico.l7.listeners import Cond, ListenerResult, gateway_accepted
from portico.l7.translate import RouteStatus


def conditions(old: list[dict[str, Any]], new: tuple[Cond, ...] | list[Cond], generation: int) -> list[dict[str, Any]]:
    out = [c for c in old if c.get("type") in {n.type for n in new}]
    for c in new:
        out = set_condition(out, type=c.type, status=c.status, reason=c.reason, message=c.message,
                            generation=generation)
    return out


def listener_statuses(old: list[dict[str, Any]], results: tuple[ListenerResult, ...], attached: dict[str, int],
                      generation: int) -> list[dict[str, Any]]:
    before = {s.get("name"): s.get("conditions", []) for s in old}
    return [{"name": r.name, "supportedKinds": [{"group": k.group, "kind": k.kind} for k in r.supported_kinds],
             "attachedRoutes": attached.get(r.name, 0),
             "conditions": conditions(before.get(r.name, []), r.conditions, generation)} for r in results]


def _parent_ref(ref: ParentReference, namespace: str) -> dict[str, Any]:
    out: dict[str, Any] = {"group": ref.group, "kind": ref.kind, "name": ref.name,
                           "namespace": ref.namespace or namespace}
    if ref.sectionName is not None:
        out["sectionName"] = ref.sectionName
    if ref.port is not None:
        out["port"] = ref.port
    return out


def route_parents(old: list[dict[str, Any]], status: RouteStatus, route_namespace: str,
                  generation: int) -> list[dict[str, Any]]:
    """Our entries of a route's status.parents (other controllers' entries are theirs to keep)."""
    ours = [p for p in old if p.get("controllerName") == CONTROLLER_NAME]
    out = []
    for parent in status.parents:
        ref = _parent_ref(parent.parent, route_namespace)
        previous: list[dict[str, Any]] = next((p.get("conditions", []) for p in ours if p.get("parentRef") == ref),
                                              [])
        out.append({"parentRef": ref, "controllerName": CONTROLLER_NAME,
                    "conditions": conditions(previous, (parent.accepted, status.resolved_refs), generation)})
    return out


def class_status(old: dict[str, Any], spec: GatewayClassSpec, generation: int) -> dict[str, Any]:
    """A GatewayClass of ours is Accepted unless it names parameters (Portico takes none)."""
    accepted = (Cond("Accepted", False, "InvalidParameters",
                     "Portico's GatewayClass takes no parametersRef; remove it")
                if spec.parametersRef is not None else Cond("Accepted", True, "Accepted"))
    return {"conditions": conditions(old.get("conditions", []), (accepted,), generation),
            "supportedFeatures": [{"name": f} for f in sorted(SUPPORTED_FEATURES)]}


def gateway_conditions(results: tuple[ListenerResult, ...], address: UnsupportedAddress | None,
                       addresses: tuple[IPAddress, ...], why_no_address: str) -> tuple[Cond, Cond]:
    """Accepted (the listeners, the requested addresses) and Programmed (an address is held and a listener is
    served on it)."""
    accepted = (Cond("Accepted", False, "UnsupportedAddress", address.message) if address is not None
                else gateway_accepted(list(results)))
    if not accepted.status:
        return accepted, Cond("Programmed", False, "Invalid", accepted.message)
    if not addresses:
        return accepted, Cond("Programmed", False, "AddressNotAssigned", why_no_address)
    if not any(r.condition("Programmed").status for r in results):
        return accepted, Cond("Programmed", False, "Invalid", "no listener is valid")
    return accepted, Cond("Programmed", True, "Programmed", f"served on {', '.join(str(a) for a in addresses)}")


def gateway_status(old: dict[str, Any], generation: int, gateway: tuple[Cond, Cond], *,
                   results: tuple[ListenerResult, ...], attached: dict[str, int],
                   addresses: tuple[IPAddress, ...]) -> dict[str, Any]:
    return {"addresses": [{"type": "IPAddress", "value": str(a)} for a in addresses],
            "conditions": conditions(old.get("conditions", []), gateway, generation),
            "listeners": listener_statuses(old.get("listeners", []), results, attached, generation)}
