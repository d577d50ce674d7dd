"""The agent's BGP side: `BgpConfig` (BGPPeer/BGPAdvertisement caches and the peers' passwords, part of the
agent's caches) and `BgpAnnouncements` (the consumer: desired sessions and routes -> GoBGP and BFD; session
states -> this node's report, `session_reports`, in its PorticoNode; the controller writes BGPPeer status).

The desired state is recomputed after every data-path sync (like layer 2); the speaker is programmed by a
task of its own, so a slow gRPC call never holds up the rules. A route is withdrawn as soon as this node
cannot serve its VIP: no rules, a failed sync, or no ready local endpoint under externalTrafficPolicy Local.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
import logging
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.resources.core_v1 import Secret

from portico.agent.announcements import VipOwners, bgp_routes, bgp_sessions
from portico.announce.bfd import BfdEndpoint, BfdSettings
from portico.announce.bgp import GoBgp, Prefix, Route, SessionState, api_socket, router_id
from portico.api import v1alpha1 as api
from portico.api.resources import BGPAdvertisementResource, BGPPeerResource, decode
from portico.dataplane.model import FrontendPolicy
from portico.ipam.blocks import IPAddress
from portico.kube.client import error_text
from portico.kube.informer import Informer, object_key

log = logging.getLogger(__name__)

STATUS_SECONDS = 1.0  # how often session states are read (and written when they change)
SECRET_SECONDS = 10.0  # how often password Secrets are re-read (the agent does not watch Secrets)
NOT_ESTABLISHED_HINT = ("check the peer's address and that it answers on its port, the password, "
                        "and that the peer is configured for this node")


def since_up(state: SessionState, base: int) -> tuple[SessionState, int]:
    """The state with NOTIFICATIONs counted since the session was last established (a flap's Cease is not a
    refusal of the configuration), and the new base. gobgpd counts from 0 again when a session is re-made."""
    if state.state == "Established":
        base = state.notifications
    elif state.notifications < base:
        base = 0
    return replace(state, notifications=state.notifications - base), base


def session_message(state: SessionState | None, problem: str | None, bfd: str | None = None) -> tuple[str, str]:
    """(state, message) of this node's session with a BGPPeer, for its status."""
    if problem is not None:
        return "NotConfigured", problem
    if state is None:
        return "Idle", "starting"
    if state.state == "Established":
        routes = f"{state.routes_sent} route{'' if state.routes_sent == 1 else 's'} advertised"
        return state.state, routes + (f"; BFD {bfd}" if bfd is not None else "")
    if state.notifications:
        return state.state, (f"the session was refused ({state.notifications} NOTIFICATIONs exchanged since it was "
                             "last up): check "
                             "peerASN and myASN, and that the peer is configured for this node")
    return state.state, f"not established: {NOT_ESTABLISHED_HINT}"


class BgpConfig:
    """What the BGP side reads from the API: BGPPeer and BGPAdvertisement caches and the peers' passwords
    (Secrets, re-read every SECRET_SECONDS: the agent may get Secrets, not watch them). `on_change()` marks the
    agent's view stale, as every informer handler does."""

    def __init__(self, client: AsyncClient, on_change: Callable[[], None], namespace: str = "portico-system") -> None:
        self.client = client
        self.on_change = on_change
        self.namespace = namespace  # where password Secrets may be (RBAC lets agents read more, for certificates)
        self.peers = Informer(client, BGPPeerResource, self._on_peer)
        self.advertisements = Informer(client, BGPAdvertisementResource, self._on_advertisement)
        self.peer_specs: dict[str, api.BGPPeerSpec] = {}
        self.advertisement_specs: dict[str, api.BGPAdvertisementSpec] = {}
        self.passwords: dict[str, str] = {}  # BGPPeer -> its password, read from its Secret
        self.secret_problems: dict[str, str] = {}
        self._peers_changed = asyncio.Event()  # re-read passwords now

    def _on_peer(self, old: Any, new: Any) -> None:
        if new is None:
            self.peer_specs.pop(object_key(old), None)
        else:
            self.peer_specs[object_key(new)] = decode(new.spec, api.BGPPeerSpec)
        self._peers_changed.set()
        self.on_change()

    def _on_advertisement(self, old: Any, new: Any) -> None:
        if new is None:
            self.advertisement_specs.pop(object_key(old), None)
        else:
            self.advertisement_specs[object_key(new)] = decode(new.spec, api.BGPAdvertisementSpec)
        self.on_change()

    async def _read_passwords(self) -> tuple[dict[str, str], dict[str, str]]:
        passwords, problems = {}, {}
        for name, spec in list(self.peer_specs.items()):
            ref = spec.passwordSecret
            if ref is None:
                continue
            if ref.namespace != self.namespace:
                problems[name] = (f"cannot read password Secret {ref.namespace}/{ref.name}: password Secrets must be "
                                  f"in {self.namespace}")
                continue
            try:
                secret = await self.client.get(Secret, ref.name, namespace=ref.namespace)
            except ApiError as e:
                problems[name] = f"cannot read password Secret {ref.namespace}/{ref.name}: {e.status.message}"
                continue
            value = (secret.data or {}).get(ref.key)
            if value is None:
                problems[name] = f"Secret {ref.namespace}/{ref.name} has no key {ref.key!r}"
            else:
                passwords[name] = base64.b64decode(value).decode()
        return passwords, problems

    async def read_secrets_forever(self) -> None:
        while True:
            try:
                passwords, problems = await self._read_passwords()
            except Exception as e:  # the API unreachable: keep the passwords we have, sessions stay as they are
                log.warning("password Secrets not re-read: %s", error_text(e))
                passwords, problems = self.passwords, self.secret_problems
            if (passwords, problems) != (self.passwords, self.secret_problems):
                self.passwords, self.secret_problems = passwords, problems
                self.on_change()
            self._peers_changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._peers_changed.wait(), SECRET_SECONDS)


