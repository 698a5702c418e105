"""P4: what egress costs a request, side by side with plain mitmdump and with no proxy at all.

    uv run python -m benchmarks.egress [--rounds 3]

One bottle, one upstream container on its egress network (``upstream.test``: HTTP on 80,
HTTPS on 443 with a certificate from a CA made for this run, a small body, a 100 MB body and
a package index of 30 wheels). A client container (the sidecar image plus a venv with pip:
:data:`CLIENT_DOCKERFILE`) on both of the bottle's networks measures,
in interleaved rounds (the order of the three ways rotates every round, so machine noise hits
them alike):

- **direct**: straight to the upstream;
- **mitmdump**: through a plain ``mitmdump`` with no addon (same image, same mitmproxy, TLS
  interception on), the floor any mitmproxy-based egress pays;
- **egress**: through the bottle's egress sidecar (its routes, DLP, scrubbing, log);
- **relay** (the 100 MB download only): through ``socat``, a C relay that copies bytes and
  reads none of them (1 MiB at a time, as egress reads), on egress's path (a container on
  the bottle's internal network and its egress network): the floor of any userspace proxy
  on this machine.

Figures: added latency of a small request on a kept-alive connection, HTTP and HTTPS, egress
over mitmdump (the addon's own cost); the added time of a new HTTPS connection, egress over
direct; the 100 MB download's throughput, egress over direct; ``pip install`` of the 30
wheels from the index (60 requests on one tunnel), egress over direct, with plain mitmdump's
time beside it and both proxies' CPU per install (the part of the gap each one spends).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from benchmarks._home import bench_home, bench_work
from benchmarks._table import Figure, markdown

SMALL_REQUESTS = 200  # per way and round, on one kept-alive connection
NEW_CONNECTIONS = 20  # per way and round
PACKAGES = 30

SERVER = r"""
import base64, hashlib, http.server as h, io, os, ssl, threading, zipfile
BIG = b"x" * (100 * 1000 * 1000)
WHEELS = {}
for i in range(int(os.environ["PACKAGES"])):
    name = f"benchpkg{i:02d}"
    info = f"{name}-1.0.dist-info"
    files = {f"{name}/__init__.py": b"VALUE = %d\n" % i,
             f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n".encode(),
             f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: bench\n"
                              b"Root-Is-Purelib: true\nTag: py3-none-any\n"}
    def _sha(d):
        return base64.urlsafe_b64encode(hashlib.sha256(d).digest()).rstrip(b"=").decode()
    record = "".join(f"{p},sha256={_sha(d)},{len(d)}\n" for p, d in files.items())
    record += f"{name}-1.0.dist-info/RECORD,,\n"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for p, d in files.items():
            z.writestr(p, d)
        z.writestr(f"{name}-1.0.dist-info/RECORD", record)
    WHEELS[f"{name}-1.0-py3-none-any.whl"] = buf.getvalue()
