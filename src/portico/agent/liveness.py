"""The peers' liveness as forwarding uses it: an input, like the caches (see `portico.health.liveness`).

The heartbeats say who is alive now; this view adds the hold-down and says which nodes' endpoints are out of
rotation. A change marks the Services with endpoints on those nodes dirty. Nothing is out until this node has
listened long enough to have heard every live peer (the mesh is settled), and nothing is ever out while node
liveness is turned off (the agent's --node-liveness=off: Kubernetes' own NotReady path only).
"""

from __future__ import annotations

import asyncio
import logging
import time

from portico.agent.caches import AgentCaches
from portico.announce.heartbeat import HeartbeatMesh
from portico.health.liveness import PeerLiveness

log = logging.getLogger(__name__)


class NodeLiveness:
    def __init__(self, mesh: HeartbeatMesh, caches: AgentCaches, *, enabled: bool = True) -> None:
        self.mesh, self.caches, self.enabled = mesh, caches, enabled
        self.peers: dict[str, PeerLiveness] = {}
        self.out: frozenset[str] = frozenset()  # nodes whose endpoints take no new flows from this node
        self._timer: asyncio.TimerHandle | None = None
        if enabled:
            mesh.on_liveness = self.recompute

    def recompute(self) -> None:
        now = time.monotonic()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self.mesh.settled:
            out: frozenset[str] = frozenset()
        else:
            for name, peer in self.mesh.peers.items():
                self.peers.setdefault(name, PeerLiveness()).observe(peer.alive, now)
            for name in set(self.peers) - set(self.mesh.peers):
                del self.peers[name]
            out = frozenset(name for name, p in self.peers.items() if not p.in_rotation(now))
            wake = min((t for p in self.peers.values() if (t := p.next_change(now)) is not None), default=None)
            if wake is not None:
                self._timer = asyncio.get_running_loop().call_later(max(0.0, wake - now), self.recompute)
        if out != self.out:
            flipped = out ^ self.out
            log.info("nodes out of rotation: %s (changed: %s)", ", ".join(sorted(out)) or "none",
                     ", ".join(sorted(flipped)))
            self.out = out
            self.caches.mark_all(self.caches.services_on(flipped))