class BgpAnnouncements:
    """The BGP speaker's consumer: desired sessions and routes (from `update`, after every sync) -> GoBGP and BFD;
    session states read back for this node's report. It reads no API object itself."""

    def __init__(self, node: str, record: Callable[[str, str, str, str], None]) -> None:
        self.node = node
        self._record = record  # (service, type, reason, message): an Event on the Service
        self.peer_specs: dict[str, api.BGPPeerSpec] = {}  # as last given to `update`
        self.problems: dict[str, str] = {}  # BGPPeer -> why this node has no session with it
        self.advertised: dict[IPAddress, tuple[str, ...]] = {}  # VIP -> its Services, while advertised here
        self.withheld: dict[IPAddress, str] = {}
        self.states: dict[str, SessionState] = {}
        self.speaker = GoBgp(api_socket(node), router_id="0.0.0.0")
        self.bfd = BfdEndpoint()
        self._wanted: tuple[dict[str, Any], dict[Prefix, Route]] = ({}, {})
        self._wake_speaker = asyncio.Event()
        self._notifications_at_up: dict[str, int] = {}

    # -- desired state (after every sync) ---------------------------------------------------------------
    def update(self, config: BgpConfig, *, labels: Mapping[str, str], address: IPAddress | None,
               allocations: Mapping[IPAddress, VipOwners], policies_of: Callable[[IPAddress], list[FrontendPolicy]],
               is_local: Callable[[str], bool], data_path_ok: bool) -> None:
        self.peer_specs = dict(config.peer_specs)
        sessions, problems = bgp_sessions(labels, self.peer_specs, config.passwords)
        self.problems = {**problems, **{p: m for p, m in config.secret_problems.items() if p in problems}}
        routes, withheld = bgp_routes(self.node, labels=labels, advertisements=config.advertisement_specs.values(),
                                      sessions=sessions, allocations=allocations, policies_of=policies_of,
                                      is_local=is_local, data_path_ok=data_path_ok)
        lengths = {(p.version, p.prefixlen) for p in routes}  # a VIP is advertised by its /32, /128 or aggregate
        advertised = {vip: owners.services for vip, owners in allocations.items()
                      if any(ipaddress.ip_network((vip, n), strict=False) in routes for v, n in lengths
                             if v == vip.version)}
        self._report_changes(advertised, withheld)
        self.withheld = withheld
        self.speaker.router_id = router_id(address, self.node)
        self.bfd.set_peers({s.address: BfdSettings(bfd.intervalMs, bfd.multiplier) for name, s in sessions.items()
                            if (bfd := self.peer_specs[name].bfd) is not None})
        if (sessions, routes) != self._wanted:
            self._wanted = (sessions, routes)
            self._wake_speaker.set()

    def _report_changes(self, advertised: dict[IPAddress, tuple[str, ...]], withheld: dict[IPAddress, str]) -> None:
        for vip, services in advertised.items():
            if vip not in self.advertised:
                for service in services:
                    self._record(service, "Normal", "BGPAdvertised", f"{self.node} advertises {vip} over BGP")
        for vip, services in self.advertised.items():
            if vip not in advertised:
                reason = withheld.get(vip, "no BGPAdvertisement and BGPPeer select it here any more")
                for service in services:
                    self._record(service, "Normal", "BGPWithdrawn", f"{self.node} withdrew {vip}: {reason}")
        self.advertised = advertised

    # -- running ------------------------------------------------------------------------------------------
    async def run(self) -> None:
        try:
            await asyncio.gather(self._program_forever(), self._status_forever())
        finally:
            self.bfd.close()
            await self.speaker.stop()

    async def _program_forever(self) -> None:
        while True:
            await self._wake_speaker.wait()
            self._wake_speaker.clear()
            sessions, routes = self._wanted
            try:
                await self.speaker.apply(sessions, routes)
            except Exception:
                log.exception("programming gobgpd failed; restarting it")
                await self.speaker.stop()  # the next apply starts it afresh and re-adds everything
                await asyncio.sleep(1)
                self._wake_speaker.set()

    async def _status_forever(self) -> None:
        while True:
            await asyncio.sleep(STATUS_SECONDS)
            if self.speaker.sessions and not self.speaker.running:
                log.warning("gobgpd exited; restarting it")
                await self.speaker.stop()
                self._wake_speaker.set()
            try:
                self.states = {s.peer: self._since_up(s) for s in await self.speaker.states()}
            except Exception as e:  # gobgpd hung past the deadline, or died between the check and the call
                log.warning("could not read BGP session states (%s); restarting gobgpd", e)
                await self.speaker.stop()
                self._wake_speaker.set()

    def _since_up(self, state: SessionState) -> SessionState:
        counted, self._notifications_at_up[state.peer] = since_up(state, self._notifications_at_up.get(state.peer, 0))
        return counted

    def session_reports(self) -> list[dict[str, str]]:
        """This node's session with each BGPPeer that selects it (or why there is none), for its PorticoNode."""
        out = []
        for peer in sorted(self.peer_specs):
            if peer not in self.speaker.sessions and peer not in self.problems:
                continue
            address = self.speaker.sessions[peer].address if peer in self.speaker.sessions else None
            bfd = self.bfd.state(address) if address is not None else None
            state, message = session_message(self.states.get(peer), self.problems.get(peer), bfd)
            out.append({"peer": peer, "state": state, "message": message})
        return out
