"""Settings read from the environment once, then passed down."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from bottle.errors import Failed, SettingsError

#: Where a host keeps its trusted CA bundle, first match wins.
_SYSTEM_CA_BUNDLES = (
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
    "/etc/ssl/ca-bundle.pem",
)


@dataclass(frozen=True, kw_only=True)
class Settings:
    """What bottle reads from the environment.

    ``BOTTLE_HOME``            user config and state (default ``~/.bottle``)
    ``BOTTLE_EXTRA_CA_CERTS``  PEM file trusted, beside the system bundle, by image
                               builds and by egress towards upstream servers
    ``BOTTLE_BASE_IMAGE``      base of every image (default ``python:3.13-slim``)
    ``BOTTLE_OFFLINE_BASE``    ``1``: never pull, make the base from a Debian mirror
    ``BOTTLE_DEBIAN_MIRROR``   mirror for the offline base (default deb.debian.org)
    ``BOTTLE_SUBNET_POOL``     private IPv4 range each instance's two networks take their
                               /28 subnets from (default ``10.213.0.0/16``, see bottle.subnets)
    """

    home: Path
    extra_ca_certs: Path | None = None
    base_image: str = "python:3.13-slim"
    offline_base: bool = False
    debian_mirror: str = "http://deb.debian.org/debian"
    system_ca_bundle: Path | None = None
    subnet_pool: str = "10.213.0.0/16"

    @property
    def bottles_dir(self) -> Path:
        return self.home / "bottles"

    @property
    def agents_dir(self) -> Path:
        return self.home / "agents"

    @property
    def skills_dir(self) -> Path:
        return self.home / "skills"

    @property
    def state_root(self) -> Path:
        return self.home / "state"

    @property
    def home_id(self) -> str:
        return home_id(self.state_root)

    def host_ca_pem(self) -> bytes:
        """The CA bundle the way out trusts: the host's system bundle plus the extra file."""
        parts: list[bytes] = []
        if self.system_ca_bundle is not None:
            try:
                parts.append(self.system_ca_bundle.read_bytes())
            except OSError as exc:
                raise Failed(
                    f"the system CA bundle {self.system_ca_bundle} cannot be read: {exc.strerror}",
                    hint="Check the file's permissions (it is the host's own trust store).",
                ) from exc
        if self.extra_ca_certs is not None:
            try:
                parts.append(self.extra_ca_certs.read_bytes())
            except OSError as exc:
                raise SettingsError(
                    f"BOTTLE_EXTRA_CA_CERTS={self.extra_ca_certs} cannot be read: {exc.strerror}",
                    hint="Point BOTTLE_EXTRA_CA_CERTS at a readable PEM file, or unset it.",
                ) from exc
        return b"\n".join(p.rstrip(b"\n") for p in parts) + b"\n" if parts else b""

    @classmethod
    def default(cls) -> Settings:
        """This process's settings: the one default, for the public entry points alone.

        ``Bottle(...)``, ``Instance.open``, ``instances`` and the operator's
        ``pending_proposals``/``approve`` call it when given no ``settings``; everything
        below them takes ``settings`` as an argument, so it is read once per call chain.
        """
        return cls.from_env()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        home = Path(env.get("BOTTLE_HOME") or Path.home() / ".bottle").expanduser()
        extra = env.get("BOTTLE_EXTRA_CA_CERTS")
        system = next((Path(p) for p in _SYSTEM_CA_BUNDLES if Path(p).is_file()), None)
        return cls(
            home=home.absolute(),
            extra_ca_certs=Path(extra).expanduser() if extra else None,
            base_image=env.get("BOTTLE_BASE_IMAGE") or cls.base_image,
            offline_base=env.get("BOTTLE_OFFLINE_BASE", "") in {"1", "true", "yes"},
            debian_mirror=env.get("BOTTLE_DEBIAN_MIRROR") or cls.debian_mirror,
            system_ca_bundle=system,
            subnet_pool=env.get("BOTTLE_SUBNET_POOL") or cls.subnet_pool,
        )


def home_id(state_root: Path) -> str:
    """The ``bottle.home`` label of what one ``BOTTLE_HOME`` starts (from its state root).

    Two homes on one engine never take each other's instances for orphans.
    """
    import hashlib

    return hashlib.sha256(str(state_root.absolute()).encode()).hexdigest()[:16]


def package_version() -> str:
    """bottle's own version, as installed (labels on images and services)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("bot-bottle")
    except PackageNotFoundError:
        return "0+unknown"
