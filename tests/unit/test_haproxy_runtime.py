from __future__ import annotations

import ipaddress

from portico.dataplane.haproxy import runtime_changes
from portico.dataplane.l7model import Endpoint, L7Config, Pool


def pool(*hosts: int, name: str = "ns_web_80") -> L7Config:
    return L7Config((), (Pool(name, tuple(Endpoint(ipaddress.ip_address(f"198.19.1.{h}"), 8080) for h in hosts)),))


def test_endpoints_moving_within_the_slots_are_server_commands() -> None:
    assert runtime_changes(pool(1, 2), pool(1, 3, 4)) == [
        "set server ns_web_80/s1 addr 198.19.1.3 port 8080",
        "set server ns_web_80/s2 addr 198.19.1.4 port 8080", "set server ns_web_80/s2 state ready"]
    assert runtime_changes(pool(1, 2), pool(2)) == [
        "set server ns_web_80/s0 addr 198.19.1.2 port 8080", "set server ns_web_80/s1 state maint"]
    assert runtime_changes(pool(1), pool(1)) == []


def test_what_the_runtime_api_cannot_change_needs_a_reload() -> None:
    assert runtime_changes(pool(*range(1, 9)), pool(*range(1, 10))) is None  # 9 endpoints outgrow 8 slots
    assert runtime_changes(pool(1), pool(1, name="ns_other_80")) is None  # another pool
