"""The fake API server: ``python -m tests.fakeapi.server SCRIPT LOG [PORT]``.

Serves HTTPS on ``PORT`` (443) with ``$FAKEAPI_CERT``/``$FAKEAPI_KEY`` (PEM text), answers
each API path from its dialect module and the script (JSON, re-read on every request so a
test may change it), and appends every request to ``LOG`` (JSONL): time, host, method, path,
headers and body. A path ending ``/echo`` answers with that record (an upstream echoing the
request). Any other path answers 200 with a short text, so the fake also stands in for "some
host the agent wants" in the egress recovery flow.

Stdlib only: it runs in the sidecar image, with this package bind-mounted.
"""

from __future__ import annotations

import http.server
import json
import os
import ssl
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.fakeapi import anthropic, chatgpt, openai

#: A dialect's answer: status, content type, and the body as chunks (each one flushed, so a
#: list of SSE events streams).
Reply = tuple[int, str, list[bytes]]
Handler = Callable[[dict[str, Any], Any], Reply]

#: (method, path) -> handler(script, request body). The codex engineer adds the Responses API.
ROUTES: dict[tuple[str, str], Handler] = {
    **anthropic.ROUTES,
    **openai.ROUTES,
    **chatgpt.ROUTES,
}

_LOG_LOCK = threading.Lock()


def dispatch(method: str, path: str, script: dict[str, Any], body: Any) -> Reply:
    route = path.split("?", 1)[0]
    handler = ROUTES.get((method, route))
    if handler is not None:
        return handler(script, body)
    if route.startswith(("/v1/", "/api/")):
        payload = {"type": "error", "error": {"type": "not_found_error", "message": route}}
        return 404, "application/json", [json.dumps(payload).encode()]
    return 200, "text/plain", [f"fakeapi says hello on {route}\n".encode()]


def _script(path: Path) -> dict[str, Any]:
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def _body(raw: bytes, encoding: str = "") -> Any:
    if not raw:
        return None
    if encoding.strip().lower() == "zstd":  # Codex compresses its requests to chatgpt.com
        try:
            from compression import zstd  # type: ignore[import-not-found,unused-ignore]
        except ImportError:
            from backports import zstd  # type: ignore[import-not-found,no-redef,unused-ignore]
        raw = zstd.decompress(raw)
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")


def make_handler(script: Path, log: Path) -> type[http.server.BaseHTTPRequestHandler]:
    class FakeAPI(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _serve(self) -> None:
            size = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(size) if size else b""
            body = _body(raw, self.headers.get("content-encoding", ""))
            record = {
                "time": time.time(),
                "host": self.headers.get("host", ""),
                "method": self.command,
                "path": self.path,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body": body,
            }
            with _LOG_LOCK, log.open("a", encoding="utf-8") as out:
                out.write(json.dumps(record) + "\n")
            if self.path.split("?", 1)[0].endswith("/echo"):
                # An upstream that echoes the request: egress must scrub what it injected.
                reply: Reply = (200, "application/json", [json.dumps(record).encode()])
            else:
                reply = dispatch(self.command, self.path, _script(script), body)
            status, ctype, chunks = reply
            self.send_response(status)
            self.send_header("content-type", ctype)
            if ctype == "text/event-stream":
                self.send_header("transfer-encoding", "chunked")
                self.send_header("cache-control", "no-cache")
                self.end_headers()
                for chunk in chunks:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    self.wfile.flush()
                self.wfile.write(b"0\r\n\r\n")
                return
            data = b"".join(chunks)
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = _serve

    return FakeAPI


def main(argv: list[str]) -> None:
    script, log = Path(argv[0]), Path(argv[1])
    port = int(argv[2]) if len(argv) > 2 else 443
    with tempfile.NamedTemporaryFile("w", suffix=".pem", delete=False) as pem:
        pem.write(os.environ["FAKEAPI_CERT"] + os.environ["FAKEAPI_KEY"])
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pem.name)
    server = http.server.ThreadingHTTPServer(("", port), make_handler(script, log))
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    server.serve_forever()


if __name__ == "__main__":
    main(sys.argv[1:])
