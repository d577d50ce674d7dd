"""Pod addresses from a node's pod CIDRs (pure). Index k gives the k-th address in both families."""

from __future__ import annotations

from portico.dev.addressing import POD_GATEWAY_INDEX, Address, NodeAddressing


class PodAddressExhausted(Exception):
    pass


class PodAddresses:
    def __init__(self, node: NodeAddressing) -> None:
        self.node = node
        self._owner_by_index: dict[int, str] = {}
        self._first = POD_GATEWAY_INDEX + 1
        self._last = min(node.pod_cidr_v4.num_addresses, node.pod_cidr_v6.num_addresses) - 2  # no broadcast

    def addresses(self, index: int) -> tuple[Address, Address]:
        return (self.node.pod_cidr_v4[index], self.node.pod_cidr_v6[index])

    def allocate(self, owner: str) -> tuple[Address, Address]:
        """Addresses for `owner` (a pod UID): its existing ones, else the lowest free index."""
        for index, who in self._owner_by_index.items():
            if who == owner:
                return self.addresses(index)
        for index in range(self._first, self._last + 1):
            if index not in self._owner_by_index:
                self._owner_by_index[index] = owner
                return self.addresses(index)
        raise PodAddressExhausted(f"no free pod address left in {self.node.pod_cidr_v4} on {self.node.name}")

    def restore(self, owner: str, v4: Address) -> bool:
        """Re-own an address found in a pod's status (after a kubelet restart)."""
        if v4 not in self.node.pod_cidr_v4:
            return False
        index = int(v4) - int(self.node.pod_cidr_v4.network_address)
        if index < self._first or self._owner_by_index.get(index, owner) != owner:
            return False
        self._owner_by_index[index] = owner
        return True

    def release(self, owner: str) -> None:
        self._owner_by_index = {i: o for i, o in self._owner_by_index.items() if o != owner}

    @property
    def in_use(self) -> int:
        return len(self._owner_by_index)
