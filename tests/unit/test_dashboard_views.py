"""The dashboard's documents from plain API objects (pure)."""

from __future__ import annotations

from portico.ops.dashboard import views
from tests.unit.test_ops import READY3, VIP, lab, service


def test_the_overview_counts_vips_by_state_and_shows_pool_use_and_alerts() -> None:
    pending = service("full", addresses=(), assigned=("False", "PoolExhausted", "no free address left in lan"),
                      announced=None)
    doc = views.overview(lab(service(), pending, slices=(READY3,)), [
        {"labels": {"alertname": "PorticoVIPNoBackend", "severity": "critical"}, "state": "firing",
         "annotations": {"summary": "default/x: no backend"}}])
    assert {s["state"]: s["count"] for s in doc["states"]} == {
        "Serving": 1, "Idle": 0, "Degraded": 0, "NoBackends": 0, "NotAnnounced": 0, "Pending": 1}
    assert doc["pools"] == [{"name": "lan", "addresses": ["198.18.0.240/30"], "ready": "Ready",
                             "usage": [{"family": "ipv4", "used": 1, "total": 4, "percent": 25.0}]}]
    assert doc["alerts"] == [{"name": "PorticoVIPNoBackend", "state": "firing", "severity": "critical",
                              "summary": "default/x: no backend"}]
    assert doc["problems"] == ["Service default/full: Pending: PoolExhausted: no free address left in lan"]
    assert views.overview(lab(service()), None)["alerts"] is None  # no Prometheus: the page says so


def test_a_vip_document_has_its_backends_health_path_and_traffic() -> None:
    doc = views.vip(lab(service(), slices=(READY3,)), "service", "default", "web",
                    backend_up={"198.19.1.5": 1.0, "198.19.2.5": 0.0}, traffic=[(1.0, 5.0), (6.0, 7.5)])
    assert doc is not None
    assert [(e["address"], e["state"], e["health"]) for e in doc["endpoints"]] == [
        ("198.19.1.5", "ready", "up"), ("198.19.2.5", "ready", "down"), ("198.19.2.6", "not ready", None)]
    assert doc["row"]["addresses"] == [VIP] and doc["traffic"] == [(1.0, 5.0), (6.0, 7.5)]
    assert [s["name"] for s in doc["steps"]][:3] == ["class", "address", "announced"]
    assert views.vip(lab(service()), "service", "default", "nope", backend_up=None, traffic=None) is None


def test_backend_up_endpoint_labels_name_addresses() -> None:
    assert [views.endpoint_address(label) for label in ("198.19.1.5:8080", "[fd00::5]:8080", "198.19.1.5",
                                                        "fd00::5")] == [
        "198.19.1.5", "fd00::5", "198.19.1.5", "fd00::5"]
