"""The Ingress reconciler: every Ingress of Portico's IngressClass gets the shared Ingress address in
status.loadBalancer, and an Event saying what of it is not served as written (portico.l7.ingress decides both).

One level-triggered pass over all of them (a single work-queue key). The address is the LoadBalancer Service
INGRESS_SERVICE in the controller's namespace (the chart's): allocated, announced and reported like any other.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.resources.core_v1 import Service
from lightkube.resources.networking_v1 import Ingress
from lightkube.types import PatchType

from portico.api.gateway import ObjectKey
from portico.kube.events import EventRecorder
from portico.l7 import inputs
from portico.l7.gateway_service import published_addresses
from portico.l7.ingress import (
    INGRESS_SERVICE,
    ingress_inputs,
    ingress_problems,
    ingress_status,
    our_ingress_classes,
    our_ingresses,
    service_ports,
)


@dataclass
class IngressReconciler:
    client: AsyncClient
    events: EventRecorder
    namespace: str  # where INGRESS_SERVICE is
    ingresses: Mapping[str, Any]  # informer caches
    classes: Mapping[str, Any]
    services: Mapping[str, Service]
    secrets: Mapping[str, Any]
    _reported: dict[ObjectKey, tuple[str, ...]] = field(default_factory=dict)  # problems last told, per Ingress

    async def reconcile(self) -> None:
        mine = our_ingresses(ingress_inputs(self.ingresses.values()), our_ingress_classes(self.classes.values()))
        if not mine:
            return
        address = self.services.get(f"{self.namespace}/{INGRESS_SERVICE}")
        load_balancer = ingress_status(published_addresses(address))
        secrets = {inputs.key_of(s): inputs.secret_problem(s) for s in self.secrets.values()}
        problems = ingress_problems(mine, service_ports(self.services.values()), secrets)
        for ing in mine:
            obj = self.ingresses.get(f"{ing.key.namespace}/{ing.key.name}")
            if obj is None:
                continue
            await self._status(obj, load_balancer)
            told = tuple(problems.get(ing.key, []))
            if told and told != self._reported.get(ing.key):
                self.events.record(obj, type="Warning", reason="NotServedAsWritten", message="; ".join(told))
            self._reported[ing.key] = told
        for key in set(self._reported) - {i.key for i in mine}:
            del self._reported[key]

    async def _status(self, obj: Any, load_balancer: list[dict[str, str]]) -> None:
        current = obj.status.loadBalancer.ingress if obj.status and obj.status.loadBalancer else None
        if [{"ip": i.ip} for i in current or []] == load_balancer:
            return
        try:
            await self.client.patch(Ingress.Status, obj.metadata.name,
                                    {"status": {"loadBalancer": {"ingress": load_balancer or None}}},
                                    namespace=obj.metadata.namespace, patch_type=PatchType.MERGE)
        except ApiError as e:
            if e.status.code != 404:  # gone meanwhile: nothing to write
                raise
