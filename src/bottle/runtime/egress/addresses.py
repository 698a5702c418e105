"""Which addresses egress may connect to: public ones, unless a route marks its host private.

Pure (the stdlib and ``bottle.procnet``), so the table of cases is tested without sockets.
An address in an IPv4-mapped, NAT64 or 6to4 form is judged by the IPv4 address inside it.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import NamedTuple

from bottle.procnet import ipv4_routes

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Cloud instance metadata services: credentials of the machine, never a route's target.
METADATA = frozenset(
    {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
)
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
#: The documentation networks (RFC 5737, RFC 3849). By definition no one's internal service
#: lives there, so they are no way into a private network; test rigs and sandboxes use them
#: as the stand-in for the outside world (this project's CI resolves every outside name to
#: one), so egress treats them like public addresses.
_DOCUMENTATION = tuple(
    ipaddress.ip_network(net)
    for net in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32")
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class Verdict(NamedTuple):
    """Why an address is not public; ``always`` when even a private route may not reach it."""

    kind: str
    always: bool


def _embedded_v4(address: IPAddress) -> ipaddress.IPv4Address | None:
    if isinstance(address, ipaddress.IPv4Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def classify(address: IPAddress, own: Iterable[IPNetwork] = ()) -> Verdict | None:
    """None for a public address; otherwise what it is. ``own``: the bottle's networks."""
    inner = _embedded_v4(address)
    if inner is not None:
        return classify(inner, own)
    if address in METADATA:
        return Verdict("the cloud metadata address", always=True)
    if address.is_unspecified:
        return Verdict("an unspecified address", always=True)
    if address.is_multicast:
        return Verdict("a multicast address", always=True)
    if any(address.version == net.version and address in net for net in own):
        return Verdict(
            "an address of the bottle's own networks or of the machine it runs on", always=False
        )
    if address.is_loopback:
        return Verdict("a loopback address", always=False)
    if address.is_link_local:
        return Verdict("a link-local address", always=False)
    if isinstance(address, ipaddress.IPv4Address) and address in _CGNAT:
        return Verdict("a shared (CGNAT) address", always=False)
    if any(address.version == net.version and address in net for net in _DOCUMENTATION):
        return None
    if address.is_reserved:
        return Verdict("a reserved address", always=True)
    if address.is_private:
        kind = "a unique-local address" if address.version == 6 else "a private address"
        return Verdict(kind, always=False)
    if not address.is_global:
        return Verdict("an address that is not globally routable", always=False)
    return None


def refusal(address: IPAddress, private: bool, own: Iterable[IPNetwork] = ()) -> str | None:
    """Why egress must not connect to ``address`` (None: it may), for a host whose routes
    do (``private``) or do not allow non-public addresses."""
    verdict = classify(address, own)
    if verdict is None or (private and not verdict.always):
        return None
    if verdict.always:
        return f"it is {verdict.kind}, which egress never connects to"
    return (
        f"it is {verdict.kind}, and no route for this host says private: true "
        "(a public name must not lead into private networks)"
    )


#: The host's own addresses, passed in by bottle at start (comma-separated): egress never
#: connects to the machine it runs on, whatever a name resolves to (its LAN address may sit
#: in any range, a documentation one included).
HOST_ADDRESSES_ENV = "BOTTLE_HOST_ADDRESSES"


def host_addresses(environ: Mapping[str, str] = os.environ) -> tuple[IPNetwork, ...]:
    """The host's addresses bottle passed in ``BOTTLE_HOST_ADDRESSES``, as /32 (/128) nets."""
    nets: list[IPNetwork] = []
    for part in environ.get(HOST_ADDRESSES_ENV, "").split(","):
        try:
            nets.append(ipaddress.ip_network(part.strip()))
        except ValueError:
            continue
    return tuple(nets)


def own_networks(proc: Path = Path("/proc")) -> tuple[IPNetwork, ...]:
    """The networks this container is attached to: the on-link routes of its route tables."""
    nets: list[IPNetwork] = [route.network for route in ipv4_routes(proc) if route.on_link]
    try:
        lines6 = (proc / "net" / "ipv6_route").read_text().splitlines()
    except OSError:
        lines6 = []
    for line in lines6:
        fields = line.split()
        if len(fields) < 10 or fields[4] != "0" * 32 or fields[9] == "lo":
            continue
        try:
            net6 = ipaddress.IPv6Network(
                (ipaddress.IPv6Address(bytes.fromhex(fields[0])), int(fields[1], 16)),
                strict=False,
            )
        except ValueError:
            continue
        if net6.prefixlen and not net6.is_link_local and not net6.is_multicast:
            nets.append(net6)
    return tuple(dict.fromkeys(nets))
