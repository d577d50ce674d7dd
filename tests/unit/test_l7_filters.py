from __future__ import annotations

import pytest

from portico.api.gateway import HTTPRouteTimeouts
from portico.dataplane.haproxy import redirect_port
from portico.dataplane.l7model import Redirect
from portico.l7.filters import duration_ms, response_timeout_ms


@pytest.mark.parametrize(("duration", "ms"), [("500ms", 500), ("1s", 1000), ("1m30s", 90_000), ("2h", 7_200_000),
                                              ("1h1m1s1ms", 3_661_001), ("0s", 0)])
def test_durations_are_read_as_gateway_api_spells_them(duration: str, ms: int) -> None:
    assert duration_ms(duration) == ms


def test_the_shorter_of_request_and_backend_timeouts_bounds_the_wait_and_zero_disables() -> None:
    assert response_timeout_ms(None) is None
    assert response_timeout_ms(HTTPRouteTimeouts(request="10s", backendRequest="500ms")) == 500
    assert response_timeout_ms(HTTPRouteTimeouts(request="2s")) == 2000
    assert response_timeout_ms(HTTPRouteTimeouts(request="0s", backendRequest="3s")) == 3000
    assert response_timeout_ms(HTTPRouteTimeouts(request="0s")) is None


@pytest.mark.parametrize(("redirect", "scheme", "listener_port", "port"), [
    (Redirect(302), "http", 80, None),  # the listener's, the scheme's own: not spelled out
    (Redirect(302), "http", 8080, 8080),
    (Redirect(302, scheme="https"), "https", 8080, None),  # a scheme asked for: its well-known port
    (Redirect(302, scheme="https", port=8443), "https", 80, 8443),
    (Redirect(302, port=80), "https", 443, 80),
    (Redirect(302, scheme="ftp"), "ftp", 8080, 8080),  # no well-known port known: the listener's
])
def test_a_redirects_port_follows_the_spec(redirect: Redirect, scheme: str, listener_port: int,
                                          port: int | None) -> None:
    assert redirect_port(redirect, scheme, listener_port) == port
