"""What an agent reads of the Gateway API and of Ingresses (informers), for HAProxy and for the frontends of the
addresses HAProxy serves (Gateways' address Services, the shared Ingress Service).

Part of the caches stage: handlers note what changed (HAProxy's inputs; a Gateway's address Service, whose
frontends become HAProxy's) and never act.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from lightkube import AsyncClient
from lightkube.resources.core_v1 import Namespace, Secret
from lightkube.resources.networking_v1 import Ingress, IngressClass

from portico.api.gateway import GatewaySpec, ObjectKey
from portico.api.resources import GatewayClassResource, GatewayResource, HTTPRouteResource, ReferenceGrantResource
from portico.kube.informer import Informer
from portico.l7 import inputs
from portico.l7.gateway_service import owning_gateway, service_name
from portico.l7.ingress import INGRESS_SERVICE, IngressInput, ingress_inputs, our_ingress_classes, our_ingresses


class GatewayCaches:
    def __init__(self, client: AsyncClient, mark_service: Callable[[str], None], namespace: str) -> None:
        self.changed = asyncio.Event()  # something HAProxy serves from changed
        self._mark_service = mark_service
        self.ingress_service = f"{namespace}/{INGRESS_SERVICE}"
        self.classes = Informer(client, GatewayClassResource, self._on_class, optional=True)
        self.gateways: Informer[Any] = Informer(client, GatewayResource, self._on_gateway, optional=True)
        self.routes = Informer(client, HTTPRouteResource, self._on_input, optional=True)
        self.grants = Informer(client, ReferenceGrantResource, self._on_input, optional=True)
        self.secrets = Informer(client, Secret, self._on_input, transform=inputs.kept_secret)
        self.namespaces = Informer(client, Namespace, self._on_input)
        self.ingresses = Informer(client, Ingress, self._on_input)
        self.ingress_classes = Informer(client, IngressClass, self._on_input)

    def informers(self) -> list[Informer[Any]]:
        return [self.classes, self.gateways, self.routes, self.grants, self.secrets, self.namespaces,
                self.ingresses, self.ingress_classes]

    def _on_input(self, old: Any, new: Any) -> None:
        self.changed.set()

    def _on_gateway(self, old: Any, new: Any) -> None:
        self.changed.set()
        for obj in (old, new):
            if obj is not None:  # whether its address Service is HAProxy's may have changed
                self._mark_service(f"{obj.metadata.namespace}/{service_name(obj.metadata.name)}")

    def _on_class(self, old: Any, new: Any) -> None:
        self.changed.set()
        for obj in self.gateways.cache.values():
            self._mark_service(f"{obj.metadata.namespace}/{service_name(obj.metadata.name)}")

    def ours(self) -> dict[ObjectKey, tuple[Any, GatewaySpec]]:
        return inputs.our_gateways(self.gateways.cache.values(), inputs.our_classes(self.classes.cache.values()))

    def ours_ingresses(self) -> list[IngressInput]:
        return our_ingresses(ingress_inputs(self.ingresses.cache.values()),
                             our_ingress_classes(self.ingress_classes.cache.values()))

    def served_by_haproxy(self, svc: Any) -> bool:
        """Whether this Service's address is HAProxy's: a Gateway's of ours, or the shared Ingress address."""
        meta = svc.metadata
        return f"{meta.namespace}/{meta.name}" == self.ingress_service or self.gateway_of(svc) is not None

    def gateway_of(self, svc: Any) -> ObjectKey | None:
        """The Gateway of ours whose address this Service holds, if any."""
        owner = owning_gateway(svc)
        if owner is None:
            return None
        key, uid = owner
        gateway = self.ours().get(key)
        return key if gateway is not None and gateway[0].metadata.uid == uid else None
