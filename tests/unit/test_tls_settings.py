"""cglib.tls: the CG_TLS_* settings a service starts with, checked before anything listens."""

from __future__ import annotations

from pathlib import Path

import pytest

from cg_devstack.certs import make_certs, tls_env
from cglib.tls import TlsConfigError, from_env


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Path:
    return make_certs(tmp_path_factory.mktemp("tls") / "certs")


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory) -> Path:
    return make_certs(tmp_path_factory.mktemp("other") / "certs")


def test_none_set_is_plaintext() -> None:
    assert from_env("ledger", {}) is None
    assert from_env("ledger", {"CG_TLS_CA_FILE": " "}) is None


def test_all_three_give_the_service_its_identity(certs: Path) -> None:
    tls = from_env("ledger", tls_env(certs, "ledger"))
    assert tls is not None and tls.identity == "ledger"
    assert b"BEGIN CERTIFICATE" in tls.ca_pem and b"PRIVATE KEY" in tls.key_pem
    tls.server_credentials(), tls.channel_credentials()  # grpc accepts the material


@pytest.mark.parametrize("given", [["CG_TLS_CA_FILE"], ["CG_TLS_CERT_FILE", "CG_TLS_KEY_FILE"], ["CG_TLS_KEY_FILE"]])
def test_only_some_set_is_refused_naming_what_is_missing(certs: Path, given: list[str]) -> None:
    env = {name: value for name, value in tls_env(certs, "keys").items() if name in given}
    with pytest.raises(TlsConfigError) as refused:
        from_env("keys", env)
    for name in {"CG_TLS_CA_FILE", "CG_TLS_CERT_FILE", "CG_TLS_KEY_FILE"} - set(given):
        assert name in str(refused.value)


def test_a_file_that_cannot_be_read_is_named(certs: Path, tmp_path: Path) -> None:
    env = tls_env(certs, "keys") | {"CG_TLS_KEY_FILE": str(tmp_path / "missing.key")}
    with pytest.raises(TlsConfigError, match=r"CG_TLS_KEY_FILE=.*missing\.key: cannot be read"):
        from_env("keys", env)


def test_not_pem_is_refused(certs: Path, tmp_path: Path) -> None:
    junk = tmp_path / "junk.crt"
    junk.write_text("not a certificate")
    with pytest.raises(TlsConfigError, match="CG_TLS_CERT_FILE=.*not a PEM certificate"):
        from_env("keys", tls_env(certs, "keys") | {"CG_TLS_CERT_FILE": str(junk)})


def test_a_key_of_another_certificate_is_refused(certs: Path) -> None:
    env = tls_env(certs, "keys") | {"CG_TLS_KEY_FILE": str(certs / "ledger.key")}
    with pytest.raises(TlsConfigError, match="is not the key of"):
        from_env("keys", env)


def test_a_certificate_of_another_ca_is_refused(certs: Path, other_ca: Path) -> None:
    env = tls_env(other_ca, "keys") | {"CG_TLS_CA_FILE": str(certs / "ca.crt")}
    with pytest.raises(TlsConfigError, match="is not signed by"):
        from_env("keys", env)


def test_another_services_certificate_is_refused(certs: Path) -> None:
    with pytest.raises(TlsConfigError, match="the certificate of 'proxy', this is 'ledger'"):
        from_env("ledger", tls_env(certs, "proxy"))
    assert from_env(None, tls_env(certs, "proxy")) is not None  # a probe takes any service's
