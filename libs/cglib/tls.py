"""Mutual TLS between the services: one configuration read from the environment, and the
gRPC credentials built from it (``grpc_server`` and ``grpc_client`` use them).

Every service process reads the same three variables, PEM file paths:

- ``CG_TLS_CA_FILE``: the CA that signs every service's certificate;
- ``CG_TLS_CERT_FILE``, ``CG_TLS_KEY_FILE``: this process's certificate and key.

All three set: its gRPC servers ask every caller for a certificate signed by that CA (a
caller without one never completes the handshake) and its gRPC channels present this
certificate and verify the server's. None set: plaintext, as ``make run`` and the tests
run. Some set, a file that cannot be read, a key that is not the certificate's, a
certificate not signed by the CA or not this service's (its Subject CN is the service's
name, one of ``IDENTITIES``): the service refuses to start and says which.
``deploy/certs/devcerts.py`` (``make certs``) makes a development CA and certificates.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc

ENV_CA_FILE = "CG_TLS_CA_FILE"
ENV_CERT_FILE = "CG_TLS_CERT_FILE"
ENV_KEY_FILE = "CG_TLS_KEY_FILE"
ENV_NAMES = (ENV_CA_FILE, ENV_CERT_FILE, ENV_KEY_FILE)

# The services' identities: the Subject CN of each one's certificate.
PROXY, KEYS, LEDGER, WORKER, BFF = "proxy", "keys", "ledger", "worker", "bff"
IDENTITIES = frozenset({PROXY, KEYS, LEDGER, WORKER, BFF})


class TlsConfigError(ValueError):
    """The TLS settings cannot be used; the message names the variable and what to do."""


@dataclass(frozen=True)
class Tls:
    """One process's TLS material, read and checked once (PEM bytes)."""

    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes
    identity: str

    def server_credentials(self) -> grpc.ServerCredentials:
        """A server that requires and verifies a client certificate signed by the CA."""
        return grpc.ssl_server_credentials(
            [(self.key_pem, self.cert_pem)], root_certificates=self.ca_pem, require_client_auth=True
        )

    def channel_credentials(self) -> grpc.ChannelCredentials:
        """A channel that presents this certificate and verifies the server's against the CA
        (the target's host must be one of the server certificate's names)."""
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca_pem, private_key=self.key_pem, certificate_chain=self.cert_pem
        )


def _read(var: str, path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise TlsConfigError(f"{var}={path}: cannot be read ({e.strerror or e})") from None


def load(ca_file: str, cert_file: str, key_file: str, expect: str | None = None) -> Tls:
    """Reads and checks the three files; ``expect`` is the identity the certificate must carry."""
    # imported here: a plaintext process (make run, the tests' stacks) never pays for it
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import serialization
    from cryptography.x509.oid import NameOID

    ca_pem, cert_pem, key_pem = (
        _read(ENV_CA_FILE, ca_file),
        _read(ENV_CERT_FILE, cert_file),
        _read(ENV_KEY_FILE, key_file),
    )
    try:
        ca = x509.load_pem_x509_certificate(ca_pem)
    except ValueError:
        raise TlsConfigError(f"{ENV_CA_FILE}={ca_file}: not a PEM certificate") from None
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError:
        raise TlsConfigError(f"{ENV_CERT_FILE}={cert_file}: not a PEM certificate") from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        raise TlsConfigError(f"{ENV_KEY_FILE}={key_file}: not an unencrypted PEM private key") from None
    if key.public_key() != cert.public_key():
        raise TlsConfigError(f"{ENV_KEY_FILE}={key_file} is not the key of {ENV_CERT_FILE}={cert_file}")
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        raise TlsConfigError(f"{ENV_CERT_FILE}={cert_file} is not signed by {ENV_CA_FILE}={ca_file}") from None
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    identity = str(names[0].value) if names else ""
    if identity not in IDENTITIES:
        raise TlsConfigError(
            f"{ENV_CERT_FILE}={cert_file}: Subject CN {identity!r} is not a service (one of {', '.join(sorted(IDENTITIES))})"
        )
    if expect is not None and identity != expect:
        raise TlsConfigError(
            f"{ENV_CERT_FILE}={cert_file} is the certificate of {identity!r}, this is {expect!r}: "
            f"give it {expect}'s certificate and key"
        )
    return Tls(ca_pem, cert_pem, key_pem, identity)


def from_env(identity: str | None, environ: Mapping[str, str] | None = None) -> Tls | None:
    """This service's TLS from ``CG_TLS_*``: None when none is set (plaintext). ``identity``:
    the service the certificate must be of (None: any service's, e.g. a health probe's)."""
    env = os.environ if environ is None else environ
    values = {name: env.get(name, "").strip() for name in ENV_NAMES}
    given = [name for name, value in values.items() if value]
    if not given:
        return None
    if len(given) < len(ENV_NAMES):
        missing = [name for name in ENV_NAMES if name not in given]
        raise TlsConfigError(
            f"{', '.join(given)} set but {', '.join(missing)} not: set all three for mutual TLS between "
            "the services (make certs makes a development set), or none for plaintext"
        )
    return load(values[ENV_CA_FILE], values[ENV_CERT_FILE], values[ENV_KEY_FILE], expect=identity)


def from_env_or_exit(identity: str) -> Tls | None:
    """``from_env`` for a service's entry point: a bad setting stops it with one clear line."""
    try:
        return from_env(identity)
    except TlsConfigError as e:
        print(f"cg_{identity}: invalid TLS settings: {e}", file=sys.stderr)
        raise SystemExit(2) from None