class H(h.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go in two writes: no 40 ms ACK wait
    def log_message(self, *a): pass
    def do_GET(self):
        p = self.path
        ctype = "text/html"
        if p.startswith("/big"):
            body = BIG; ctype = "application/octet-stream"
        elif p.startswith("/simple/benchpkg"):
            name = p.split("/")[2]
            wheel = f"{name}-1.0-py3-none-any.whl"
            digest = hashlib.sha256(WHEELS[wheel]).hexdigest()
            link = f'<a href="/files/{wheel}#sha256={digest}">{wheel}</a>'
            body = f"<html><body>{link}</body></html>".encode()
        elif p.startswith("/files/"):
            body = WHEELS[p.split("/")[2]]; ctype = "application/octet-stream"
        else:
            body = b"ok"; ctype = "text/plain"
        self.send_response(200)
        self.send_header("content-type", ctype)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
def serve(port, tls):
    srv = h.ThreadingHTTPServer(("", port), H)
    if tls:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain("/bench/upstream.pem")
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
serve(80, False); serve(443, True)
threading.Event().wait()
"""

CLIENT = r"""
import http.client, json, os, ssl, statistics, subprocess, sys, time
order = sys.argv[1].split(",")
small, new, packages = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
PROXIES = {"direct": None, "mitmdump": ("plainmitm", 8080), "egress": ("egress", 8080)}
RELAY = ("relay", 8081)  # socat: a TCP relay to upstream.test:80, not an HTTP proxy
CTX = ssl.create_default_context(cafile="/bench/all-ca.pem")
TIMEOUT = 20
HOST = "upstream.test"
def conn(way, tls):
    if way == "relay":
        return http.client.HTTPConnection(*RELAY, timeout=TIMEOUT), "/"
    proxy = PROXIES[way]
    if proxy is None:
        return (http.client.HTTPSConnection(HOST, 443, context=CTX, timeout=TIMEOUT) if tls
                else http.client.HTTPConnection(HOST, 80, timeout=TIMEOUT)), "/"
    if tls:
        c = http.client.HTTPSConnection(*proxy, context=CTX, timeout=TIMEOUT)
        c.set_tunnel(HOST, 443)
        return c, "/"
    return http.client.HTTPConnection(*proxy, timeout=TIMEOUT), f"http://{HOST}/"
def get(c, prefix, path):
    c.request("GET", prefix + path, headers={"Host": HOST, "User-Agent": "bench"})
    r = c.getresponse(); n = 0
    while True:
        piece = r.read(1 << 20)
        if not piece:
            return n
        n += len(piece)
def kept_alive(way, tls):
    c, prefix = conn(way, tls)
    for _ in range(5):
        get(c, prefix, "small")
    times = []
    for _ in range(small):
        t = time.perf_counter(); get(c, prefix, "small"); times.append(time.perf_counter() - t)
    c.close()
    return statistics.median(times) * 1000
def new_https(way):
    times = []
    for _ in range(new):
        t = time.perf_counter(); c, prefix = conn(way, True); get(c, prefix, "small"); c.close()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000
def download(way):
    c, prefix = conn(way, False)
    t = time.perf_counter(); n = get(c, prefix, "big"); took = time.perf_counter() - t
    c.close()
    assert n == 100 * 1000 * 1000, n
    return n / took / 1e6
def pip(way):
    target = f"/tmp/pip-{way}-{time.monotonic_ns()}"
    argv = ["/opt/client/bin/python", "-m", "pip", "install", "--quiet", "--no-cache-dir",
            "--no-deps",
            "--disable-pip-version-check", "--target", target, "--cert", "/bench/all-ca.pem",
            "--index-url", f"https://{HOST}/simple/"]
    if PROXIES[way]:
        argv += ["--proxy", "http://%s:%d" % PROXIES[way]]
    argv += [f"benchpkg{i:02d}" for i in range(packages)]
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    t = time.perf_counter()
    subprocess.run(argv, check=True, env=env)
    took = time.perf_counter() - t
    got = [p for p in os.listdir(target) if p.startswith("benchpkg") and "." not in p]
    assert len(got) == packages
    return took
def measure(errors, way, name, fn, *args):
    try:
        return fn(*args)
    except Exception as exc:  # one figure failing must not hide the others
        errors.append(f"{way} {name}: {type(exc).__name__}: {exc}"[:300])
        return None
out, errors = {}, []
for way in order:
    if way == "relay":
        out[way] = {"download_mbps": measure(errors, way, "download", download, way)}
        continue
    out[way] = {"http_ms": measure(errors, way, "http", kept_alive, way, False),
                "https_ms": measure(errors, way, "https", kept_alive, way, True),
                "new_https_ms": measure(errors, way, "new https", new_https, way),
                "download_mbps": measure(errors, way, "download", download, way),
                "pip_s": measure(errors, way, "pip", pip, way)}
out["errors"] = errors
print(json.dumps(out))
"""

#: One way, one figure, nothing printed: the host reads the proxy container's CPU around it.
CPU_CLIENT = r"""
import http.client, os, ssl, subprocess, sys
way, what, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
PROXIES = {"mitmdump": ("plainmitm", 8080), "egress": ("egress", 8080), "relay": ("relay", 8081)}
proxy = PROXIES[way]
HOST = "upstream.test"
if what == "pip":
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    for n in range(count):
        subprocess.run(["/opt/client/bin/python", "-m", "pip", "install", "--quiet",
                        "--no-cache-dir", "--no-deps", "--disable-pip-version-check",
                        "--target", f"/tmp/cpu-pip-{way}-{os.getpid()}-{n}",
                        "--cert", "/bench/all-ca.pem", "--index-url", f"https://{HOST}/simple/",
                        "--proxy", "http://%s:%d" % proxy,
                        *(f"benchpkg{i:02d}" for i in range(int(sys.argv[4])))],
                       check=True, env=env)
    sys.exit(0)
if what == "https":
    c = http.client.HTTPSConnection(*proxy, timeout=20,
                                    context=ssl.create_default_context(cafile="/bench/all-ca.pem"))
    c.set_tunnel(HOST, 443); prefix = "/"
else:
    c = http.client.HTTPConnection(*proxy, timeout=20)
    prefix = "/" if way == "relay" else f"http://{HOST}/"
path = "big" if what == "download" else "small"
for _ in range(count):
    c.request("GET", prefix + path, headers={"Host": HOST, "User-Agent": "bench"})
    r = c.getresponse()
    while r.read(1 << 20):
        pass
"""
#: Requests per CPU reading (the download: 100 MB bodies; pip: whole installs).
CPU_COUNTS = {"http": 500, "https": 500, "download": 2, "pip": 1}

BOTTLE = """---
supervise: false
egress:
  routes:
    - host: upstream.test
      private: true   # a container on the bottle's egress network
---
"""


def _pem_pair(name: str, issuer: tuple[Any, Any] | None) -> tuple[bytes, bytes, Any, Any]:
    """(cert PEM, key PEM, cert, key): a CA when ``issuer`` is None, else a cert for ``name``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    signer_cert, signer_key = issuer if issuer is not None else (None, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(signer_cert.subject if signer_cert is not None else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer_key.public_key()), False
        )
    )
    if issuer is None:
        usage = dict.fromkeys(
            (
                "digital_signature", "content_commitment", "key_encipherment",
                "data_encipherment", "key_agreement", "encipher_only", "decipher_only",
            ),
            False,
        )  # fmt: skip
        builder = builder.add_extension(
            x509.BasicConstraints(ca=True, path_length=0), True
        ).add_extension(x509.KeyUsage(key_cert_sign=True, crl_sign=True, **usage), True)
    else:
        builder = builder.add_extension(
            x509.BasicConstraints(ca=False, path_length=None), True
        ).add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), False)
    cert = builder.sign(signer_key, hashes.SHA256())
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem, cert, key


