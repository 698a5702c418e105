"""``python -m bottle.runtime.egress``: prepare the CA and directories, then run mitmdump.

1. mitmproxy's confdir (``CA_PRIVATE``) gets its CA on first start; the key never leaves it.
2. The public certificate is copied atomically to ``CA_PUBLIC/ca.pem``, the directory that is
   mounted read-only into the agent (the agent trusts only this CA).
3. The log and status directories are created.
4. mitmdump runs in this process, the addons registered directly (:mod:`.master`). It
   trusts the host's CA bundle upstream when the image carries one (``HOST_CA``).

Paths can be overridden by environment variables (for tests and debugging):
``BOTTLE_EGRESS_CONFDIR``, ``BOTTLE_EGRESS_CA_PUBLIC`` (a directory), ``BOTTLE_EGRESS_HOST_CA``,
plus the addon's ``BOTTLE_EGRESS_ROUTES`` / ``_STATUS`` / ``_LOG``.
"""

from __future__ import annotations

import gc
import os
import sys
import threading
from collections.abc import Callable, Mapping
from pathlib import Path

from bottle import layout
from bottle.files import atomic_write
from bottle.runtime import egress as paths
from bottle.runtime.egress import lazy_addons

CONFDIR_ENV = "BOTTLE_EGRESS_CONFDIR"
CA_PUBLIC_ENV = "BOTTLE_EGRESS_CA_PUBLIC"
HOST_CA_ENV = "BOTTLE_EGRESS_HOST_CA"

#: mitmproxy's file names inside its confdir.
CA_BASENAME = "mitmproxy"
#: Only read by mitmproxy when it would make the CA itself (never: :func:`create_ca` did).
CA_KEY_SIZE = 2048


def prepare_ca(confdir: Path, public_dir: Path) -> Path:
    """Create the CA in ``confdir`` if missing (:func:`create_ca`); publish its certificate.
    Returns the path of the published certificate. A CA made before (an RSA one, by an
    older egress) is kept: the agent trusts that one."""
    from mitmproxy.certs import CertStore

    confdir.mkdir(parents=True, exist_ok=True)
    os.chmod(confdir, 0o700)
    if not (confdir / f"{CA_BASENAME}-ca.pem").exists():
        create_ca(confdir)
    CertStore.from_store(confdir, CA_BASENAME, CA_KEY_SIZE)
    cert = (confdir / f"{CA_BASENAME}-ca-cert.pem").read_bytes()
    public_dir.mkdir(parents=True, exist_ok=True)
    target = public_dir / layout.CA_CERT
    atomic_write(target, cert)
    return target


