"""The Gateway API reconciler: GatewayClass, Gateway and HTTPRoute statuses, and each Gateway's address Service.

One level-triggered pass over everything (a single work-queue key, so a burst of changes is one pass): the
Gateways of our classes get their address Service (portico.l7.gateway_service), then the one translation
(portico.l7.translate) — the same the agents serve from — decides every status, and only what differs is written.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.resources.core_v1 import Service
from lightkube.types import PatchType

from portico.api.gateway import CONTROLLER_NAME, ObjectKey
from portico.api.resources import GatewayClassResource, GatewayResource, HTTPRouteResource
from portico.controller.services import CONDITION as ADDRESS_CONDITION
from portico.controller.services import Conflict
from portico.kube.client import apply_status
from portico.kube.events import EventRecorder
from portico.l7 import inputs
from portico.l7.gateway_service import (
    UnsupportedAddress,
    desired_service,
    owning_gateway,
    published_addresses,
    requested_addresses,
    same_service,
    service_name,
)
from portico.l7.statuses import class_status, gateway_conditions, gateway_status, route_parents
from portico.l7.translate import translate

log = logging.getLogger(__name__)

FIELD_MANAGER = "portico-gateway"


@dataclass
class GatewayReconciler:
    client: AsyncClient
    events: EventRecorder
    classes: Mapping[str, Any]  # informer caches
    gateways: Mapping[str, Any]
    routes: Mapping[str, Any]
    grants: Mapping[str, Any]
    secrets: Mapping[str, Any]
    services: Mapping[str, Service]
    namespaces: Mapping[str, Any]

    async def reconcile(self) -> None:
        classes = inputs.our_classes(self.classes.values())
        for name, class_spec in classes.items():
            cls = self.classes[name]
            status = class_status(cls.status or {}, class_spec, cls.metadata.generation)
            if not _same_status(cls.status or {}, status):
                await apply_status(self.client, GatewayClassResource, name, status, field_manager=FIELD_MANAGER)
        if not self.gateways and not self.routes:
            return
        gateways = inputs.our_gateways(self.gateways.values(), classes)
        addresses, unsupported, why_none = {}, {}, {}
        for key, (obj, spec) in gateways.items():
            requested = requested_addresses(spec)
            svc = self.services.get(f"{key.namespace}/{service_name(key.name)}")
            if isinstance(requested, UnsupportedAddress):
                unsupported[key] = requested  # what it holds stays as it was: bad input loses no address
            else:
                await self._ensure_service(obj, desired_service(obj, spec, requested), svc)
            mine = svc is not None and owning_gateway(svc) == (key, obj.metadata.uid)
            addresses[key] = published_addresses(svc) if mine else ()
            why_none[key] = _why_no_address(svc if mine else None)
        await self._delete_stale_services(gateways)
        world = inputs.world(self.services.values(), {}, self.secrets.values(), self.grants.values(),
                             self.namespaces.values())
        routes = inputs.route_inputs(self.routes.values())
        result = translate(inputs.gateway_inputs(gateways, addresses), routes, world,
                           {k: "" for k in world.secrets})
        for key, (obj, _) in gateways.items():
            listeners = result.listeners[key]
            conditions = gateway_conditions(listeners, unsupported.get(key), addresses[key], why_none[key])
            attached = {name: n for (gw, name), n in result.attached_routes.items() if gw == key}
            status = gateway_status(obj.status or {}, obj.metadata.generation, conditions, results=listeners,
                                    attached=attached, addresses=addresses[key])
            if not _same_status(obj.status or {}, status):
                await self._write(apply_status(self.client, GatewayResource, key.name, status,
                                               field_manager=FIELD_MANAGER, namespace=key.namespace))
        for obj in self.routes.values():
            await self._route_status(obj, result.routes.get(inputs.key_of(obj)))

    async def _ensure_service(self, gateway: Any, desired: dict[str, Any], current: Service | None) -> None:
        if current is not None and owning_gateway(current) is None:
            log.warning("Service %s/%s exists and is not a Gateway's: Gateway %s gets no address",
                        desired["metadata"]["namespace"], desired["metadata"]["name"], gateway.metadata.name)
            return
        if same_service(current, desired):
            return
        await self._write(self.client.patch(Service, desired["metadata"]["name"], desired,
                                            namespace=desired["metadata"]["namespace"], patch_type=PatchType.APPLY,
                                            field_manager=FIELD_MANAGER, force=True))
        if current is None:
            self.events.record(gateway, type="Normal", reason="AddressServiceCreated",
                               message=f"Service {desired['metadata']['name']} holds this Gateway's address")

    async def _delete_stale_services(self, gateways: Mapping[ObjectKey, tuple[Any, Any]]) -> None:
        """Address Services whose Gateway is gone or no longer ours (garbage collection does the first too, but
        not a class change)."""
        for svc in list(self.services.values()):
            owner = owning_gateway(svc)
            if owner is None:
                continue
            key, uid = owner
            if key in gateways and gateways[key][0].metadata.uid == uid:
                continue
            name = service_name(key.name)  # what owning_gateway() checked the Service is called
            log.info("deleting Service %s/%s: Gateway %s is not Portico's any more", key.namespace, name, key)
            await self._write(self.client.delete(Service, name, namespace=key.namespace))

    async def _route_status(self, obj: Any, status: Any) -> None:
        """Our entries of status.parents (others' kept), written with the object's resourceVersion: the list is
        atomic, so a write on a stale view would drop another controller's entry — it is retried instead."""
        old = (obj.status or {}).get("parents", [])
        ours = route_parents(old, status, obj.metadata.namespace, obj.metadata.generation) if status else []
        theirs = [p for p in old if p.get("controllerName") != CONTROLLER_NAME]
        if _without_times([p for p in old if p.get("controllerName") == CONTROLLER_NAME]) == _without_times(ours):
            return
        body = {"metadata": {"resourceVersion": obj.metadata.resourceVersion}, "status": {"parents": theirs + ours}}
        await self._write(self.client.patch(HTTPRouteResource.Status, obj.metadata.name, body,
                                            namespace=obj.metadata.namespace, patch_type=PatchType.MERGE))

    @staticmethod
    async def _write(call: Any) -> None:
        try:
            await call
        except ApiError as e:
            if e.status.code == 409:
                raise Conflict(str(e.status.message)) from None
            if e.status.code != 404:  # gone meanwhile: its delete event brings the next pass
                raise


def _why_no_address(svc: Service | None) -> str:
    if svc is None or svc.status is None:
        return "waiting for an address"
    condition = next((c for c in svc.status.conditions or [] if c.type == ADDRESS_CONDITION), None)
    return f"{condition.reason}: {condition.message}" if condition is not None and condition.status == "False" \
        else "waiting for an address"


def _without_times(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_times(v) for k, v in value.items() if k != "lastTransitionTime"}
    if isinstance(value, list):
        return [_without_times(v) for v in value]
    return value


def _same_status(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """Equal in what we write, but for transition times (kept unless a status changes)."""
    return all(_without_times(old.get(k)) == _without_times(v) for k, v in new.items())
