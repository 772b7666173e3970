"""A development CA and one certificate per service for the services' mutual TLS.

    python deploy/certs/devcerts.py [--out var/certs] [--dns NAME ...]   # what `make certs` runs

Writes into ``--out`` (created 0700):

- ``ca.crt``, ``ca.key``: the CA (EC P-256, 10 years);
- ``<service>.crt``, ``<service>.key`` for proxy, keys, ledger, worker and bff: Subject CN
  ``<service>`` (the identity the ledger's, keys' and bff's authorization tables name),
  SAN DNS ``<service>`` and ``localhost`` (and every ``--dns`` name, e.g. a Kubernetes
  service's FQDN), IP ``127.0.0.1``; usable as server and as client certificate (1 year).

Idempotent: a file that is there and still good (signed by this CA, the right names,
more than 30 days to go) is kept; anything missing, foreign or near its end is made again
(a new CA makes every service certificate again). Keys are written readable by their
owner only. Needs only the ``cryptography`` package. For development and trying out
compose or Kubernetes: a production CA belongs to your PKI (cert-manager, Vault, ...);
the services only need the three PEM files per process (``CG_TLS_CA_FILE``,
``CG_TLS_CERT_FILE``, ``CG_TLS_KEY_FILE``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import os
import sys
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

SERVICES = ("proxy", "keys", "ledger", "worker", "bff")
CA_DAYS = 3650
LEAF_DAYS = 365
RENEW_BEFORE = dt.timedelta(days=30)
CA_NAME = "Creditgate dev CA"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _write(path: Path, data: bytes, private: bool) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _load(cert_path: Path, key_path: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None:
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError):
        return None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != cert.public_key():
        return None
    return cert, key


def _fresh(cert: x509.Certificate) -> bool:
    return cert.not_valid_after_utc - _now() > RENEW_BEFORE


def _ca(out: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey, bool]:
    """The CA in ``out`` if it is there and good, else a new one; the flag says it is new."""
    loaded = _load(out / "ca.crt", out / "ca.key")
    if loaded is not None and _fresh(loaded[0]):
        return loaded[0], loaded[1], False
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CA_NAME)])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write(out / "ca.key", _key_pem(key), private=True)
    _write(out / "ca.crt", cert.public_bytes(serialization.Encoding.PEM), private=False)
    return cert, key, True


def _sans(service: str, extra_dns: list[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = [x509.DNSName(n) for n in dict.fromkeys([service, "localhost", *extra_dns])]
    return [*names, x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]


def _leaf_ok(cert: x509.Certificate, ca: x509.Certificate, service: str, extra_dns: list[str]) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    return bool(cn) and cn[0].value == service and set(san) == set(_sans(service, extra_dns)) and _fresh(cert)


def _leaf(
    out: Path, service: str, ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, extra_dns: list[str]
) -> bool:
    """The service's certificate and key; True when they were (re)made."""
    loaded = _load(out / f"{service}.crt", out / f"{service}.key")
    if loaded is not None and _leaf_ok(loaded[0], ca, service, extra_dns):
        return False
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, service)]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=LEAF_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
        .add_extension(x509.SubjectAlternativeName(_sans(service, extra_dns)), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write(out / f"{service}.key", _key_pem(key), private=True)
    _write(out / f"{service}.crt", cert.public_bytes(serialization.Encoding.PEM), private=False)
    return True


def generate(out: Path, extra_dns: list[str] | None = None) -> list[str]:
    """Makes whatever ``out`` lacks; returns the names of the files (re)made (empty: all kept)."""
    out.mkdir(parents=True, exist_ok=True, mode=0o700)
    ca, ca_key, new_ca = _ca(out)
    made = ["ca.crt", "ca.key"] if new_ca else []
    for service in SERVICES:
        if _leaf(out, service, ca, ca_key, list(extra_dns or [])):
            made += [f"{service}.crt", f"{service}.key"]
    return made


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=Path("var/certs"), help="directory (default: var/certs)")
    parser.add_argument(
        "--dns", action="append", default=[], help="another DNS name in every service certificate (repeatable)"
    )
    args = parser.parse_args(argv)
    made = generate(args.out, args.dns)
    print(f"{args.out}: " + (f"made {', '.join(made)}" if made else "every certificate kept (still good)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
