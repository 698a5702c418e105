"""egress's start: the CA is made while mitmproxy's master is imported, and fails closed."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest

from bottle.runtime.egress import __main__ as egress_main


def test_the_ca_is_made_in_its_own_thread_and_published_before_mitmdump(tmp_path: Path) -> None:
    threads: list[str] = []

    def make() -> Path:
        threads.append(threading.current_thread().name)
        return egress_main.prepare_ca(tmp_path / "conf", tmp_path / "ca")

    cert = egress_main._while_master_imports(make)
    assert threads == ["egress-ca"]
    assert cert == tmp_path / "ca" / "ca.pem" and b"CERTIFICATE" in cert.read_bytes()
    assert "bottle.runtime.egress.master" in sys.modules  # imported meanwhile


def test_a_ca_that_cannot_be_made_stops_egress_before_it_serves(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(OSError):
        egress_main._while_master_imports(
            lambda: egress_main.prepare_ca(blocker / "conf", tmp_path / "ca")
        )
    assert not (tmp_path / "ca").exists()


def test_main_publishes_the_ca_and_runs_mitmdump_after_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran: list[bool] = []
    monkeypatch.setattr(
        egress_main,
        "run_mitmdump",
        lambda argv: ran.append((tmp_path / "ca" / "ca.pem").is_file()),
    )
    status = tmp_path / "status" / "egress.json"
    status.parent.mkdir()
    status.write_text('{"ready": true}')  # an earlier run's
    egress_main.main(
        {
            egress_main.CONFDIR_ENV: str(tmp_path / "conf"),
            egress_main.CA_PUBLIC_ENV: str(tmp_path / "ca"),
            egress_main.HOST_CA_ENV: str(tmp_path / "none.pem"),
            "BOTTLE_EGRESS_STATUS": str(status),
            "BOTTLE_EGRESS_LOG": str(tmp_path / "logs" / "egress.jsonl"),
        }
    )
    assert ran == [True]  # the CA was out before mitmdump started
    assert not status.exists()  # and the stale status gone before either


def test_collection_is_off_while_egress_imports_and_on_when_it_serves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gc

    from bottle.runtime.egress import master

    frozen_before = gc.get_freeze_count()
    seen: list[bool] = []
    monkeypatch.setattr(master, "run", lambda _args: seen.append(gc.isenabled()))
    monkeypatch.setattr(egress_main.os, "_exit", lambda code: seen.append(code == 0))
    monkeypatch.setattr(
        egress_main, "_while_master_imports", lambda make: seen.append(gc.isenabled()) or make()
    )
    try:
        egress_main.main(
            {
                egress_main.CONFDIR_ENV: str(tmp_path / "conf"),
                egress_main.CA_PUBLIC_ENV: str(tmp_path / "ca"),
                egress_main.HOST_CA_ENV: str(tmp_path / "none.pem"),
                "BOTTLE_EGRESS_STATUS": str(tmp_path / "status" / "egress.json"),
                "BOTTLE_EGRESS_LOG": str(tmp_path / "logs" / "egress.jsonl"),
            }
        )
    finally:
        gc.enable()
        if not frozen_before:  # else the session's own freeze (tests/conftest.py) stays
            gc.unfreeze()
    assert seen == [False, True, True]  # off while importing; on while serving; clean exit


def test_a_new_ca_has_an_ecdsa_p256_key_mitmproxy_signs_its_certificates_with(
    tmp_path: Path,
) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec
    from mitmproxy import certs

    cert = egress_main.prepare_ca(tmp_path / "conf", tmp_path / "ca")
    ca = x509.load_pem_x509_certificate(cert.read_bytes())
    key = ca.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1"
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert ca.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    private = tmp_path / "conf" / "mitmproxy-ca.pem"
    assert private.stat().st_mode & 0o077 == 0
    for public in ("mitmproxy-ca-cert.cer", "mitmproxy-ca-cert.p12", "mitmproxy-dhparam.pem"):
        assert (tmp_path / "conf" / public).is_file()  # what mitmproxy's own store has
    store = certs.CertStore.from_store(tmp_path / "conf", "mitmproxy", 2048)
    leaf = store.get_cert("upstream.test", [x509.DNSName("upstream.test")]).cert
    leaf.to_cryptography().verify_directly_issued_by(ca)
    assert leaf.keyinfo == ("EC (secp256r1)", 256)


def test_a_ca_made_before_is_kept_whatever_its_key(tmp_path: Path) -> None:
    from mitmproxy import certs

    certs.CertStore.create_store(tmp_path / "conf", "mitmproxy", 2048)  # an older egress's
    before = (tmp_path / "conf" / "mitmproxy-ca-cert.pem").read_bytes()
    cert = egress_main.prepare_ca(tmp_path / "conf", tmp_path / "ca")
    assert cert.read_bytes() == before  # the agent trusts that one
