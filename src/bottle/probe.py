"""The escape probe: run INSIDE the agent as ``python3 - PLAN_JSON`` (stdlib only).

``bottle.checks`` sends this file's text on stdin with a plan of what to try (JSON in
``argv[1]``); every probe tries to leave the bottle and reports what it saw as one JSON list of
``{"check", "expected", "seen", "ok"}`` on stdout. ``ok`` is false when a way out worked.
It never imports bottle: the agent image has python3 and nothing of ours.
"""

from __future__ import annotations

import errno
import http.client
import json
import socket
import sys
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from typing import Any

#: Errors that mean "no path": nothing answered. ECONNREFUSED is absent on purpose: a refusal
#: is an answer from a host, so the path exists even if the port is closed.
_NO_PATH = {
    errno.ENETUNREACH,
    errno.EHOSTUNREACH,
    errno.ETIMEDOUT,
    errno.EADDRNOTAVAIL,
    errno.EACCES,
    errno.EPERM,
    errno.EAFNOSUPPORT,
}
TIMEOUT = 3.0

Result = dict[str, Any]


def result(check: str, expected: str, seen: str, ok: bool) -> Result:
    return {"check": check, "expected": expected, "seen": seen, "ok": ok}


def _describe(exc: OSError) -> str:
    if isinstance(exc, TimeoutError) or exc.errno is None:
        return "timed out"
    return errno.errorcode.get(exc.errno, str(exc.errno))


def tcp(label: str, host: str, port: int) -> Result:
    """A direct TCP connection, around the proxy."""
    check = f"tcp {label} {host}:{port}"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError as exc:
        return result(check, "no path", f"no socket ({_describe(exc)})", True)
    sock.settimeout(TIMEOUT)
    try:
        address: tuple[Any, ...] = (host, port)
        if family == socket.AF_INET6:
            address = socket.getaddrinfo(host, port, family, socket.SOCK_STREAM)[0][4]
        sock.connect(address)
    except TimeoutError:
        return result(check, "no path", "timed out", True)
    except socket.gaierror as exc:
        return result(check, "no path", f"no address ({exc.strerror})", True)
    except OSError as exc:
        seen = _describe(exc)
        if exc.errno == errno.ECONNREFUSED:
            seen = "ECONNREFUSED: a host answered"
        return result(check, "no path", seen, exc.errno in _NO_PATH)
    finally:
        sock.close()
    return result(check, "no path", "CONNECTED", False)


def raw_sockets() -> list[Result]:
    out = []
    kinds = [
        ("raw ICMP socket", socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP),
        ("ICMP datagram socket (ping)", socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP),
    ]
    packet = getattr(socket, "AF_PACKET", None)
    if packet is not None:
        kinds.append(("packet socket", packet, socket.SOCK_RAW, 0))
    for name, family, kind, proto in kinds:
        try:
            socket.socket(family, kind, proto).close()
        except OSError as exc:
            out.append(result(name, "refused", _describe(exc), True))
        else:
            out.append(result(name, "refused", "OPENED", False))
    return out


def ipv6() -> list[Result]:
    try:
        with open("/proc/net/if_inet6") as fh:
            addresses = [line.split()[0] for line in fh if line.strip()]
    except OSError:
        addresses = []
    seen = ", ".join(addresses) if addresses else "none"
    out = [result("IPv6 addresses", "none", seen, not addresses)]
    try:
        with open("/proc/sys/net/ipv6/conf/all/disable_ipv6") as fh:
            disabled = fh.read().strip()
    except OSError:
        disabled = "no IPv6 in the kernel"
    out.append(result("IPv6 disabled", "1", disabled, disabled in ("1", "no IPv6 in the kernel")))
    for name, host in (("all-nodes", "ff02::1"), ("link-local router", "fe80::1")):
        for iface in _interfaces():
            out.append(tcp(f"IPv6 {name}", f"{host}%{iface}", 80))
    return out


def _interfaces() -> list[str]:
    return [name for _, name in socket.if_nameindex() if name != "lo"]


def dns(name: str) -> Result:
    try:
        found = sorted({str(info[4][0]) for info in socket.getaddrinfo(name, 443)})
    except OSError as exc:
        return result(f"dns {name}", "does not resolve", f"no answer ({exc})", True)
    return result(f"dns {name}", "does not resolve", "RESOLVED " + ", ".join(found), False)


def proxy(proxy_url: str, target: str) -> Result:
    """egress must refuse to fetch ``target`` for the agent (no route, or a private address).

    Sent to the proxy by hand: urllib would honour NO_PROXY and go direct for localhost.
    """
    check = f"proxy {target}"
    expected = "refused by egress (403)"
    host, _, port = proxy_url.removeprefix("http://").partition(":")
    conn = http.client.HTTPConnection(host, int(port or 80), timeout=10)
    try:
        conn.request("GET", target, headers={"Host": urllib.parse.urlsplit(target).netloc})
        status = conn.getresponse().status
    except OSError as exc:
        return result(check, expected, f"error {exc}", False)
    finally:
        conn.close()
    return result(check, expected, str(status), status == 403)


def identity(root_allowed: bool) -> list[Result]:
    fields: dict[str, str] = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    cap_eff = fields.get("CapEff", "?")
    cap_prm = fields.get("CapPrm", "?")
    uid = fields.get("Uid", "?").split()
    euid = uid[1] if len(uid) > 1 else "?"
    user_ok = euid != "0" or root_allowed
    return [
        result("capabilities (CapEff)", "0", cap_eff, _zero(cap_eff)),
        result("capabilities (CapPrm)", "0", cap_prm, _zero(cap_prm)),
        result("no_new_privs", "1", fields.get("NoNewPrivs", "?"), fields.get("NoNewPrivs") == "1"),
        result(
            "user (euid)",
            "not 0" if not root_allowed else "any (bottle allows root)",
            euid,
            user_ok,
        ),
    ]


def _zero(hexmask: str) -> bool:
    try:
        return int(hexmask, 16) == 0
    except ValueError:
        return False


def read_only_root() -> Result:
    try:
        with open("/.bottle-probe", "w"):
            pass
    except OSError as exc:
        return result("root filesystem", "read-only", _describe(exc), exc.errno == errno.EROFS)
    return result("root filesystem", "read-only", "WRITABLE", False)


def run(plan: dict[str, Any]) -> list[Result]:
    if plan.get("mode") == "sidecar":
        return [*identity(False), *raw_sockets(), read_only_root()]
    with ThreadPoolExecutor(max_workers=32) as pool:
        tcp_jobs = [pool.submit(tcp, label, host, int(port)) for label, host, port in plan["tcp"]]
        dns_jobs = [pool.submit(dns, name) for name in plan["dns"]]
        proxy_jobs = [pool.submit(proxy, plan["proxy"], url) for url in plan["proxy_targets"]]
        v6 = pool.submit(ipv6)
        out = [job.result() for job in tcp_jobs]
        out += v6.result()
        out += [job.result() for job in dns_jobs]
        out += [job.result() for job in proxy_jobs]
    out += raw_sockets()
    out += identity(bool(plan.get("root_allowed")))
    return out


if __name__ == "__main__":
    print(json.dumps(run(json.loads(sys.argv[1]))))
