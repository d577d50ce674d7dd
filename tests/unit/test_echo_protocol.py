from __future__ import annotations

import json

from portico.dev.echo import EchoHTTP, Health


class FakeTransport:
    def __init__(self, peer: tuple[str, int, int, int]) -> None:
        self.peer, self.written, self.closed = peer, b"", False

    def get_extra_info(self, name: str) -> object:
        return self.peer if name == "peername" else None

    def write(self, data: bytes) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True


def _bodies(raw: bytes) -> list[dict[str, str]]:
    return [json.loads(chunk.split(b"\r\n\r\n", 1)[1]) for chunk in raw.split(b"HTTP/1.1 200 OK")[1:]]


def test_pipelined_keepalive_requests_split_across_reads() -> None:
    proto, transport = EchoHTTP("pod-a", "node-1", Health()), FakeTransport(("::ffff:198.18.0.100", 5555, 0, 0))
    proto.connection_made(transport)  # type: ignore[arg-type]
    proto.data_received(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nPOST / HTTP/1.1\r\nContent-Length: 4\r\n\r\nab")
    assert len(_bodies(transport.written)) == 1  # the POST body is incomplete
    proto.data_received(b"cdGET / HTTP/1.1\r\nConnection: close\r\n\r\n")
    bodies = _bodies(transport.written)
    assert len(bodies) == 3 and transport.closed
    assert bodies[0] == {"pod": "pod-a", "node": "node-1", "client": "198.18.0.100"}


def test_ipv6_client_is_reported_as_is() -> None:
    proto, transport = EchoHTTP("p", "n", Health()), FakeTransport(("fd00:198:18::64", 1, 0, 0))
    proto.connection_made(transport)  # type: ignore[arg-type]
    proto.data_received(b"GET / HTTP/1.1\r\n\r\n")
    assert _bodies(transport.written)[0]["client"] == "fd00:198:18::64"


def test_a_sick_echo_answers_503() -> None:
    health = Health()
    proto, transport = EchoHTTP("p", "n", health), FakeTransport(("198.18.0.100", 1, 0, 0))
    proto.connection_made(transport)  # type: ignore[arg-type]
    health.sick = True
    proto.data_received(b"GET / HTTP/1.1\r\n\r\n")
    assert transport.written.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
    health.sick = False
    proto.data_received(b"GET / HTTP/1.1\r\n\r\n")
    assert len(_bodies(transport.written)) == 1


def test_a_draining_echo_answers_and_closes_each_connection() -> None:
    """After SIGTERM with --drain: keep-alive clients are told to go elsewhere, with their request answered."""
    health = Health()
    proto, transport = EchoHTTP("p", "n", health), FakeTransport(("198.18.0.100", 1, 0, 0))
    proto.connection_made(transport)  # type: ignore[arg-type]
    proto.data_received(b"GET / HTTP/1.1\r\n\r\n")
    assert b"Connection: close" not in transport.written and not transport.closed
    health.draining = True
    proto.data_received(b"GET / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n")
    assert transport.written.count(b"HTTP/1.1 200 OK\r\nConnection: close\r\n") == 1 and transport.closed
    assert len(_bodies(transport.written)) == 2