def _docker(*argv: str) -> str:
    done = subprocess.run(["docker", *argv], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"docker {argv[0]} failed ({done.returncode}): {done.stderr[-3000:]}")
    return done.stdout.strip()


def _wait(container: str, probe: str) -> None:
    for _ in range(300):
        done = subprocess.run(
            ["docker", "exec", container, "python", "-c", probe], capture_output=True, check=False
        )
        if done.returncode == 0:
            return
        subprocess.run(["sleep", "0.2"], check=True)
    raise RuntimeError(f"{container} did not come up")


#: The client: the local base (the sidecar image has neither apt nor ensurepip) with
#: Debian's python3 and a venv whose pip comes from the interpreter's own ensurepip.
CLIENT_DOCKERFILE = """\
FROM {image}
RUN set -eu; apt-get update; \
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        python3 python3-venv curl ca-certificates; \
    apt-get clean; rm -rf /var/lib/apt/lists/*; \
    python3 -m venv /opt/client && /opt/client/bin/python -m pip --version
"""


#: The relay: the local base with Debian's socat.
RELAY_DOCKERFILE = """\
FROM {image}
RUN set -eu; apt-get update; \
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends socat; \
    apt-get clean; rm -rf /var/lib/apt/lists/*; socat -V >/dev/null
"""


def _relay_image() -> str:
    return _image_on_base("bottle-bench-relay", RELAY_DOCKERFILE)


def _client_image() -> str:
    return _image_on_base("bottle-bench-client", CLIENT_DOCKERFILE)


def _image_on_base(name: str, dockerfile: str) -> str:
    from bottle.engine.images import ensure_base
    from bottle.settings import Settings

    base = ensure_base(Settings.from_env(), lambda _line: None)
    tag = f"{name}:{base.rsplit(':', 1)[-1]}"
    inspect = ["docker", "image", "inspect", tag]
    if subprocess.run(inspect, capture_output=True, check=False).returncode:
        done = subprocess.run(
            ["docker", "build", "-q", "--label", "bottle.bench=egress", "-t", tag, "-"],
            input=dockerfile.format(image=base),
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"building {tag} failed: {done.stderr[-3000:]}")
    return tag


