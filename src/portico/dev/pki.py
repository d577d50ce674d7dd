"""Certificates and keys for the lab control plane, kubeadm-style (one CA, one cert per identity)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = dt.timedelta(days=365)
CLUSTER_DNS_NAMES = (
    "localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)

# Client identities: file stem -> (common name, organization). RBAC sees CN as user, O as group.
CLIENTS = {
    "admin": ("portico-admin", "system:masters"),
    "controller-manager": ("system:kube-controller-manager", None),
    "kubelet": ("portico-lab-kubelet", "system:masters"),
    "apiserver-etcd-client": ("kube-apiserver-etcd-client", None),
    "kube-proxy": ("system:kube-proxy", None),  # bound to system:node-proxier by the default RBAC
}


@dataclass(frozen=True)
class PKI:
    directory: Path

    def cert(self, stem: str) -> Path:
        return self.directory / f"{stem}.crt"

    def key(self, stem: str) -> Path:
        return self.directory / f"{stem}.key"

    @property
    def ca(self) -> Path:
        return self.cert("ca")

    def client_tls(self, identity: str) -> ssl.SSLContext:
        """TLS context that trusts the lab CA and presents `identity`'s client certificate."""
        ctx = ssl.create_default_context(cafile=str(self.ca))
        ctx.load_cert_chain(str(self.cert(identity)), str(self.key(identity)))
        return ctx

    @property
    def service_account_key(self) -> Path:
        return self.directory / "sa.key"

    @property
    def service_account_pub(self) -> Path:
        return self.directory / "sa.pub"


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)


def _name(cn: str, org: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if org:
        attrs.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(attrs)


def _certificate(subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey, *,
                 ca: bool) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
        .public_key(public_key).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=False, content_commitment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=ca,
                                     crl_sign=ca, encipher_only=False, decipher_only=False), critical=True)
    )


def _issue(pki: PKI, stem: str, subject: x509.Name, *, server_names: tuple[str, ...] = (),
           server_ips: tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...] = (), client: bool) -> None:
    ca_key = serialization.load_pem_private_key(pki.key("ca").read_bytes(), None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    ca_cert = x509.load_pem_x509_certificate(pki.ca.read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH] if client else [ExtendedKeyUsageOID.SERVER_AUTH]
    builder = _certificate(subject, ca_cert.subject, key.public_key(), ca=False).add_extension(
        x509.ExtendedKeyUsage(usages), critical=False)
    if server_names or server_ips:
        sans: list[x509.GeneralName] = [x509.DNSName(n) for n in server_names]
        sans += [x509.IPAddress(ip) for ip in server_ips]
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    pki.cert(stem).write_bytes(builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
    _write_key(pki.key(stem), key)


def create_pki(directory: Path, api_ips: tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...]) -> PKI:
    """Create the CA, serving and client certificates and the service-account key pair."""
    directory.mkdir(parents=True, exist_ok=True)
    pki = PKI(directory)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    _write_key(pki.key("ca"), ca_key)
    subject = _name("portico-lab-ca")
    ca_cert = _certificate(subject, subject, ca_key.public_key(), ca=True).sign(ca_key, hashes.SHA256())
    pki.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))

    _issue(pki, "apiserver", _name("kube-apiserver"), server_names=CLUSTER_DNS_NAMES,
           server_ips=(ipaddress.IPv4Address("127.0.0.1"), *api_ips), client=False)
    _issue(pki, "etcd-server", _name("etcd"), server_names=("localhost",),
           server_ips=(ipaddress.IPv4Address("127.0.0.1"),), client=False)
    for stem, (cn, org) in CLIENTS.items():
        _issue(pki, stem, _name(cn, org), client=True)

    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _write_key(pki.service_account_key, sa_key)
    pki.service_account_pub.write_bytes(sa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return pki


def write_kubeconfig(path: Path, *, server: str, pki: PKI, identity: str) -> Path:
    """A kubeconfig for `identity` (a key of CLIENTS) that kubectl and lightkube both read."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "portico-lab", "cluster": {"server": server,
                                                          "certificate-authority": str(pki.ca)}}],
        "users": [{"name": identity, "user": {"client-certificate": str(pki.cert(identity)),
                                               "client-key": str(pki.key(identity))}}],
        "contexts": [{"name": "portico-lab", "context": {"cluster": "portico-lab", "user": identity}}],
        "current-context": "portico-lab",
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)
    return path
