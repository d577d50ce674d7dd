from __future__ import annotations

import ipaddress

import pytest

from portico.dev.addressing import node_addressing
from portico.dev.kubelet.podips import PodAddresses, PodAddressExhausted


def test_allocates_both_families_at_the_same_index_and_reuses_freed() -> None:
    ips = PodAddresses(node_addressing(2))
    v4, v6 = ips.allocate("pod-a")
    assert (str(v4), str(v6)) == ("198.19.2.2", "fd00:198:18:102::2")
    assert ips.allocate("pod-a") == (v4, v6)  # idempotent per owner
    assert str(ips.allocate("pod-b")[0]) == "198.19.2.3"
    ips.release("pod-a")
    assert str(ips.allocate("pod-c")[0]) == "198.19.2.2"


def test_restore_after_restart_and_conflicts() -> None:
    ips = PodAddresses(node_addressing(1))
    assert ips.restore("pod-a", ipaddress.ip_address("198.19.1.7"))
    assert not ips.restore("pod-b", ipaddress.ip_address("198.19.1.7"))  # owned by pod-a
    assert not ips.restore("pod-b", ipaddress.ip_address("198.19.2.7"))  # another node's CIDR
    assert not ips.restore("pod-b", ipaddress.ip_address("198.19.1.1"))  # the gateway
    assert str(ips.allocate("pod-a")[0]) == "198.19.1.7"


def test_exhaustion_is_an_error() -> None:
    ips = PodAddresses(node_addressing(1))
    for i in range(253):
        ips.allocate(f"p{i}")
    with pytest.raises(PodAddressExhausted, match=r"198\.19\.1\.0/24"):
        ips.allocate("one-too-many")