def _cpu_seconds(container: str) -> float | None:
    """The CPU time a container has used so far (its cgroup), or None where it is not
    readable: it counts what a proxy does, less bound to the load than wall time (shared
    cores and caches still slow it)."""
    for path, scale, key in (
        (f"/sys/fs/cgroup/cpuacct/docker/{container}/cpuacct.usage", 1e-9, None),
        (f"/sys/fs/cgroup/system.slice/docker-{container}.scope/cpu.stat", 1e-6, "usage_usec"),
        (f"/sys/fs/cgroup/docker/{container}/cpu.stat", 1e-6, "usage_usec"),
    ):
        try:
            text = Path(path).read_text()
        except OSError:
            continue
        if key is None:
            return int(text.strip()) * scale
        for line in text.splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value) * scale
    return None


@contextmanager
def _setup() -> Iterator[tuple[str, dict[str, str]]]:
    """A running bottle, its upstream, a plain mitmdump, the client container's name and
    the full ids of the two proxies' containers."""
    from bottle import Bottle

    home = bench_home("eb", BOTTLE)
    files = home / "bench-files"
    files.mkdir()
    ca_pem, _, ca_cert, ca_key = _pem_pair("bottle bench CA", None)
    cert, key, _, _ = _pem_pair("upstream.test", (ca_cert, ca_key))
    (files / "test-ca.pem").write_bytes(ca_pem)
    (files / "upstream.pem").write_bytes(cert + key)
    (files / "mitm").mkdir()
    os.environ["BOTTLE_HOME"] = str(home)
    os.environ["BOTTLE_EXTRA_CA_CERTS"] = str(files / "test-ca.pem")
    started: list[str] = []
    with Bottle("eb", cwd=bench_work(home)).start() as instance:
        meta = instance.metadata
        project, image = meta.compose_project, meta.images["sidecar"]
        mount = ["-v", f"{files}:/bench", "--label", "bottle.bench=egress"]
        try:
            net = f"{project}_egress"
            started.append(
                _docker(
                    *("run", "-d", *mount, "--network", net, "--network-alias", "upstream.test"),
                    *("-e", f"PACKAGES={PACKAGES}", image, "python", "-c", SERVER),
                )
            )
            started.append(
                _docker(
                    *("run", "-d", *mount, "--network", net, "--network-alias", "plainmitm"),
                    *(image, "mitmdump", "--set", "listen_host=0.0.0.0"),
                    *("--set", "listen_port=8080", "--set", "confdir=/bench/mitm"),
                    *("--set", "connection_strategy=lazy", "--set", "block_global=false"),
                    *("--set", "flow_detail=0", "--set", "termlog_verbosity=alert"),
                    *("--set", "ssl_verify_upstream_trusted_ca=/bench/test-ca.pem"),
                )
            )
            client = _docker(
                *("run", "-d", *mount, "--network", f"{project}_internal"),
                *(_client_image(), "sleep", "infinity"),
            )
            started.append(client)
            _docker("network", "connect", net, client)
            relay = _docker(
                *("run", "-d", "--label", "bottle.bench=egress"),
                *("--network", f"{project}_internal", "--network-alias", "relay"),
                # 1 MiB per read and write, egress's own read size (socat's default: 8 KiB).
                *(_relay_image(), "socat", "-b", str(1 << 20), "TCP-LISTEN:8081,fork,reuseaddr"),
                "TCP:upstream.test:80",
            )
            started.append(relay)
            _docker("network", "connect", net, relay)
            _wait(started[0], "import socket; socket.create_connection(('127.0.0.1', 443), 2)")
            _wait(
                started[1], "import os; assert os.path.exists('/bench/mitm/mitmproxy-ca-cert.pem')"
            )
            bottle_ca = (Path(instance.state.path) / "ca" / "ca.pem").read_bytes()
            mitm_ca = (files / "mitm" / "mitmproxy-ca-cert.pem").read_bytes()
            (files / "all-ca.pem").write_bytes(ca_pem + bottle_ca + mitm_ca)
            egress = _docker(
                *("ps", "-q", "--no-trunc", "--filter"),
                f"label=com.docker.compose.project={project}",
                *("--filter", "label=com.docker.compose.service=egress"),
            )
            mitm = _docker("inspect", "-f", "{{.Id}}", started[1])
            yield client, {"egress": egress, "mitmdump": mitm, "relay": relay}
        finally:
            for container in started:
                subprocess.run(["docker", "rm", "-f", container], capture_output=True, check=False)


WAYS = ("direct", "mitmdump", "egress", "relay")


