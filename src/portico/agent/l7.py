"""The L7 consumer: the Gateways of our classes, their routes, the Ingresses of our class and the pods behind
them -> HAProxy on this node.

It runs the one translation (portico.l7.translate) on the caches, as the controller does for the statuses, with
this node's view of the endpoints (ready, healthy, on live nodes: as at L4), writes the listeners' certificates,
renders the configuration (portico.dataplane.haproxy) and has HAProxy load it when it changed. It reads the
caches and calls nothing upstream; what it cannot serve is logged and counted, and the old configuration stays.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from portico.agent.caches import AgentCaches
from portico.agent.desired import pool_endpoints
from portico.agent.haproxy import HAProxy, InvalidConfiguration
from portico.announce.bgp import private_directory
from portico.api.gateway import ObjectKey
from portico.dataplane.haproxy import render, runtime_changes
from portico.dataplane.l7model import Endpoint, L7Config, merge
from portico.dataplane.local_delivery import ensure_local_delivery
from portico.health.checks import NOBODY, ByNode
from portico.ipam.blocks import IPAddress
from portico.l7 import inputs
from portico.l7.backend_policy import pool_policy
from portico.l7.gateway_service import service_name
from portico.l7.ingress import service_ports, translation_inputs
from portico.l7.translate import translate

log = logging.getLogger(__name__)

COALESCE_SECONDS = 0.05


class CertificateFiles(Mapping[ObjectKey, str]):
    """Secret -> the file HAProxy reads its chain and key from, named by content (a changed certificate is a new
    file, so a reload never sees a half-written one). Only the Secrets a listener serves are ever looked up."""

    def __init__(self, secrets: Mapping[str, Any], directory: Path) -> None:
        self._secrets, self._directory = secrets, directory
        self.wanted: dict[Path, bytes] = {}

    def __getitem__(self, key: ObjectKey) -> str:
        data = self._secrets[f"{key.namespace}/{key.name}"].data or {}
        pem = base64.b64decode(data["tls.crt"]).rstrip(b"\n") + b"\n" + base64.b64decode(data["tls.key"])
        path = self._directory / f"{hashlib.sha256(pem).hexdigest()[:32]}.pem"
        self.wanted[path] = pem
        return str(path)

    def __iter__(self) -> Iterator[ObjectKey]:
        return (ObjectKey(*k.split("/", 1)) for k in self._secrets)

    def __len__(self) -> int:
        return len(self._secrets)

    def write(self) -> None:
        """The wanted files present (mode 0600), the others removed (after the reload that stopped using them)."""
        for directory in (self._directory.parent, self._directory):  # HAProxy's, then ours: both private
            private_directory(str(directory))
        for path, pem in self.wanted.items():
            if not path.exists():
                tmp = path.with_suffix(".tmp")
                tmp.touch(mode=0o600)
                tmp.write_bytes(pem)
                tmp.replace(path)

    def prune(self) -> None:
        for path in self._directory.glob("*.pem"):
            if path not in self.wanted:
                path.unlink(missing_ok=True)


class L7Serving:
    def __init__(self, node: str, caches: AgentCaches, haproxy: HAProxy | None = None, *,
                 down_for: Callable[[str], ByNode] = lambda service: NOBODY,
                 dead_nodes: Callable[[], frozenset[str]] = frozenset,
                 gated_for: Callable[[str], ByNode] = lambda service: NOBODY, access_log: bool = True) -> None:
        self.node, self.caches, self.access_log = node, caches, access_log
        self.haproxy = haproxy or HAProxy()
        self.down_for, self.dead_nodes, self.gated_for = down_for, dead_nodes, gated_for
        self.served: str | None = None  # the configuration HAProxy runs
        self.served_config: L7Config | None = None  # ... as the model it was rendered from
        self.problem: str | None = None  # why the last one was not loaded

    async def run(self) -> None:
        for problem in ensure_local_delivery():  # a node without IPv6 lacks that family's route, and says so
            log.warning("local delivery of Gateway addresses: %s", problem)
        changed = self.caches.gateway_api.changed
        try:
            while True:
                await changed.wait()
                await asyncio.sleep(COALESCE_SECONDS)
                changed.clear()
                try:
                    await self.sync_once()
                except Exception:
                    log.exception("L7 sync failed; retrying")
                    await asyncio.sleep(1)
                    changed.set()
        finally:
            await self.haproxy.stop()

    def _endpoints(self, routes: list[Any]) -> dict[tuple[ObjectKey, int], tuple[Endpoint, ...]]:
        """The pools' endpoints: of the Services the routes name, only."""
        named = {ObjectKey(ref.namespace or r.key.namespace, ref.name)
                 for r in routes for rule in r.spec.rules for ref in rule.backendRefs}
        out = {}
        for key in named:
            skey = f"{key.namespace}/{key.name}"
            svc = self.caches.services.cache.get(skey)
            if svc is None:
                continue
            for port, endpoints in pool_endpoints(svc, self.caches.slices_for(skey), self.node,
                                                  down=self.down_for(skey), gated=self.gated_for(skey),
                                                  dead_nodes=self.dead_nodes()).items():
                out[(key, port)] = endpoints
        return out

    def _addresses(self, service: str) -> tuple[IPAddress, ...]:
        svc: Any = self.caches.services.cache.get(service)
        vips = self.caches.vips_of.get(svc.metadata.uid, set()) if svc is not None else set()
        return tuple(sorted(vips, key=lambda a: (a.version, int(a))))

    def desired(self, certificates: CertificateFiles) -> L7Config:
        """What HAProxy should serve: our Gateways' and our Ingresses', each translated on its own (so no HTTPRoute
        can attach to the Ingress address nor use the grants made for its certificates)."""
        gw = self.caches.gateway_api
        gateways = gw.ours()
        addresses = {}
        for key in gateways:
            svc: Any = self.caches.services.cache.get(f"{key.namespace}/{service_name(key.name)}")
            if svc is not None and gw.gateway_of(svc) == key:
                addresses[key] = self._addresses(f"{key.namespace}/{service_name(key.name)}")
        routes = inputs.route_inputs(gw.routes.cache.values())
        services = self.caches.services.cache.values()
        world = inputs.world(services, {}, gw.secrets.cache.values(), gw.grants.cache.values(),
                             gw.namespaces.cache.values())
        ingress = translation_inputs(gw.ours_ingresses(), address=ObjectKey(*gw.ingress_service.split("/", 1)),
                                     addresses=self._addresses(gw.ingress_service),
                                     services=service_ports(services), secrets=world.secrets)
        world = replace(world, endpoints=self._endpoints([*routes, *ingress.routes]),
                        pool_policies={ObjectKey(*key.split("/", 1)): pool_policy(spec)
                                       for key, spec in self.caches.policy_of.items()})
        return merge(translate(inputs.gateway_inputs(gateways, addresses), routes, world, certificates).config,
                     translate(ingress.gateways, ingress.routes, replace(world, grants=ingress.grants),
                               certificates).config)

    async def sync_once(self) -> None:
        gw = self.caches.gateway_api
        if not gw.gateways.cache and not gw.ingresses.cache and not self.haproxy.running:
            return  # nothing to serve and nothing serving: every Service and slice change wakes this, keep it cheap
        certificates = CertificateFiles(gw.secrets.cache, self.haproxy.directory / "certs")
        config = self.desired(certificates)
        if not config.listeners and not self.haproxy.running:
            return  # nothing bound (no address yet, or no valid listener): no HAProxy
        text = render(config, runtime_socket=str(self.haproxy.runtime_socket), access_log=self.access_log)
        if text == self.served:
            return
        if self.served_config is not None and self.haproxy.running:
            commands = runtime_changes(self.served_config, config)
            if commands and await self.haproxy.update(commands, text):  # endpoints only: no reload
                self.served, self.served_config = text, config
                return
        certificates.write()
        try:
            await self.haproxy.apply(text)
        except InvalidConfiguration as e:
            if e.args[0] != self.problem:
                log.error("HAProxy refused the configuration; it keeps the last one: %s", e)
            self.problem = e.args[0]
            return
        self.served, self.served_config, self.problem = text, config, None
        certificates.prune()
        log.info("HAProxy serves %d listeners, %d pools (reload %d)", len(config.listeners), len(config.pools),
                 self.haproxy.reloads)
