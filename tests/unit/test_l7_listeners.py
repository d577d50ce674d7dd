from __future__ import annotations

import base64
import datetime as dt
from typing import Any

import msgspec
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from portico.api.gateway import Listener, ObjectKey, ReferenceGrantSpec
from portico.l7.certificates import certificate_problem
from portico.l7.listeners import HTTP_ROUTE, gateway_accepted, judge_listeners
from portico.l7.references import Grant

GW = ObjectKey("infra", "gw")


def listeners(*specs: dict[str, Any]) -> list[Listener]:
    return [msgspec.convert(s, Listener) for s in specs]


def https(name: str, *refs: dict[str, Any], port: int = 443) -> dict[str, Any]:
    return {"name": name, "port": port, "protocol": "HTTPS", "tls": {"certificateRefs": list(refs)}}


def grant(namespace: str, from_namespace: str, name: str | None = None) -> Grant:
    to = {"group": "", "kind": "Secret", **({"name": name} if name else {})}
    return Grant(namespace, msgspec.convert({"from": [{"group": "gateway.networking.k8s.io", "kind": "Gateway",
                                                      "namespace": from_namespace}], "to": [to]},
                                            ReferenceGrantSpec))


def conds(result: Any) -> dict[str, tuple[bool, str]]:
    return {c.type: (c.status, c.reason) for c in result.conditions}


def test_http_listener_is_accepted_programmed_and_takes_httproutes() -> None:
    [r] = judge_listeners(GW, listeners({"name": "http", "port": 80, "protocol": "HTTP"}), {}, [])
    assert conds(r) == {"Accepted": (True, "Accepted"), "ResolvedRefs": (True, "ResolvedRefs"),
                        "Conflicted": (False, "NoConflicts"), "Programmed": (True, "Programmed")}
    assert r.supported_kinds == (HTTP_ROUTE,) and r.usable


def test_unsupported_protocol_is_not_accepted_and_takes_no_kinds() -> None:
    results = judge_listeners(GW, listeners({"name": "udp", "port": 53, "protocol": "UDP"}), {}, [])
    assert conds(results[0])["Accepted"] == (False, "UnsupportedProtocol") and results[0].supported_kinds == ()
    assert (gateway_accepted(results).status, gateway_accepted(results).reason) == (False, "ListenersNotValid")
    mixed = judge_listeners(GW, listeners({"name": "udp", "port": 53, "protocol": "UDP"},
                                          {"name": "http", "port": 80, "protocol": "HTTP"}), {}, [])
    assert (gateway_accepted(mixed).status, gateway_accepted(mixed).reason) == (True, "ListenersNotValid")


def test_invalid_route_kinds_are_dropped_from_supported_kinds_and_unresolve_refs() -> None:
    [r] = judge_listeners(GW, listeners({"name": "http", "port": 80, "protocol": "HTTP", "allowedRoutes": {
        "kinds": [{"kind": "InvalidRoute"}, {"kind": "HTTPRoute"}]}}), {}, [])
    assert r.supported_kinds == (HTTP_ROUTE,)
    assert conds(r)["ResolvedRefs"] == (False, "InvalidRouteKinds") and conds(r)["Programmed"][0] is False


@pytest.mark.parametrize(("ref", "secrets", "reason"), [
    ({"name": "missing"}, {}, "InvalidCertificateRef"),
    ({"name": "c", "group": "wrong.group"}, {ObjectKey("infra", "c"): None}, "InvalidCertificateRef"),
    ({"name": "c", "kind": "ConfigMap"}, {ObjectKey("infra", "c"): None}, "InvalidCertificateRef"),
    ({"name": "c"}, {ObjectKey("infra", "c"): "tls.crt is not a PEM certificate"}, "InvalidCertificateRef"),
    ({"name": "c", "namespace": "certs"}, {ObjectKey("certs", "c"): None}, "RefNotPermitted"),
    ({"name": "c"}, {ObjectKey("infra", "c"): None}, "ResolvedRefs"),
])
def test_https_certificate_references(ref: dict[str, Any], secrets: dict[ObjectKey, str | None],
                                      reason: str) -> None:
    [r] = judge_listeners(GW, listeners(https("https", ref)), secrets, [])
    assert conds(r)["ResolvedRefs"] == (reason == "ResolvedRefs", reason)
    assert r.usable == (reason == "ResolvedRefs")


def test_cross_namespace_certificates_need_a_grant_in_the_secrets_namespace_naming_the_gateways() -> None:
    secrets: dict[ObjectKey, str | None] = {ObjectKey("certs", "c"): None}
    ref = {"name": "c", "namespace": "certs"}
    for grants, ok in [([grant("certs", "infra")], True), ([grant("certs", "infra", "c")], True),
                       ([grant("certs", "infra", "other")], False), ([grant("certs", "elsewhere")], False),
                       ([grant("infra", "infra")], False)]:
        [r] = judge_listeners(GW, listeners(https("https", ref)), secrets, grants)
        assert r.usable == ok, grants
        assert r.certificates == ((ObjectKey("certs", "c"),) if ok else ())


def test_conflicts_on_a_port_unprogram_every_listener_involved() -> None:
    results = judge_listeners(GW, listeners(
        {"name": "a", "port": 80, "protocol": "HTTP", "hostname": "x.example"},
        {"name": "b", "port": 80, "protocol": "HTTP", "hostname": "x.example"},
        {"name": "c", "port": 80, "protocol": "HTTP", "hostname": "y.example"},
        {"name": "d", "port": 8443, "protocol": "HTTP"},
        https("e", {"name": "s"}, port=8443)), {ObjectKey("infra", "s"): None}, [])
    by = {r.name: conds(r) for r in results}
    assert by["a"]["Conflicted"] == by["b"]["Conflicted"] == (True, "HostnameConflict")
    assert by["c"]["Conflicted"] == (False, "NoConflicts") and by["c"]["Programmed"] == (True, "Programmed")
    assert by["d"]["Conflicted"] == by["e"]["Conflicted"] == (True, "ProtocolConflict")
    assert not any(by[n]["Programmed"][0] for n in "abde")


def pem_pair() -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x.example")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM), key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_certificate_problems_name_what_is_wrong() -> None:
    crt, key = pem_pair()
    _, other_key = pem_pair()
    assert certificate_problem("kubernetes.io/tls", {"tls.crt": b64(crt), "tls.key": b64(key)}) is None
    assert "not kubernetes.io/tls" in str(certificate_problem("Opaque", {"tls.crt": b64(crt), "tls.key": b64(key)}))
    assert "tls.crt" in str(certificate_problem("kubernetes.io/tls", {"tls.crt": b64(b"junk"), "tls.key": b64(key)}))
    assert "tls.key" in str(certificate_problem("kubernetes.io/tls", {"tls.crt": b64(crt), "tls.key": b64(b"x")}))
    assert "does not match" in str(certificate_problem("kubernetes.io/tls",
                                                       {"tls.crt": b64(crt), "tls.key": b64(other_key)}))
