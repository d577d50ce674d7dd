"""BGP: the agent drives a real speaker, GoBGP, through its gRPC API (I/O at the edge).

The agent hands over the whole desired state — sessions and routes — and this module diffs it
against what GoBGP holds, like the nftables syncer: changed sessions are re-made, routes added and
withdrawn one by one, each route sent only to the sessions it is meant for (a per-session export
policy over a prefix set). gobgpd is the agent's child, listening on a unix socket only, and dies
with it (PR_SET_PDEATHSIG): a killed agent's sessions close at once and the router withdraws its
routes — the fail-safe the layer-2 responder has by construction.

gobgpd's API has no authentication, so where it listens is the access control: a socket file in a
directory only the agent's user may enter (in a pod, inside the agent container's own filesystem),
never an abstract socket, which any process in the node's network namespace can connect to. Every
call has a deadline: a hung gobgpd is killed and started afresh rather than holding the agent up.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import hashlib
import ipaddress
import logging
import os
import signal
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf.any_pb2 import Any as AnyPb

from portico.announce.gobgpapi import attribute_pb2 as attrs
from portico.announce.gobgpapi import gobgp_pb2 as api
from portico.announce.gobgpapi import gobgp_pb2_grpc as api_grpc
from portico.ipam.blocks import IPAddress

log = logging.getLogger(__name__)

Prefix = ipaddress.IPv4Network | ipaddress.IPv6Network
V4 = api.Family(afi=api.Family.AFI_IP, safi=api.Family.SAFI_UNICAST)
V6 = api.Family(afi=api.Family.AFI_IP6, safi=api.Family.SAFI_UNICAST)
WELL_KNOWN_COMMUNITIES = {"no-export": 0xFFFFFF01, "no-advertise": 0xFFFFFF02, "no-export-subconfed": 0xFFFFFF03,
                          "no-peer": 0xFFFFFF04, "blackhole": 0xFFFF029A}
STATES = {api.PeerState.UNKNOWN: "Unknown", api.PeerState.IDLE: "Idle", api.PeerState.CONNECT: "Connect",
          api.PeerState.ACTIVE: "Active", api.PeerState.OPENSENT: "OpenSent",
          api.PeerState.OPENCONFIRM: "OpenConfirm", api.PeerState.ESTABLISHED: "Established"}
EXPORT_POLICY = "portico-export"
# A session that dropped is retried this often once the peer answers again. (GoBGP's default also idles 30 s
# after a reset, which kept a node out of the router's route for up to a minute after a link flap.)
CONNECT_RETRY_SECONDS = 2
RPC_TIMEOUT_SECONDS = 5.0  # every gRPC call's deadline
RUN_DIR = os.environ.get("PORTICO_RUN_DIR", "/run/portico")  # private to the agent: mode 0700


@dataclass(frozen=True)
class Session:
    """One BGP session this node wants (from a BGPPeer that selects it)."""

    peer: str  # the BGPPeer's name
    address: IPAddress
    peer_asn: int
    my_asn: int
    port: int = 179
    hold_time: int = 90
    keepalive_time: int = 30
    password: str = field(default="", repr=False)  # never in a log line
    ebgp_multihop: bool = False


@dataclass(frozen=True)
class Route:
    """A prefix this node advertises, its path attributes, and the sessions (BGPPeer names) it goes to."""

    prefix: Prefix
    peers: frozenset[str]
    communities: tuple[str, ...] = ()
    local_pref: int | None = None


@dataclass(frozen=True)
class SessionState:
    peer: str
    address: IPAddress
    state: str  # Idle, Connect, Active, OpenSent, OpenConfirm, Established
    notifications: int = 0  # NOTIFICATIONs either way: one side refused the other (wrong ASN, ...)
    routes_sent: int = 0


def community_values(communities: tuple[str, ...]) -> tuple[list[int], list[attrs.LargeCommunity]]:
    """Standard (as 32-bit values) and large communities from their text forms (validated by the CRD)."""
    standard: list[int] = []
    large: list[attrs.LargeCommunity] = []
    for c in communities:
        if c in WELL_KNOWN_COMMUNITIES:
            standard.append(WELL_KNOWN_COMMUNITIES[c])
            continue
        parts = [int(p) for p in c.split(":")]
        if len(parts) == 2:
            standard.append(parts[0] << 16 | parts[1])
        else:
            large.append(attrs.LargeCommunity(global_admin=parts[0], local_data1=parts[1], local_data2=parts[2]))
    return standard, large


def _pack(message: Any) -> AnyPb:
    packed = AnyPb()
    packed.Pack(message)
    return packed


def path_of(route: Route) -> Any:
    """The GoBGP path for a route. The next hop is left unspecified: GoBGP sends each session's own local
    address, which is the address the router reaches this node at."""
    nlri = attrs.IPAddressPrefix(prefix_len=route.prefix.prefixlen, prefix=str(route.prefix.network_address))
    pattrs = [_pack(attrs.OriginAttribute(origin=0))]  # IGP
    if route.prefix.version == 4:
        family = V4
        pattrs.append(_pack(attrs.NextHopAttribute(next_hop="0.0.0.0")))
    else:
        family = V6
        pattrs.append(_pack(attrs.MpReachNLRIAttribute(family=V6, next_hops=["::"], nlris=[_pack(nlri)])))
    standard, large = community_values(route.communities)
    if standard:
        pattrs.append(_pack(attrs.CommunitiesAttribute(communities=standard)))
    if large:
        pattrs.append(_pack(attrs.LargeCommunitiesAttribute(communities=large)))
    if route.local_pref is not None:
        pattrs.append(_pack(attrs.LocalPrefAttribute(local_pref=route.local_pref)))
    return api.Path(family=family, nlri=_pack(nlri), pattrs=pattrs)


def _peer_of(session: Session) -> Any:
    family = V4 if session.address.version == 4 else V6
    return api.Peer(
        conf=api.PeerConf(neighbor_address=str(session.address), peer_asn=session.peer_asn,
                          local_asn=session.my_asn, auth_password=session.password, description=session.peer),
        timers=api.Timers(config=api.TimersConfig(hold_time=session.hold_time,
                                                  keepalive_interval=session.keepalive_time,
                                                  connect_retry=CONNECT_RETRY_SECONDS,
                                                  idle_hold_time_after_reset=CONNECT_RETRY_SECONDS)),
        transport=api.Transport(remote_port=session.port, passive_mode=False),
        ebgp_multihop=api.EbgpMultihop(enabled=session.ebgp_multihop, multihop_ttl=255 if session.ebgp_multihop
                                       else 0),
        # A session carries its own family's routes (IPv4 VIPs over IPv4 sessions, IPv6 over IPv6).
        afi_safis=[api.AfiSafi(config=api.AfiSafiConfig(family=family, enabled=True))],
    )


def _set_name(peer: str) -> str:
    return f"to-{peer}"


def _prefix_set(peer: str, prefixes: list[Prefix]) -> Any:
    return api.DefinedSet(defined_type=api.DefinedType.PREFIX, name=_set_name(peer), prefixes=[
        api.Prefix(ip_prefix=str(p), mask_length_min=p.prefixlen, mask_length_max=p.prefixlen) for p in prefixes])


def _set_parent_death_signal() -> None:
    """In the child before exec: die with the agent (Linux PR_SET_PDEATHSIG = 1)."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)


