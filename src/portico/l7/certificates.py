"""Is a Secret's content a certificate and key HAProxy can serve (pure)?"""

from __future__ import annotations

import base64
from collections.abc import Mapping

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa


def certificate_problem(secret_type: str, data: Mapping[str, str]) -> str | None:
    """Why a Secret (its type and base64 `data`) is not a usable TLS certificate, or None when it is: a
    kubernetes.io/tls Secret whose tls.crt is a PEM chain and whose tls.key is the private key of its first
    certificate."""
    if secret_type != "kubernetes.io/tls":
        return f"type is {secret_type or 'Opaque'}, not kubernetes.io/tls"
    try:
        chain = x509.load_pem_x509_certificates(base64.b64decode(data.get("tls.crt", "")))
    except ValueError as e:
        return f"tls.crt is not a PEM certificate ({e})"
    try:
        key = serialization.load_pem_private_key(base64.b64decode(data.get("tls.key", "")), password=None)
    except (ValueError, TypeError) as e:
        return f"tls.key is not an unencrypted PEM private key ({e})"
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey):
        return f"tls.key is a {type(key).__name__}, not an RSA, ECDSA or Ed25519 key"
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    if (key.public_key().public_bytes(serialization.Encoding.DER, public)
            != chain[0].public_key().public_bytes(serialization.Encoding.DER, public)):
        return "tls.key does not match the first certificate of tls.crt"
    return None