def _rounds(client: str, rounds: int) -> list[dict[str, dict[str, float]]]:
    out = []
    for index in range(rounds + 1):  # round 0 warms every way (certificates, caches) unseen
        order = WAYS[index % len(WAYS) :] + WAYS[: index % len(WAYS)]
        argv = [",".join(order), str(SMALL_REQUESTS), str(NEW_CONNECTIONS), str(PACKAGES)]
        if index == 0:
            argv = [",".join(order), "20", "3", str(PACKAGES)]
        line = _docker("exec", client, "/opt/client/bin/python", "-c", CLIENT, *argv).splitlines()[
            -1
        ]
        result = json.loads(line)
        if index:
            out.append(result)
        else:
            for error in result.get("errors", []):
                print(f"warm-up: {error}", file=sys.stderr, flush=True)
    return out


def _cpu_rounds(client: str, proxies: dict[str, str], rounds: int) -> dict[str, float]:
    """(way, what) medians of the proxy container's CPU per request (ms), per 100 MB, or
    per pip install."""
    found: dict[tuple[str, str], list[float]] = {}
    for index in range(rounds):
        ways = ("mitmdump", "egress") if index % 2 == 0 else ("egress", "mitmdump")
        for what, count in CPU_COUNTS.items():
            for way in (*ways, "relay") if what == "download" else ways:
                before = _cpu_seconds(proxies[way])
                argv = [way, what, str(count), str(PACKAGES)]
                _docker("exec", client, "/opt/client/bin/python", "-c", CPU_CLIENT, *argv)
                after = _cpu_seconds(proxies[way])
                if before is None or after is None:
                    return {}
                found.setdefault((way, what), []).append((after - before) / count * 1000)
    return {f"{way} {what}": statistics.median(v) for (way, what), v in found.items()}


def _median(results: list[dict[str, dict[str, float]]], way: str, key: str) -> float:
    return statistics.median(r[way][key] for r in results)


FIGURES = ("P4",)


def figures(rounds: int = 3) -> list[Figure]:
    with _setup() as (client, proxies):
        results = _rounds(client, rounds)
        cpu = _cpu_rounds(client, proxies, rounds)
    errors = [e for r in results for e in r.pop("errors", [])]  # type: ignore[attr-defined]
    m = {
        (way, key): statistics.median(v for r in results if (v := r[way][key]) is not None)
        for way in WAYS
        for key in results[0][way]
        if any(r[way][key] is not None for r in results)
    }
    rows = _rows(m, rounds)
    if cpu:
        rows = [_with_cpu(row, cpu) for row in rows]
    if errors:
        rows.append(
            Figure("P4", "measurements that failed", "none", f"{len(errors)}", False,
                   detail="; ".join(sorted(set(errors)))[:2000])
        )  # fmt: skip
    return rows


def _rows(m: dict[tuple[str, str], float], rounds: int) -> list[Figure]:
    """The figures whose inputs were all measured (a failed one is listed apart)."""
    rows: list[Figure] = []
    try:
        rows += _latency(m, rounds)
    except KeyError as exc:
        rows.append(Figure("P4", "egress addon per kept-alive request", "<= 0.5 ms",
                           f"not measured: {exc}", False))  # fmt: skip
    for make in (_new_connection, _download, _relay_floor, _pip):
        try:
            rows.append(make(m, rounds))
        except KeyError as exc:
            rows.append(Figure("P4", make.__name__.strip("_"), "see issue",
                               f"not measured: {exc}", False))  # fmt: skip
    return rows


def _with_cpu(row: Figure, cpu: dict[str, float]) -> Figure:
    """The latency and download rows' detail gets the proxies' CPU time for the same work."""
    for what, unit, scale in (("http", "request", 1.0), ("https", "request", 1.0),
                              ("download", "100 MB", 1e-3), ("pip", "install", 1.0)):  # fmt: skip
        if (
            f"{what.upper()} request" in row.name
            or (what == "download" and "download" in row.name)
            or (what == "pip" and row.name.startswith("pip install"))
        ):
            mine, plain = cpu[f"egress {what}"] * scale, cpu[f"mitmdump {what}"] * scale
            shown = "ms" if scale == 1.0 else "s"
            more = (
                f"; CPU of the proxy's container per {unit} (less load-bound than wall "
                f"time): mitmdump "
                f"{plain:.3f} {shown}, egress {mine:.3f} {shown}, egress over mitmdump "
                f"{mine - plain:+.3f} {shown}"
            )
            if what == "download" and "relay download" in cpu:
                more += f", socat {cpu['relay download'] * scale:.3f} {shown}"
            return Figure(row.id, row.name, row.goal, row.measured, row.passed, row.ratio,
                          row.detail + more)  # fmt: skip
    return row


