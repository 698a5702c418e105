"""Facts about the machine bottle runs on, read from ``/proc`` (Linux).

Not part of any plan or compose file (they are not the user's to write down, and they
change): bottle passes them to what needs them at the moment it runs.
"""

from __future__ import annotations

import itertools
from pathlib import Path


def host_addresses() -> list[str]:
    """This machine's own IPv4 addresses, loopback excepted (Linux: the LOCAL routes)."""
    try:
        lines = Path("/proc/net/fib_trie").read_text().splitlines()
    except OSError:
        return []
    found = []
    for before, line in itertools.pairwise(lines):
        if "/32 host LOCAL" in line:
            address = before.split()[-1]
            if not address.startswith("127."):
                found.append(address)
    return sorted(dict.fromkeys(found))
