"""What every container of an instance gives up, and who owns what it may write.

No service needs a Linux capability: the agent and the sidecars run as non-root users, bind
only unprivileged ports and write only bind-mounted directories they own (or ``/tmp``). So
each one drops them all, may not regain privileges through a setuid binary, and has a ceiling
on processes, memory and the size of its log on the host; sidecars also get a read-only root
filesystem. The agent keeps a writable one (its tools install into ``$HOME`` and ``/tmp``),
but as a non-root user without capabilities it cannot change the image's system files.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bottle.plan import BottlePlan
    from bottle.state import StateDir

#: Kernel settings of every container's network namespace. No IPv6 at all: the host's side
#: of each bridge keeps an fe80:: link-local address that ``inhibit_ipv4`` does not remove
#: (sidecars listen on IPv4 only). No unprivileged ICMP sockets either (Docker allows them
#: by default): ping needs no capability and is a way to probe and signal.
SYSCTLS = {
    "net.ipv6.conf.all.disable_ipv6": "1",
    "net.ipv6.conf.default.disable_ipv6": "1",
    "net.ipv4.ping_group_range": "1 0",
}

#: The internal network's bridge gets no address on the host: the agent cannot reach any
#: host service (a server on 0.0.0.0 answers on every host address, the gateway included).
INTERNAL_DRIVER_OPTS = {"com.docker.network.bridge.inhibit_ipv4": "true"}

#: Directories of the state dir that sidecars write (see each sidecar's volumes).
SIDECAR_WRITABLE = ("ca", "ca-private", "logs", "status", "proposals")
#: ... and the one the agent writes.
AGENT_WRITABLE = ("transcript", "home")

#: Each container's log on the host, rotated by the engine: the agent writes to its own
#: (PID 1's stdout is its user's) and to what the sidecars print about its requests, and a
#: log has no size limit of its own. ``compose.log`` and ``bottle logs`` read at most this.
LOG_MAX_SIZE = "4m"
LOG_MAX_FILES = 2


def _common() -> dict[str, Any]:
    return {
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges:true"],
        "logging": {
            "driver": "json-file",
            "options": {"max-size": LOG_MAX_SIZE, "max-file": str(LOG_MAX_FILES)},
        },
    }


def agent_keys(plan: BottlePlan) -> dict[str, Any]:
    """Hardening keys of the agent service."""
    return {
        **_common(),
        "pids_limit": plan.limits.agent_pids,
        "mem_limit": plan.limits.agent_memory,
        "sysctls": dict(SYSCTLS),
    }


def sidecar_keys(plan: BottlePlan) -> dict[str, Any]:
    """Hardening keys of every sidecar service."""
    return {
        "user": plan.sidecar_user,
        **_common(),
        "read_only": True,
        "tmpfs": ["/tmp:size=64m,mode=1777"],
        "pids_limit": plan.limits.sidecar_pids,
        "mem_limit": plan.limits.sidecar_memory,
        "sysctls": dict(SYSCTLS),
    }


def prepare_state(plan: BottlePlan, state: StateDir) -> None:
    """Hand each container the directories it writes, when bottle runs as root.

    Without capabilities, root in a container cannot write what another uid owns, and the
    sidecars and the agent are other uids than a root ``bottle``. A non-root ``bottle`` owns
    the state dir, its sidecars run as that same user, and the transcript is world-writable.
    """
    if os.getuid() != 0:
        return
    uid, gid = _ids(plan.sidecar_user)
    for name in SIDECAR_WRITABLE:
        os.chown(state.path / name, uid, gid)
    uid, gid = _ids(plan.user)
    for name in AGENT_WRITABLE:
        os.chown(state.path / name, uid, gid)


def _ids(user: str) -> tuple[int, int]:
    uid, _, gid = user.partition(":")
    return int(uid), int(gid or uid)
