"""What the lab gives the upstream Gateway API conformance suite: its CRDs (installed by the chart, as a user's
cluster gets them), and its echo-basic backend pulled through the lab registry's mirror of registry.k8s.io — the
upstream server, built from the pinned module, run under the lab's OCI runtime with its Secret volume."""

from __future__ import annotations

import datetime as dt
import json
import sys
import textwrap
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from portico.dev import gateway_api
from tests.e2e.conftest import Lab, wait_for

ECHO_BASIC = textwrap.dedent("""
    apiVersion: v1
    kind: Pod
    metadata: {name: echo-basic, namespace: default, labels: {app: echo-basic}}
    spec:
      containers:
        - name: echo-basic
          image: registry.k8s.io/gateway-api/echo-basic:%(tag)s
          env:
            - {name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
            - {name: NAMESPACE, valueFrom: {fieldRef: {fieldPath: metadata.namespace}}}
            - {name: TLS_SERVER_CERT, value: /etc/secret-volume/crt}
            - {name: TLS_SERVER_PRIVKEY, value: /etc/secret-volume/key}
          volumeMounts: [{name: secret-volume, mountPath: /etc/secret-volume}]
      volumes:
        - name: secret-volume
          secret:
            secretName: echo-basic-tls
            items: [{key: tls.crt, path: crt}, {key: tls.key, path: key}]
""")


def self_signed(directory: Path, host: str) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
            .sign(key, hashes.SHA256()))
    crt, pem = directory / "tls.crt", directory / "tls.key"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    return crt, pem


def test_the_chart_installs_the_gateway_api_standard_crds(lab: Lab) -> None:
    crds = {c["metadata"]["name"]: c for c in lab.get("crd")["items"]}
    for name, text in gateway_api.upstream_crds().items():
        plural = name.removeprefix("gateway.networking.k8s.io_").removesuffix(".yaml")
        crd = crds[f"{plural}.gateway.networking.k8s.io"]
        assert crd["metadata"]["annotations"]["gateway.networking.k8s.io/bundle-version"] == "v1.6.3", name
        assert crd["metadata"]["annotations"]["gateway.networking.k8s.io/channel"] == "standard", name
        assert f"name: {plural}.gateway.networking.k8s.io" in text


def test_echo_basic_from_the_mirror_answers_as_upstream_over_http_and_tls(lab: Lab, tmp_path: Path) -> None:
    crt, key = self_signed(tmp_path, "echo.example")
    lab.kubectl("create", "secret", "tls", "echo-basic-tls", f"--cert={crt}", f"--key={key}")
    lab.kubectl("apply", "-f", "-", stdin=ECHO_BASIC % {"tag": gateway_api.echo_basic_tags()[0]})
    try:
        pod = wait_for(lambda: (p := lab.get("pod", "echo-basic")) and p["status"].get("podIP") and any(
            c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", [])) and p,
            60, "echo-basic pod ready")
        ip = pod["status"]["podIP"]

        def echo(*curl: str) -> tuple[dict[str, str], dict[str, object]]:
            out = lab.exec_in("client", "curl", "-s", "--max-time", "3", "-D", "/dev/stderr", *curl)
            assert out.returncode == 0, out.stderr
            headers = dict(line.split(": ", 1) for line in out.stderr.strip().splitlines()[1:])
            return {k.lower(): v.strip() for k, v in headers.items()}, json.loads(out.stdout)

        headers, body = wait_for(lambda: echo(f"http://{ip}:3000/some/path?x=1", "-H", "X-Echo-Set-Header: A:b"),
                                 20, "echo-basic answering on 3000")
        assert headers["content-type"] == "application/json" and headers["a"] == "b"
        assert body["path"] == "/some/path?x=1" and body["method"] == "GET" and body["host"] == f"{ip}:3000"
        assert body["namespace"] == "default" and body["pod"] == "echo-basic"
        _, tls = echo("--cacert", str(crt), "--resolve", f"echo.example:8443:{ip}", "https://echo.example:8443/t")
        assert tls["path"] == "/t" and tls["tls"]["serverName"] == "echo.example"  # type: ignore[index]
        assert lab.exec_in("client", "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                           f"http://{ip}:3000/status/418").stdout == "418"
    finally:
        lab.kubectl("delete", "pod/echo-basic", "secret/echo-basic-tls", "--wait=false")


COREDNS = textwrap.dedent("""
    apiVersion: v1
    kind: Pod
    metadata: {name: coredns, namespace: default}
    spec:
      containers:
        - name: coredns
          image: registry.k8s.io/coredns/coredns:v1.12.2
          args: [-conf, /root/Corefile]
""")
DNS_QUERY = ("import socket,struct,sys; s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.settimeout(2); "
             "q=struct.pack('!HHHHHH',9,256,1,0,0,0)+b''.join(bytes([len(p)])+p.encode() for p in "
             "sys.argv[2].split('.'))+b'\\0\\0\\1\\0\\1'; s.sendto(q,(sys.argv[1],53)); r=s.recv(512); o=2*len(q)-6; "
             "print(struct.unpack('!HHHHHH',r[:12])[1]&15, socket.inet_ntoa(r[o:o+4]) if r[11] else '')")


def test_the_conformance_dns_backend_answers_whoami_and_refuses_the_rest(lab: Lab) -> None:
    lab.kubectl("apply", "-f", "-", stdin=COREDNS)
    try:
        pod = wait_for(lambda: (p := lab.get("pod", "coredns")) and any(
            c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", [])) and p,
            30, "coredns pod ready")
        ip = pod["status"]["podIP"]
        whoami = wait_for(lambda: (r := lab.exec_in("client", sys.executable, "-c", DNS_QUERY, ip, "foo.bar.com"))
                          .returncode == 0 and r.stdout.split(), 10, "an answer from the lab's DNS")
        assert whoami == ["0", "198.18.0.100"]  # the client, as pods see it
        refused = lab.exec_in("client", sys.executable, "-c", DNS_QUERY, ip, "example.com")
        assert refused.stdout.split() == ["5"], refused.stderr
    finally:
        lab.kubectl("delete", "pod/coredns", "--wait=false")
