"""deploy/certs/devcerts.py (make certs): a CA and one certificate per service, kept when still good."""

from __future__ import annotations

import ipaddress
import stat
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from cg_devstack.certs import make_certs

SERVICES = ("proxy", "keys", "ledger", "worker", "bff")


def files(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


def test_one_certificate_per_service_signed_by_the_ca(tmp_path: Path) -> None:
    out = make_certs(tmp_path / "certs")
    assert set(files(out)) == {"ca.crt", "ca.key"} | {f"{s}.{ext}" for s in SERVICES for ext in ("crt", "key")}
    ca = x509.load_pem_x509_certificate((out / "ca.crt").read_bytes())
    for service in SERVICES:
        cert = x509.load_pem_x509_certificate((out / f"{service}.crt").read_bytes())
        cert.verify_directly_issued_by(ca)
        assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == service
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert set(san.get_values_for_type(x509.DNSName)) == {service, "localhost"}
        assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
        usages = set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
        assert usages == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
        assert stat.S_IMODE((out / f"{service}.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((out / "ca.key").stat().st_mode) == 0o600


def test_a_second_run_keeps_what_is_good_and_remakes_what_is_missing(tmp_path: Path) -> None:
    out = make_certs(tmp_path / "certs")
    first = files(out)
    assert files(make_certs(out)) == first
    (out / "bff.key").unlink()
    again = files(make_certs(out))
    assert again["bff.key"] != first["bff.key"] and again["bff.crt"] != first["bff.crt"]
    assert {k: v for k, v in again.items() if not k.startswith("bff.")} == {
        k: v for k, v in first.items() if not k.startswith("bff.")
    }
    # a new CA (the old one lost) remakes every certificate under it
    (out / "ca.key").unlink()
    renewed = files(make_certs(out))
    assert all(renewed[name] != again[name] for name in renewed)
