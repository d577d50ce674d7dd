"""Who announces a VIP: a rendezvous (highest-random-weight) hash of node and address (pure).

Every agent computes the same answer from the same set of eligible nodes, so no election and no
write to the API server is needed when a node fails: the next node in the ranking takes over, and
only the VIPs the failed node owned move (a node joining takes only the VIPs it now ranks first for).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping

from portico.ipam.blocks import IPAddress


def weight(node: str, key: str) -> int:
    """The node's score for the key; stable across processes, machines and Python versions."""
    digest = hashlib.blake2b(f"{node}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def owner(key: str, nodes: Iterable[str]) -> str | None:
    """The node that announces the key, or None when no node may."""
    return max(nodes, key=lambda node: (weight(node, key), node), default=None)


def owners(vips: Iterable[IPAddress], eligible: Mapping[str, frozenset[IPAddress]]) -> dict[IPAddress, str | None]:
    """Each VIP's announcer, given every live node's eligible VIPs (this node's included)."""
    return {vip: owner(str(vip), (node for node, theirs in eligible.items() if vip in theirs)) for vip in vips}
