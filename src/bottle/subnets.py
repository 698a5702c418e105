"""Each instance's two networks get /28 subnets of their own from a pool bottle owns.

Docker's default address pools hold about 30 networks (a /16 each of 172.17-31, a /20 each
of 192.168), and every instance makes two: the 16th concurrent instance would not start.
A /28 (13 addresses after the gateway) is plenty for the agent, three sidecars and a
capability build. The pool is ``Settings.subnet_pool`` (``BOTTLE_SUBNET_POOL``).

Leases live in ``$BOTTLE_HOME/.subnets.json`` under ``.subnets.lock``: two starts in one
``BOTTLE_HOME`` never pick the same subnet, even before either has made its networks. A
subnet is free when no lease holds it, no docker network overlaps it (other homes' and
other tools' included) and no host route does. The search starts at a random slot, so two
homes starting at the same moment are unlikely to race for one; if they do, docker refuses
the second network ("Pool overlaps") and that start fails cleanly. A lease goes at the
instance's ``down``, or when its state directory is gone.
"""

from __future__ import annotations

import ipaddress
import json
import secrets
from collections.abc import Callable, Iterable
from pathlib import Path

from bottle.errors import Refused, SettingsError
from bottle.files import atomic_write, locked
from bottle.procnet import ipv4_routes

#: The networks of one instance, each with a subnet of its own (see bottle.compose).
NETWORKS = ("internal", "egress")
PREFIX = 28
LEASES = ".subnets.json"
LOCK = ".subnets.lock"

_POOL_HINT = (
    "Set BOTTLE_SUBNET_POOL to a private IPv4 range no network of this host uses, "
    "e.g. 10.213.0.0/16 (a /27 or larger)."
)


def parse_pool(text: str) -> ipaddress.IPv4Network:
    """The pool ``BOTTLE_SUBNET_POOL`` names; SettingsError when it is not a usable range."""
    try:
        pool = ipaddress.ip_network(text.strip(), strict=True)
    except ValueError as exc:
        raise SettingsError(
            f"BOTTLE_SUBNET_POOL={text!r} is not a network: {exc}", hint=_POOL_HINT
        ) from None
    if not isinstance(pool, ipaddress.IPv4Network):
        raise SettingsError(f"BOTTLE_SUBNET_POOL={text} is not IPv4", hint=_POOL_HINT)
    if not pool.is_private or pool.is_loopback or pool.is_link_local or pool.is_multicast:
        raise SettingsError(
            f"BOTTLE_SUBNET_POOL={text} is not a private range (RFC 1918)", hint=_POOL_HINT
        )
    if pool.prefixlen > PREFIX - len(NETWORKS) + 1:
        raise SettingsError(
            f"BOTTLE_SUBNET_POOL={text} is too small for one instance's {len(NETWORKS)} "
            f"/{PREFIX} subnets",
            hint=_POOL_HINT,
        )
    return pool


def lease(
    state_root: Path,
    slug: str,
    *,
    pool: str,
    in_use: Callable[[], Iterable[str]],
    routes: Callable[[], Iterable[str]] | None = None,
) -> dict[str, str]:
    """The subnet of each of ``slug``'s networks (the ones it holds, else new ones).

    ``in_use``: the subnets of the engine's networks. Read before the lock is taken: under
    it, twenty concurrent starts would wait for each other's docker calls. What another
    start of this home makes meanwhile it holds a lease for first, so it is seen anyway.
    Refused when the pool has no room left.
    """
    network = parse_pool(pool)
    state_root.mkdir(parents=True, exist_ok=True)
    seen = [*in_use(), *(host_routes() if routes is None else routes())]
    with locked(state_root.parent / LOCK):
        leases = {s: n for s, n in _read(state_root).items() if (state_root / s).is_dir()}
        held = leases.get(slug)
        if held is not None and _fits(held, network):
            return held
        leases.pop(slug, None)
        taken = [*seen, *(cidr for nets in leases.values() for cidr in nets.values())]
        picked = _pick(network, taken, len(NETWORKS))
        if picked is None:
            raise Refused(
                f"no free /{PREFIX} subnet left in the pool {network} for {slug}'s networks "
                f"({len(leases)} instance(s) of this BOTTLE_HOME hold leases)",
                hint="Stop instances you no longer need ('bottle ls', 'bottle stop SLUG'), "
                "or set BOTTLE_SUBNET_POOL to a larger private range no network here uses.",
            )
        leases[slug] = dict(zip(NETWORKS, picked, strict=True))
        _write(state_root, leases)
        return leases[slug]


def release(state_root: Path, slug: str) -> None:
    """Give ``slug``'s subnets back (its networks are down); a no-op when it holds none."""
    if not (state_root.parent / LEASES).exists():
        return
    with locked(state_root.parent / LOCK):
        leases = _read(state_root)
        if leases.pop(slug, None) is not None:
            _write(state_root, leases)


def host_routes(proc: Path = Path("/proc")) -> list[str]:
    """Every IPv4 route of this host but the default one: a subnet on one would shadow it."""
    return [str(route.network) for route in ipv4_routes(proc)]


def _pick(pool: ipaddress.IPv4Network, taken: Iterable[str], count: int) -> list[str] | None:
    """``count`` free /PREFIX slots of ``pool``, from a random one on; None if too few."""
    size = 1 << (32 - PREFIX)
    base = int(pool.network_address)
    slots = pool.num_addresses // size
    blocked: set[int] = set()
    for cidr in taken:
        try:
            net = ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            continue
        # A default route overlaps everything and shadows nothing: a more specific one wins.
        if not isinstance(net, ipaddress.IPv4Network) or not net.prefixlen:
            continue
        if not net.overlaps(pool):
            continue
        first = max(int(net.network_address), base) - base
        last = min(int(net.broadcast_address), base + pool.num_addresses - 1) - base
        blocked.update(range(first // size, last // size + 1))
    if slots - len(blocked) < count:
        return None
    start = secrets.randbelow(slots)
    free = (i % slots for i in range(start, start + slots) if i % slots not in blocked)
    return [f"{ipaddress.IPv4Address(base + next(free) * size)}/{PREFIX}" for _ in range(count)]


def _fits(held: dict[str, str], pool: ipaddress.IPv4Network) -> bool:
    try:
        nets = [ipaddress.ip_network(held[name]) for name in NETWORKS]
    except (KeyError, ValueError, TypeError):
        return False
    return all(isinstance(n, ipaddress.IPv4Network) and n.subnet_of(pool) for n in nets)


def _read(state_root: Path) -> dict[str, dict[str, str]]:
    """The leases; a damaged file counts as none (docker still shows the networks up)."""
    try:
        data = json.loads((state_root.parent / LEASES).read_bytes())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {
        slug: nets
        for slug, nets in data.items()
        if isinstance(slug, str)
        and isinstance(nets, dict)
        and all(isinstance(v, str) for v in nets.values())
    }


def _write(state_root: Path, leases: dict[str, dict[str, str]]) -> None:
    atomic_write(state_root.parent / LEASES, json.dumps(leases, indent=2, sort_keys=True) + "\n")
