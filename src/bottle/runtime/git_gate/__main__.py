"""``python -m bottle.runtime.git_gate``: prepare the mirrors and the key files, then serve.

1. The config (``live-config/git-gate/remotes.json``) is read; each SSH key is written from
   its variable to a 0600 file on the gate's tmpfs and the variable dropped.
2. ``ssh`` refuses to run for a uid without a passwd entry (sidecars may run as the invoking
   user's uid): then a passwd file on the tmpfs is given to it through nss_wrapper.
3. The mirrors and their hook are made, the server listens, then ``status/git-gate.json``.
"""

from __future__ import annotations

import os
import pwd
import sys
from collections.abc import MutableMapping
from datetime import UTC, datetime
from pathlib import Path

from bottle import layout
from bottle.files import atomic_write
from bottle.runtime import git_gate as gate
from bottle.runtime.git_gate import server, upstream
from bottle.runtime.status import SidecarStatus

NSS_WRAPPER = (
    "/usr/lib/x86_64-linux-gnu/libnss_wrapper.so",
    "/usr/lib/aarch64-linux-gnu/libnss_wrapper.so",
)


class GateStatus(SidecarStatus):
    remotes: tuple[str, ...] = ()


def ensure_user(environ: MutableMapping[str, str], secrets: Path) -> None:
    """Give a uid without a passwd entry one, for ssh (which exits without it)."""
    uid, gid = os.getuid(), os.getgid()
    try:
        pwd.getpwuid(uid)
        return
    except KeyError:
        pass
    lib = next((p for p in NSS_WRAPPER if Path(p).is_file()), None)
    if lib is None:
        print(
            "git-gate: uid has no passwd entry and nss_wrapper is missing; ssh may fail",
            file=sys.stderr,
            flush=True,
        )
        return
    home = environ.get("HOME") or str(secrets)
    (secrets / "passwd").write_text(f"gate:x:{uid}:{gid}:git-gate:{home}:/bin/sh\n")
    (secrets / "group").write_text(f"gate:x:{gid}:\n")
    wrapper = {
        "LD_PRELOAD": lib,
        "NSS_WRAPPER_PASSWD": str(secrets / "passwd"),
        "NSS_WRAPPER_GROUP": str(secrets / "group"),
    }
    environ.update(wrapper)
    os.environ.update(wrapper)


def main(environ: MutableMapping[str, str] | None = None) -> None:
    env = os.environ if environ is None else environ
    config = gate.load_config(env)
    secrets, work = gate.secrets_dir(env), gate.work_dir(env)
    status = gate.status_path(env)
    status.parent.mkdir(parents=True, exist_ok=True)
    # The host waits for the status file (bottle.readiness): one left by an earlier run
    # must not pass for this one.
    status.unlink(missing_ok=True)
    gate.log_path(env).parent.mkdir(parents=True, exist_ok=True)
    upstream.prepare_keys(config.remotes, env, secrets)  # type: ignore[arg-type]
    ensure_user(env, secrets)
    env.setdefault("HOME", str(secrets))
    work.mkdir(parents=True, exist_ok=True)
    # The root filesystem may be read-only: temporary files (gitleaks' report) go on the tmpfs.
    (work / "tmp").mkdir(exist_ok=True)
    env["TMPDIR"] = str(work / "tmp")
    os.environ["TMPDIR"] = env["TMPDIR"]
    state = server.Gate(config, work, env)
    state.prepare()
    port = int(env.get(gate.PORT_ENV) or layout.GIT_GATE_PORT)
    httpd = server.serve(state, "0.0.0.0", port)  # noqa: S104 - internal network only
    now = datetime.now(UTC).isoformat(timespec="seconds")
    record = GateStatus(loaded_at=now, remotes=tuple(r.name for r in config.remotes))
    atomic_write(status, record.model_dump_json(indent=2) + "\n")
    print(
        f"git-gate: serving {', '.join(record.remotes)} on :{httpd.server_address[1]}",
        file=sys.stderr,
        flush=True,
    )
    httpd.serve_forever()


if __name__ == "__main__":
    main()
