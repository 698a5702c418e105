"""The fake model API as a test container, reached by every bottle a test home starts.

``FakeAPI.running(home, ...)`` starts ``tests/fakeapi/server.py`` (TLS with a certificate of
a test CA, the package bind-mounted read-only, the script and the request log in a host
directory) on a network of its own, where the real API names are its aliases. A watcher on
Docker's container events connects each egress container of ``home`` to that network as
compose creates it, before any agent runs, so ``bottle run`` from the CLI takes exactly the
production path (and its teardown finds nothing foreign on the bottle's networks). The test
trusts the CA through ``BOTTLE_EXTRA_CA_CERTS`` (``FakeAPI.ca_file``).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.conftest import wait_for, write
from tests.integration.test_wire import _pem_pair

PACKAGE = Path(__file__).resolve().parent.parent / "fakeapi"
ANTHROPIC = "api.anthropic.com"


@dataclass
class FakeAPI:
    container: str
    data: Path
    ca_file: Path
    aliases: tuple[str, ...]
    #: The egress containers put on the fake's network so far.
    joined: list[str] = field(default_factory=list)

    @property
    def script_file(self) -> Path:
        return self.data / "script.json"

    @property
    def log_file(self) -> Path:
        return self.data / "requests.jsonl"

    def set_script(self, script: dict[str, Any]) -> None:
        """Takes effect on the next request (the server re-reads it each time)."""
        tmp = self.script_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(script))
        tmp.chmod(0o644)
        tmp.replace(self.script_file)

    def requests(self) -> list[dict[str, Any]]:
        if not self.log_file.exists():
            return []
        return [json.loads(line) for line in self.log_file.read_text().splitlines() if line]

    def messages(self) -> list[dict[str, Any]]:
        """The Messages API requests, oldest first."""
        return [r for r in self.requests() if r["path"].split("?")[0] == "/v1/messages"]

    def join(self, network: str, container: str) -> None:
        """Puts ``container`` (a bottle's egress) on the fake's ``network``, where the
        fake's aliases resolve."""
        subprocess.run(
            ["docker", "network", "connect", network, container],
            check=True,
            capture_output=True,
        )
        self.joined.append(container)

    @classmethod
    @contextlib.contextmanager
    def running(
        cls,
        home: Path,
        tmp: Path,
        *,
        image: str,
        script: dict[str, Any],
        aliases: Sequence[str] = (ANTHROPIC,),
    ) -> Iterator[FakeAPI]:
        from bottle.settings import home_id

        ca_pem, ca_cert, ca_key = _test_ca()
        cert, key, _, _ = _pem_pair(aliases[0], list(aliases), (ca_cert, ca_key))
        data = tmp / "fakeapi"
        data.mkdir(parents=True, exist_ok=True)
        data.chmod(0o777)  # the server runs as the image's user and appends the log
        name = f"bottle-it-fakeapi-{uuid.uuid4().hex[:8]}"
        fake = cls(name, data, write(tmp / "fakeapi-ca.pem", ca_pem), tuple(aliases))
        fake.set_script(script)
        own_net = f"{name}-net"
        subprocess.run(
            ["docker", "network", "create", "--internal", own_net], check=True, capture_output=True
        )
        events, stop = _watch_egress(fake, home_id(home / "state"), own_net)
        try:
            subprocess.run(
                [
                    *("docker", "run", "-d", "--name", name, "--network", own_net),
                    # Its own network too: a plain `docker run` there reaches it by name.
                    *(f"--network-alias={alias}" for alias in aliases),
                    *("--label", "bottle.test=fakeapi", "-e", "FAKEAPI_CERT", "-e", "FAKEAPI_KEY"),
                    *("-v", f"{PACKAGE}:/srv/tests/fakeapi:ro", "-v", f"{data}:/data"),
                    *("-w", "/srv", "--entrypoint", "python", image),
                    *("-m", "tests.fakeapi.server", "/data/script.json", "/data/requests.jsonl"),
                ],
                check=True,
                capture_output=True,
                env={**os.environ, "FAKEAPI_CERT": cert, "FAKEAPI_KEY": key},
            )
            probe = "import socket; socket.create_connection(('127.0.0.1', 443), timeout=2).close()"
            wait_for(
                lambda: (
                    subprocess.run(
                        ["docker", "exec", name, "python", "-c", probe],
                        capture_output=True,
                        check=False,
                    ).returncode
                    == 0
                    or None
                ),
                60,
                "the fake API to listen",
                poll=0.2,
            )
            yield fake
        finally:
            stop.set()
            events.kill()
            events.wait()
            logs = subprocess.run(
                ["docker", "logs", name], capture_output=True, text=True, check=False
            )
            (data / "server.log").write_text(logs.stdout + logs.stderr)
            subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)
            subprocess.run(["docker", "network", "rm", own_net], capture_output=True, check=False)


def _test_ca() -> tuple[str, Any, Any]:
    """One test CA for every session on this machine: egress trusts it from the sidecar
    image's CA bundle, so a new CA each session would rebuild that image (its pip step).
    The agent images leave the CA bundle out of their tags (bottle.images.agent_image)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    cache = Path(tempfile.gettempdir()) / "bottle-test-fakeapi-ca"
    cert_file, key_file = cache / "ca.pem", cache / "ca.key"
    if not (cert_file.exists() and key_file.exists()):
        ca_pem, key_pem, _, _ = _pem_pair("bottle fakeapi test CA", [], None)
        cache.mkdir(mode=0o700, exist_ok=True)
        tmp = cache / f"ca.key.{os.getpid()}"
        tmp.write_text(key_pem)
        tmp.replace(key_file)
        tmp = cache / f"ca.pem.{os.getpid()}"
        tmp.write_text(ca_pem)
        tmp.replace(cert_file)
    ca_pem = cert_file.read_text()
    cert = x509.load_pem_x509_certificate(ca_pem.encode())
    key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    if cert.not_valid_after_utc.timestamp() < time.time() + 3600:
        cert_file.unlink()
        return _test_ca()
    return ca_pem, cert, key


def _watch_egress(
    fake: FakeAPI, home: str, network: str
) -> tuple[subprocess.Popen[str], threading.Event]:
    """Connects each egress container of the home ``home`` to the fake's own ``network`` as
    compose creates it (before it starts, so before any agent runs). The fake's aliases are
    names on that network; the bottle's own networks never hold a foreign endpoint, so
    taking a bottle down (an interrupted start too) removes them as in production."""
    events = subprocess.Popen(
        [
            *("docker", "events", "--filter", "type=container", "--filter", "event=create"),
            *("--filter", "label=bottle.role=egress", "--filter", f"label=bottle.home={home}"),
            *("--format", "{{.Actor.ID}}"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    stop = threading.Event()

    def watch() -> None:
        assert events.stdout is not None
        for line in events.stdout:
            if stop.is_set():
                return
            container = line.strip()
            if container:
                fake.join(network, container)

    threading.Thread(target=watch, daemon=True).start()
    return events, stop
