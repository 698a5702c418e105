"""``run_checks(instance)``: the network half of the escape suite, against a running bottle.

The host gathers what the agent must not reach (its own addresses, every network gateway
the engine knows, the metadata address, TEST-NET stand-ins for "outside": never a real
outside address), then runs ``bottle/probe.py`` inside the agent in one ``exec``; each
sidecar gets the same probe for its privileges. What the probes print is the container's
word, so it is parsed strictly: anything unexpected is a failed check, never trusted.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any

from ruamel.yaml import YAML

from bottle import layout
from bottle.errors import EngineError
from bottle.machine import host_addresses

if TYPE_CHECKING:
    from bottle.instance import Instance

#: Host ports tried on every host address and gateway. Any answer is a leak, a refusal
#: (RST) included, so closed ports prove as much as open ones.
DEFAULT_PORTS = (22, 80)
METADATA = "169.254.169.254"
#: Documentation ranges (RFC 5737): stand-ins for "outside" that no real host answers.
OUTSIDE = ("192.0.2.1", "198.51.100.1")
OUTSIDE_NAMES = ("example.com", "pypi.org")


@dataclass(frozen=True)
class CheckResult:
    where: str  # the service the probe ran in
    check: str
    expected: str
    seen: str
    ok: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def probe_script() -> bytes:
    return resources.files("bottle").joinpath("probe.py").read_bytes()


def probe_plan(
    *,
    gateways: dict[str, list[str]],
    addresses: Iterable[str],
    ports: Sequence[int] = DEFAULT_PORTS,
    root_allowed: bool = False,
) -> dict[str, Any]:
    """What the agent's probe tries: each target must fail to answer."""
    tcp: list[tuple[str, str, int]] = []
    for name, gws in sorted(gateways.items()):
        for gw in gws:
            tcp += [(f"gateway of {name}", gw, port) for port in ports]
    for address in addresses:
        tcp += [("host address", address, port) for port in ports]
    tcp.append(("metadata", METADATA, 80))
    tcp += [("outside (TEST-NET)", address, 443) for address in OUTSIDE]
    unique = list(dict.fromkeys(tcp))
    proxy_targets = [
        "http://127.0.0.1/",
        "http://localhost/",
        f"http://egress:{layout.EGRESS_PORT}/",
        f"http://supervise:{layout.SUPERVISE_PORT}/",
        f"http://{METADATA}/latest/meta-data/",
        "http://unrouted.invalid/",
    ]
    proxy_targets += [f"http://{host}:{port}/" for _, host, port in unique if ":" not in host]
    return {
        "tcp": unique,
        "dns": list(OUTSIDE_NAMES),
        "proxy": f"http://egress:{layout.EGRESS_PORT}",
        "proxy_targets": list(dict.fromkeys(proxy_targets)),
        "root_allowed": root_allowed,
    }


def run_checks(
    instance: Instance,
    *,
    ports: Sequence[int] = DEFAULT_PORTS,
    extra_addresses: Iterable[str] = (),
) -> list[CheckResult]:
    """Probe the running ``instance`` from inside; every result with ``ok`` false is a leak."""
    from bottle.engine.networks import network_gateways

    services = instance.metadata.services
    addresses = [*host_addresses(), *extra_addresses]
    plan = probe_plan(
        gateways=network_gateways(),
        addresses=dict.fromkeys(addresses),
        ports=ports,
        root_allowed=_agent_user(instance) == "0:0",
    )
    results = _probe(instance, "agent", plan)
    for service in services:
        if service != "agent":
            results += _probe(instance, service, {"mode": "sidecar"})
    return results


def _agent_user(instance: Instance) -> str:
    spec = YAML(typ="safe", pure=True).load(instance.state.compose_file.read_text())
    return str(spec["services"]["agent"].get("user", ""))


def _probe(instance: Instance, service: str, plan: dict[str, Any]) -> list[CheckResult]:
    done = instance.exec(
        ["python3", "-", json.dumps(plan)],
        capture=True,
        service=service,
        stdin=probe_script(),
    )
    if done.exit_code != 0:
        raise EngineError(
            f"the escape probe failed in {service} (exit {done.exit_code}): "
            f"{done.stderr.strip()[-300:]}",
            hint=f"Is the instance running? See 'bottle logs {instance.slug}'.",
        )
    return parse_results(service, done.stdout)


def parse_results(service: str, text: str) -> list[CheckResult]:
    """The probe's JSON, checked field by field; a malformed answer is one failed check."""
    try:
        rows = json.loads(text)
        if not isinstance(rows, list):
            raise TypeError("not a list")
        return [
            CheckResult(
                where=service,
                check=_text(row["check"]),
                expected=_text(row["expected"]),
                seen=_text(row["seen"]),
                ok=row["ok"] is True,
            )
            for row in rows
        ]
    except (ValueError, TypeError, KeyError) as exc:
        return [CheckResult(service, "probe output", "JSON results", f"unreadable: {exc}", False)]


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected text, got {type(value).__name__}")
    return value[:300]