def create_ca(confdir: Path) -> None:
    """mitmproxy's CA files in ``confdir``, as its ``CertStore.create_store`` writes them,
    with an ECDSA P-256 key where mitmproxy's is RSA-2048.

    mitmproxy signs every certificate it shows the agent with the CA's key and uses that
    key as the certificate's own, so each new TLS connection from the agent costs egress
    one signature with it: with RSA-2048 that was 1.0-1.1 ms of egress's side of the
    handshake, with P-256 0.4 ms (measured with mitmproxy's own context, the machine
    loaded). Every TLS stack the agents use (OpenSSL in curl, git, Python and Node;
    rustls; Go) takes ECDSA P-256 with SHA-256, the curve of most public sites' chains.
    The certificate carries mitmproxy's extensions; the private files are written with
    mitmproxy's own umask guard.
    """
    # Loaded already (:func:`_while_master_imports`): no import lock taken in the thread.
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import pkcs12
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    from mitmproxy import certs

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, CA_BASENAME),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, CA_BASENAME),
        ]
    )
    now = datetime.datetime.now()
    usage = dict.fromkeys(
        (
            "digital_signature", "content_commitment", "key_encipherment",
            "data_encipherment", "key_agreement", "encipher_only", "decipher_only",
        ),
        False,
    )  # fmt: skip
    ca = (
        x509.CertificateBuilder()
        .serial_number(x509.random_serial_number())
        .subject_name(name)
        .issuer_name(name)
        .not_valid_before(now + certs.CERT_VALIDITY_OFFSET)
        .not_valid_after(now + certs.CERT_VALIDITY_OFFSET + certs.CA_EXPIRY)
        .public_key(key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.KeyUsage(key_cert_sign=True, crl_sign=True, **usage), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    pem = ca.public_bytes(serialization.Encoding.PEM)
    plain = serialization.NoEncryption()
    with certs.CertStore.umask_secret():
        secret = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, plain
        )
        (confdir / f"{CA_BASENAME}-ca.pem").write_bytes(secret + pem)
        both = pkcs12.serialize_key_and_certificates(CA_BASENAME.encode(), key, ca, None, plain)
        (confdir / f"{CA_BASENAME}-ca.p12").write_bytes(both)
    # The public forms mitmproxy's onboarding page serves, and the DH parameters it reads.
    (confdir / f"{CA_BASENAME}-ca-cert.pem").write_bytes(pem)
    (confdir / f"{CA_BASENAME}-ca-cert.cer").write_bytes(pem)
    public = pkcs12.serialize_key_and_certificates(CA_BASENAME.encode(), None, ca, None, plain)
    (confdir / f"{CA_BASENAME}-ca-cert.p12").write_bytes(public)
    (confdir / f"{CA_BASENAME}-dhparam.pem").write_bytes(certs.DEFAULT_DHPARAM)


def mitmdump_argv(confdir: Path, host_ca: Path | None) -> list[str]:
    """The mitmdump command line. Option names exist in mitmproxy 11 and 12. The addons
    are registered by :mod:`.master`, not passed as a ``-s`` script (watched every second)."""
    argv = [
        "mitmdump",
        "--set", "listen_host=0.0.0.0",
        "--set", f"listen_port={layout.EGRESS_PORT}",
        "--set", f"confdir={confdir}",
        # Connect upstream only when a request was allowed, never at CONNECT time.
        "--set", "connection_strategy=lazy",
        # The agent reaches us from a private bridge address; nothing to block by origin.
        "--set", "block_global=false",
        # Non-HTTP bytes in a CONNECT tunnel (ssh, ...) must not become a raw TCP way out.
        "--set", "rawtcp=false",
        # One JSON line per request goes to the decision log (no flow printer is loaded:
        # master.chain); keep the console to events: "alert" hides mitmproxy's
        # per-connection info lines, shows reloads and problems.
        "--set", "termlog_verbosity=alert",
        # No stream_large_bodies: it would stream a request body past 1 MiB before DLP saw
        # it. The scan addon streams responses itself (scrubbing them on the way).
    ]  # fmt: skip
    if host_ca is not None:
        argv += ["--set", f"ssl_verify_upstream_trusted_ca={host_ca}"]
    return argv


def main(environ: Mapping[str, str] | None = None) -> None:
    env = os.environ if environ is None else environ
    confdir = Path(env.get(CONFDIR_ENV) or layout.CA_PRIVATE)
    public_dir = Path(env.get(CA_PUBLIC_ENV) or layout.CA_PUBLIC)
    host_ca = Path(env.get(HOST_CA_ENV) or layout.HOST_CA)

    for path in (paths.log_path(env), paths.status_path(env)):
        path.parent.mkdir(parents=True, exist_ok=True)
    # The host waits for the status file (bottle.readiness): one left by an earlier run must
    # not pass before this mitmdump listens (the addon writes it again from running()).
    paths.status_path(env).unlink(missing_ok=True)

    # No cyclic collection while mitmproxy and the addons import (tens of thousands of
    # objects, none of them garbage): 0.04-0.12 s of the start. Back on before serving.
    gc.disable()
    # Before mitmproxy's master is imported: the addons egress leaves out stay unloaded.
    lazy_addons.install()
    cert = _while_master_imports(lambda: prepare_ca(confdir, public_dir))
    print(f"egress: CA certificate published at {cert}", file=sys.stderr, flush=True)
    argv = mitmdump_argv(confdir, host_ca if host_ca.is_file() else None)
    run_mitmdump(argv)


def _while_master_imports(make: Callable[[], Path]) -> Path:
    """``make()`` in a thread while mitmproxy's master is imported here; its result.

    A new instance's CA key takes 0.1-0.15 s to generate, and OpenSSL lets go of the GIL
    meanwhile; the master's imports take 0.5 s: side by side, egress serves that much
    sooner. The thread imports nothing (``mitmproxy.certs`` is loaded first), so the two
    never wait on each other's module locks. An error of ``make`` is raised here, before
    mitmdump could run.
    """
    # Before the thread, so it imports nothing itself: ECDSA signing loads the backend.
    import cryptography.hazmat.backends.openssl  # noqa: F401
    import mitmproxy.certs  # noqa: F401

    made: list[Path] = []
    failed: list[BaseException] = []

    def run() -> None:
        try:
            made.append(make())
        except BaseException as exc:  # raised again below, in the main thread
            failed.append(exc)

    worker = threading.Thread(target=run, name="egress-ca")
    worker.start()
    try:
        from bottle.runtime.egress import master  # noqa: F401  (the import is the work)
    finally:
        worker.join()
    if failed:
        raise failed[0]
    return made[0]


def run_mitmdump(argv: list[str]) -> None:
    """mitmdump in this process; its exit code, without Python's teardown.

    On SIGTERM mitmdump leaves its loop and runs every addon's ``done`` (the decision log
    is closed) within 0.1 s, then the interpreter's teardown of mitmproxy's objects took
    3-10 s under load: ``docker stop`` waited it out and killed egress anyway, and every
    ``bottle stop`` with it. Nothing is left to write by then.
    """
    import logging

    from bottle.runtime.egress import addon, master

    del addon  # loaded before the freeze below; the master registers its addons

    # What start-up made lives as long as the proxy: out of every later collection's way.
    gc.freeze()
    gc.enable()
    code = 0
    try:
        master.run(argv[1:])  # the addons registered directly, no watched -s script
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