async def stop_child(process: asyncio.subprocess.Process, grace: float = 5) -> None:
    """SIGTERM, then SIGKILL after `grace` seconds: a child of the agent (gobgpd, HAProxy) stopped and reaped."""
    if process.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(process.wait(), grace)
    except TimeoutError:
        process.kill()
        await process.wait()


def api_socket(node: str, run_dir: str = RUN_DIR) -> str:
    """Where this node's gobgpd listens: a file in the agent's private directory (unix socket paths are at most
    107 bytes, node names up to 253: long ones are hashed)."""
    name = node if len(node) <= 40 else hashlib.blake2b(node.encode(), digest_size=16).hexdigest()
    return os.path.join(run_dir, f"gobgp-{name}.sock")


def private_directory(path: str) -> None:
    """Create `path` (and parents) with mode 0700, or make an existing one so: only its owner may enter."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    os.chmod(path, 0o700)


@dataclass
class GoBgp:
    """gobgpd run and programmed by the agent. `apply` is idempotent and level-triggered."""

    socket_path: str  # api_socket(node): in a directory of mode 0700
    router_id: str
    binary: str = "gobgpd"
    sessions: dict[str, Session] = field(default_factory=dict)  # what gobgpd holds now
    routes: dict[Prefix, Route] = field(default_factory=dict)
    _process: asyncio.subprocess.Process | None = None
    _stub: Any = None  # _Deadlined(GobgpApiStub)
    _channel: Any = None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.returncode is None

    async def apply(self, sessions: Mapping[str, Session], routes: Mapping[Prefix, Route]) -> None:
        if not sessions:
            await self.stop()
            return
        if not self.running:
            await self._start(sessions)
        stub = self._stub
        removed = [n for n in self.sessions if sessions.get(n) != self.sessions[n]]
        added = {name: s for name, s in sessions.items() if self.sessions.get(name) != s}
        for name in removed:
            await stub.DeletePeer(api.DeletePeerRequest(address=str(self.sessions.pop(name).address)))
        self.sessions.update(added)
        if removed or added:  # filters first: nothing leaves on a session before its own is in place
            await self._set_export_filters()
        for session in added.values():
            await stub.AddPeer(api.AddPeerRequest(peer=_peer_of(session)))
        for prefix in [p for p in self.routes if p not in routes]:
            await self._withdraw(self.routes.pop(prefix))
        moved: set[str] = set()  # sessions whose filter changed under a route GoBGP already holds
        for prefix, route in routes.items():
            held = self.routes.get(prefix)
            if held != route:
                moved |= await self._advertise(route, held)
                self.routes[prefix] = route
        for peer in sorted(moved & self.sessions.keys()):  # re-run their export policy, once each
            await stub.ResetPeer(api.ResetPeerRequest(address=str(self.sessions[peer].address), soft=True,
                                                      direction=api.ResetPeerRequest.OUT))

    async def _advertise(self, route: Route, held: Route | None) -> set[str]:
        stub, before = self._stub, held.peers if held is not None else frozenset()
        for peer in (route.peers - before) & self.sessions.keys():
            await stub.AddDefinedSet(api.AddDefinedSetRequest(defined_set=_prefix_set(peer, [route.prefix])))
        for peer in (before - route.peers) & self.sessions.keys():
            await stub.DeleteDefinedSet(api.DeleteDefinedSetRequest(defined_set=_prefix_set(peer, [route.prefix]),
                                                                    all=False))
        await stub.AddPath(api.AddPathRequest(table_type=api.TableType.GLOBAL, path=path_of(route)))
        # A new path meets the filters as they are now; a held one only after a soft reset of the sessions whose
        # filter changed (GoBGP sends nothing for an identical path).
        return set(route.peers ^ before) if held is not None else set()

    async def _withdraw(self, route: Route) -> None:
        await self._stub.DeletePath(api.DeletePathRequest(table_type=api.TableType.GLOBAL,
                                                          family=path_of(route).family, path=path_of(route)))
        for peer in route.peers & self.sessions.keys():
            await self._stub.DeleteDefinedSet(api.DeleteDefinedSetRequest(
                defined_set=_prefix_set(peer, [route.prefix]), all=False))

    async def _set_export_filters(self) -> None:
        """Every session's filter, replaced in one call (SetPolicies, atomic in gobgpd): per session a neighbor
        set, a prefix set of the routes meant for it, and a statement accepting exactly those. The global
        export assignment (made at start) rejects everything else. (GoBGP applies export policies globally; a
        neighbor-set condition on export matches the session the route is about to leave on.)"""
        sets, statements = [], []
        for peer, session in sorted(self.sessions.items()):
            sets += [api.DefinedSet(defined_type=api.DefinedType.NEIGHBOR, name=_set_name(peer),
                                    list=[str(ipaddress.ip_network(session.address))]),
                     _prefix_set(peer, [p for p, r in self.routes.items()
                                        if peer in r.peers and p.version == session.address.version])]
            statements.append(api.Statement(name=_set_name(peer), conditions=api.Conditions(
                prefix_set=api.MatchSet(type=api.MatchSet.ANY, name=_set_name(peer)),
                neighbor_set=api.MatchSet(type=api.MatchSet.ANY, name=_set_name(peer))),
                actions=api.Actions(route_action=api.RouteAction.ACCEPT)))
        await self._stub.SetPolicies(api.SetPoliciesRequest(
            defined_sets=sets, policies=[api.Policy(name=EXPORT_POLICY, statements=statements)]))

    async def states(self) -> list[SessionState]:
        if not self.running:
            return []
        by_address = {str(s.address): s for s in self.sessions.values()}
        out: list[SessionState] = []
        async for reply in self._stub.ListPeer(api.ListPeerRequest(enableAdvertised=True)):
            peer = reply.peer
            session = by_address.get(peer.conf.neighbor_address)
            if session is None:
                continue
            sent = sum(a.state.advertised for a in peer.afi_safis)
            out.append(SessionState(session.peer, session.address, STATES.get(peer.state.session_state, "Unknown"),
                                    int(peer.state.messages.received.notification
                                        + peer.state.messages.sent.notification), int(sent)))
        return out

    async def _start(self, sessions: Mapping[str, Session]) -> None:
        private_directory(os.path.dirname(self.socket_path))
        self._process = await asyncio.create_subprocess_exec(
            self.binary, f"--api-hosts=unix://{self.socket_path}", "--log-plain", "--pprof-disable",
            stdin=asyncio.subprocess.DEVNULL, preexec_fn=_set_parent_death_signal)
        self._channel = grpc.aio.insecure_channel(f"unix:{self.socket_path}")
        self._stub = _Deadlined(api_grpc.GobgpApiStub(self._channel))
        asn = min(s.my_asn for s in sessions.values())  # each session states its own local AS too
        for _ in range(100):
            try:
                await self._stub.StartBgp(api.StartBgpRequest(**{"global": api.Global(
                    asn=asn, router_id=self.router_id, listen_port=-1)}))  # we connect; nobody connects to us
                break
            except grpc.aio.AioRpcError:
                if self._process.returncode is not None:
                    raise RuntimeError(f"gobgpd exited with status {self._process.returncode}") from None
                await asyncio.sleep(0.05)
        else:
            raise RuntimeError(f"gobgpd did not answer on {self.socket_path}")
        self.sessions, self.routes = {}, {}
        await self._set_export_filters()
        await self._stub.AddPolicyAssignment(api.AddPolicyAssignmentRequest(assignment=api.PolicyAssignment(
            name="global", direction=api.PolicyDirection.EXPORT, policies=[api.Policy(name=EXPORT_POLICY)],
            default_action=api.RouteAction.REJECT)))
        log.info("gobgpd started (pid %d, router id %s, AS %d)", self._process.pid, self.router_id, asn)

    async def stop(self) -> None:
        if self._channel is not None:
            await self._channel.close()
        if self._process is not None:
            await stop_child(self._process)
        self._process = self._stub = self._channel = None
        self.sessions, self.routes = {}, {}
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)


class _Deadlined:
    """A gRPC stub whose every call carries a deadline, unless the caller gives one."""

    def __init__(self, stub: Any) -> None:
        self._stub = stub

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self._stub, name)

        def call(request: Any, **kwargs: Any) -> Any:
            kwargs.setdefault("timeout", RPC_TIMEOUT_SECONDS)
            return method(request, **kwargs)
        return call


def router_id(address: IPAddress | None, node: str) -> str:
    """The BGP identifier: the node's IPv4 address, or (IPv6-only nodes) a stable 32-bit value from its name."""
    if address is not None and address.version == 4:
        return str(address)
    return str(ipaddress.IPv4Address(hashlib.blake2b(node.encode(), digest_size=4).digest()))
