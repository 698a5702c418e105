"""The kernel's IPv4 route table as ``/proc/net/route`` lists it.

Pure (stdlib only) and shared: the host reads its own table to lease subnets that shadow no
route (``bottle.subnets``), and egress reads its container's to know the bottle's own
networks (``bottle.runtime.egress.addresses``).
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import NamedTuple

__all__ = ["Route", "ipv4_routes"]


class Route(NamedTuple):
    network: ipaddress.IPv4Network
    #: No gateway: the network is directly attached.
    on_link: bool


def ipv4_routes(proc: Path = Path("/proc")) -> list[Route]:
    """Every route with a prefix (the default route left out); none when unreadable."""
    try:
        lines = (proc / "net" / "route").read_text().splitlines()[1:]
    except OSError:
        return []
    found = []
    for line in lines:
        fields = line.split()
        if len(fields) < 8:
            continue
        try:
            dest = ipaddress.IPv4Address(bytes.fromhex(fields[1])[::-1])
            mask = ipaddress.IPv4Address(bytes.fromhex(fields[7])[::-1])
            net = ipaddress.IPv4Network(f"{dest}/{mask}", strict=False)
        except ValueError:
            continue
        if net.prefixlen:
            found.append(Route(net, on_link=fields[2] == "00000000"))
    return found
