"""Test tiers follow the directory: tests/unit, tests/integration, tests/e2e (see pyproject markers)."""

from __future__ import annotations

import pytest

TIERS = ("unit", "integration", "e2e")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for tier in TIERS:
            if f"/tests/{tier}/" in str(item.path):
                item.add_marker(getattr(pytest.mark, tier))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--kube-proxy", choices=["nftables", "iptables"], default=None,
                     help="e2e: run the lab with the real kube-proxy in this mode on every node")
    parser.addoption("--lab-nodes", type=int, default=2,
                     help="e2e: the lab's node count (modules that need three nodes run only with 3)")
