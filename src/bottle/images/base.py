"""The recipe of the Debian base bottle makes with mmdebstrap where no base can be pulled.

Pure data and its hash, apart from the engine that runs mmdebstrap: every image built on the
base puts the recipe's ref in its own tag (``bottle.images.ImageSpec``), so a new recipe
rebuilds the images made on the old base instead of reusing them.
"""

from __future__ import annotations

import hashlib
import json

#: Where locally made base images go: ``bottle-base:trixie-<hash of the recipe>``.
BASE_REPO = "bottle-base"
SUITE = "trixie"
VARIANT = "minbase"
INCLUDE = ("python3", "python3-venv", "ca-certificates", "bash")
#: Left out of the base, and of every package installed on it later (like Debian's slim images).
DPKG_OPTS = (
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/locale/*",
    "path-include=/usr/share/locale/locale.alias",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/groff/*",
    "path-exclude=/usr/share/lintian/*",
    "path-exclude=/usr/share/linda/*",
    # Extension modules only Python's own test suite imports. Its .py files stay: python3.13's
    # postinst byte-compiles them (and pydoc_data) by name and fails when one is absent.
    # dpkg's "*" also matches "/": the version is spelled out so no package's files match.
    "path-exclude=/usr/lib/python3.[0-9]*/lib-dynload/_test*",
    "path-exclude=/usr/lib/python3.[0-9]*/lib-dynload/_ctypes_test*",
    "path-exclude=/usr/lib/python3.[0-9]*/lib-dynload/_xxtestfuzz*",
    "path-exclude=/usr/lib/python3.[0-9]*/lib-dynload/xx*",
    # glibc's EBCDIC and other IBM code pages (3.6 MB); the DOS ones stay.
    "path-exclude=/usr/lib/*/gconv/IBM*",
    "path-include=/usr/lib/*/gconv/IBM437.so",
    "path-include=/usr/lib/*/gconv/IBM850.so",
    "path-include=/usr/lib/*/gconv/IBM852.so",
    "path-include=/usr/lib/*/gconv/IBM866.so",
)
BASE_CHANGES = (
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "ENV LANG=C.UTF-8",
    'CMD ["bash"]',
)


def made_base_ref(mirror: str) -> str:
    """``bottle-base:trixie-<hash>`` of the base made from ``mirror``: a hash of the recipe."""
    recipe = {
        "suite": SUITE,
        "variant": VARIANT,
        "include": list(INCLUDE),
        "dpkgopt": list(DPKG_OPTS),
        "mirror": mirror,
        "changes": list(BASE_CHANGES),
    }
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]
    return f"{BASE_REPO}:{SUITE}-{digest}"