def _latency(m: dict[tuple[str, str], float], rounds: int) -> list[Figure]:
    rows = []
    for proto in ("http", "https"):
        key = f"{proto}_ms"
        added = m[("egress", key)] - m[("mitmdump", key)]
        rows.append(
            Figure(
                "P4",
                f"egress addon per kept-alive {proto.upper()} request, over plain mitmdump",
                "<= 0.5 ms",
                f"{added:.2f} ms",
                added <= 0.5,
                detail=(
                    f"{proto}: medians over {rounds} rounds of {SMALL_REQUESTS}: direct "
                    f"{m[('direct', key)]:.2f} ms, mitmdump {m[('mitmdump', key)]:.2f} ms, "
                    f"egress {m[('egress', key)]:.2f} ms"
                ),
            )
        )
    return rows


def _new_connection(m: dict[tuple[str, str], float], rounds: int) -> Figure:
    new = m[("egress", "new_https_ms")] - m[("direct", "new_https_ms")]
    return Figure(
        "P4",
        "added time of a new HTTPS connection (and its first request), egress over direct",
        "<= 10 ms",
        f"{new:.1f} ms",
        new <= 10,
        detail=(
            f"new HTTPS connection + 1 request, medians over {rounds} rounds of "
            f"{NEW_CONNECTIONS}: direct {m[('direct', 'new_https_ms')]:.1f} ms, mitmdump "
            f"{m[('mitmdump', 'new_https_ms')]:.1f} ms, egress "
            f"{m[('egress', 'new_https_ms')]:.1f} ms"
        ),
    )


def _download(m: dict[tuple[str, str], float], rounds: int) -> Figure:
    ratio = m[("egress", "download_mbps")] / m[("direct", "download_mbps")]
    return Figure(
        "P4",
        "100 MB download (HTTP) throughput, egress vs direct",
        ">= 0.85",
        f"{m[('egress', 'download_mbps')]:.0f} MB/s",
        ratio >= 0.85,
        ratio=ratio,
        detail=(
            f"100 MB, medians over {rounds} rounds: direct "
            f"{m[('direct', 'download_mbps')]:.0f} MB/s, mitmdump "
            f"{m[('mitmdump', 'download_mbps')]:.0f} MB/s, egress "
            f"{m[('egress', 'download_mbps')]:.0f} MB/s"
        ),
    )


def _relay_floor(m: dict[tuple[str, str], float], rounds: int) -> Figure:
    relay, direct = m[("relay", "download_mbps")], m[("direct", "download_mbps")]
    egress = m[("egress", "download_mbps")]
    return Figure(
        "P4",
        "floor: 100 MB download (HTTP) through a C relay (socat) on egress's path, vs direct",
        ">= 0.85",
        f"{relay:.0f} MB/s",
        relay / direct >= 0.85,
        ratio=relay / direct,
        detail=(
            f"100 MB, medians over {rounds} rounds, interleaved with the row above: direct "
            f"{direct:.0f} MB/s, socat {relay:.0f} MB/s (copies the bytes through userspace, "
            f"reads none of them), egress {egress:.0f} MB/s = {egress / relay:.2f} of socat. "
            "Below 0.85, no proxy that must read the body reaches the goal on this machine"
        ),
    )


def _pip(m: dict[tuple[str, str], float], rounds: int) -> Figure:
    pip = m[("egress", "pip_s")] / m[("direct", "pip_s")]
    return Figure(
        "P4",
        f"pip install of {PACKAGES} wheels from a local HTTPS index, egress vs direct",
        "<= 1.2x",
        f"{m[('egress', 'pip_s')]:.2f} s",
        pip <= 1.2,
        ratio=pip,
        detail=(
            f"pip install --no-deps of {PACKAGES} packages (60 requests on one tunnel), "
            f"medians over {rounds} rounds: direct {m[('direct', 'pip_s')]:.2f} s, mitmdump "
            f"{m[('mitmdump', 'pip_s')]:.2f} s "
            f"({m[('mitmdump', 'pip_s')] / m[('direct', 'pip_s')]:.2f}x: the floor of any "
            f"mitmproxy-based egress), egress {m[('egress', 'pip_s')]:.2f} s"
        ),
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    rounds = parser.parse_args().rounds
    print(f"egress figures, {rounds} interleaved rounds (after one warm-up round)\n")
    print(markdown(figures(rounds)), end="")


if __name__ == "__main__":
    main()
