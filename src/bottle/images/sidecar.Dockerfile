# The image every bottle sidecar runs (egress, git-gate, supervise).
# Built by bottle.engine.images; the context holds host-ca.pem, sidecar-requirements.txt and
# the bottle modules the sidecars run (bottle.images.sources).
ARG BASE=python:3.13-slim
FROM ${BASE} AS build

# The CA bundle of the host (its system bundle plus BOTTLE_EXTRA_CA_CERTS): egress trusts it
# towards upstream servers, and the build steps below trust it to reach PyPI.
COPY host-ca.pem /etc/bottle/host-ca.pem

# Plain-HTTP Debian mirrors need no CA. Debian's python3 is "externally managed", so the
# Python packages go into a venv; add python3-venv when the base lacks it.
# git depends on perl's modules (about 50 MB) for commands no sidecar runs (send-email, svn,
# instaweb, cvs): dpkg leaves their files out. Nothing is built on this image, so no later
# install can find them missing; perl-base (debconf's) stays whole.
RUN set -eu; \
    pkgs="git openssh-client ca-certificates bash gitleaks libnss-wrapper"; \
    python3 -c 'import ensurepip, venv' 2>/dev/null || pkgs="$pkgs python3 python3-venv"; \
    printf '%s\n' 'path-exclude=/usr/share/perl/*' 'path-exclude=/usr/lib/*/perl/*' \
        > /etc/dpkg/dpkg.cfg.d/bottle-no-perl-modules; \
    apt-get update; \
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $pkgs; \
    # binutils only strips the wheels' shared objects below; what it pulls in is noted here
    # and purged after, so nothing of it reaches the final stage.
    dpkg-query -W -f '${Package}\n' | sort > /tmp/bottle-pkgs; \
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends binutils; \
    dpkg-query -W -f '${Package}\n' | sort | comm -13 /tmp/bottle-pkgs - > /tmp/bottle-strip-pkgs; \
    apt-get clean; \
    rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin; \
    if [ ! -s /etc/bottle/host-ca.pem ]; then \
        cp /etc/ssl/certs/ca-certificates.crt /etc/bottle/host-ca.pem; \
    fi; \
    chmod 0644 /etc/bottle/host-ca.pem

# Before the bottle source, so a code change rebuilds only the last layer. Exactly the
# versions (and hashes) of uv.lock's sidecar group, the ones the unit tests run against.
COPY sidecar-requirements.txt /etc/bottle/sidecar-requirements.txt
RUN set -eu; \
    python3 -m venv /opt/venv; \
    PIP_CERT=/etc/bottle/host-ca.pem SSL_CERT_FILE=/etc/bottle/host-ca.pem \
    PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 \
    /opt/venv/bin/pip install --require-hashes --no-deps \
        -r /etc/bottle/sidecar-requirements.txt; \
    # Not needed to run anything (about 28 MB with their bytecode): pip itself, and what only
    # mitmproxy's console and web UIs import (mitmdump never does).
    /opt/venv/bin/python -m pip uninstall --yes --quiet pip tornado urwid wcwidth; \
    # Their import code then cannot run (tornado, urwid are gone): mitmweb's and the console's
    # modules and the web UI's static files (about 2 MB). mitmproxy-linux-redirector is the
    # helper of mitmproxy's "local" mode only (egress listens in regular and reverse modes).
    rm -rf /opt/venv/lib/python3*/site-packages/mitmproxy/tools/web \
        /opt/venv/lib/python3*/site-packages/mitmproxy/tools/console \
        /opt/venv/bin/mitmweb /opt/venv/bin/mitmproxy /opt/venv/bin/mitmproxy-linux-redirector; \
    # Some wheels ship their shared objects with symbol tables and debug sections (brotli's
    # is 5 MB, 0.9 MB without; cryptography's 14 MB, 11 MB): about 9 MB in all. Stripping
    # keeps the dynamic symbols the loader and Python's import (PyInit_*) need.
    find /opt/venv -type f -name '*.so*' -exec strip --strip-unneeded {} +; \
    DEBIAN_FRONTEND=noninteractive apt-get purge -y $(cat /tmp/bottle-strip-pkgs); \
    rm -f /tmp/bottle-pkgs /tmp/bottle-strip-pkgs

# What no sidecar runs, gone from the one layer the final stage copies (a removal in a
# later layer would only hide the files: the image would stay as big). Nothing installs on
# this image, so apt, dpkg and their databases go; perl (debconf's) with them; glibc's
# iconv modules (UTF-8 and ASCII are built in); Python's tests, docs and wheels; the git
# programs the gate never starts (it serves pushes with http-backend, fetches over ssh or
# https). About 55 MB.
RUN set -eu; \
    rm -rf /usr/share/python-wheels /usr/lib/python3*/test /usr/local/lib/python3*/test \
        /usr/lib/python3*/pydoc_data /usr/local/lib/python3*/pydoc_data \
        /usr/lib/python3*/idlelib /usr/local/lib/python3*/idlelib \
        /usr/lib/python3*/ensurepip /usr/local/lib/python3*/ensurepip \
        /usr/lib/x86_64-linux-gnu/gconv/*.so /usr/lib/aarch64-linux-gnu/gconv/*.so \
        /usr/lib/git-core/git-daemon /usr/lib/git-core/git-imap-send \
        /usr/lib/git-core/git-http-push /usr/lib/git-core/git-http-fetch \
        /usr/lib/git-core/git-shell /usr/lib/git-core/scalar /usr/share/gitweb \
        /usr/bin/perl* /usr/lib/*/perl-base /usr/lib/*/libperl.so* /usr/share/perl* \
        /usr/bin/apt* /usr/lib/apt /usr/lib/*/libapt-* /etc/apt /var/lib/apt /var/cache/apt \
        /var/cache/debconf /var/log/* /var/lib/dpkg /usr/bin/dpkg* /usr/share/dpkg \
        /etc/dpkg /usr/share/bash-completion /usr/share/lintian /usr/share/info \
        /usr/bin/scalar /usr/bin/git-shell /usr/bin/sqv /usr/bin/localedef /usr/bin/zipdetails \
        /usr/bin/openssl /usr/lib/git-core/git-sh-i18n--envsubst \
        /usr/lib/python3*/lib-dynload/_test* /usr/lib/python3*/lib-dynload/_ctypes_test* \
        /usr/lib/python3*/lib-dynload/_xxtestfuzz* /usr/lib/python3*/lib-dynload/xx* \
        /usr/local/lib/python3*/lib-dynload/_test* /usr/local/lib/python3*/lib-dynload/_ctypes_test* \
        /usr/local/lib/python3*/lib-dynload/_xxtestfuzz* /usr/local/lib/python3*/lib-dynload/xx*; \
    # Nothing a sidecar starts lives in /usr/sbin (user and group editing, block devices,
    # ldconfig: the loader reads the cache ldconfig left) or is one of util-linux's listers;
    # no sidecar opens an sqlite database; /usr/share/doc is read by no program.
    rm -rf /usr/sbin/* /usr/share/doc/* \
        /usr/bin/lsblk /usr/bin/lscpu /usr/bin/findmnt /usr/bin/lslogins /usr/bin/lsns \
        /usr/bin/lsipc /usr/bin/lsmem /usr/bin/lslocks /usr/bin/partx /usr/bin/wdctl \
        /usr/lib/python3*/lib-dynload/_sqlite3* /usr/local/lib/python3*/lib-dynload/_sqlite3* \
        /usr/lib/python3*/sqlite3 /usr/local/lib/python3*/sqlite3 /usr/lib/*/libsqlite3.so*; \
    # Of each installed distribution, what importlib.metadata reads (METADATA for versions,
    # entry_points.txt for plugins, top_level.txt) stays; RECORD (pip's uninstall list, pip
    # is gone) and the license copies go (about 3 MB), and so do type stubs and C sources.
    find /opt/venv/lib/python3*/site-packages/*.dist-info -mindepth 1 -maxdepth 1 \
        ! -name METADATA ! -name entry_points.txt ! -name top_level.txt -exec rm -rf {} +; \
    find /opt/venv/lib/python3*/site-packages -type f \( -name '*.pyi' -o -name '*.c' \) -delete; \
    # Python's standard library and the third-party packages without their sources: the
    # bytecode beside each module instead of the source plus __pycache__ (about 30 MB).
    # Tracebacks then show file and line only; bottle's own modules keep their source.
    for dir in /opt/venv/lib/python3*/site-packages /usr/lib/python3.* /usr/local/lib/python3.*; do \
        [ -d "$dir" ] || continue; \
        /opt/venv/bin/python -m compileall -q -b -j 0 "$dir" >/dev/null || true; \
        find "$dir" -name '*.py' -exec sh -c \
            'for f; do if [ -f "${f}c" ]; then rm "$f"; fi; done' sh {} +; \
        find "$dir" -name __pycache__ -type d -prune -exec rm -rf {} +; \
    done; \
    # The standard library's bytecode deflated into the zip every Python already has first on
    # sys.path (about 7 MB less). Extension modules (lib-dynload) and site-packages stay
    # files; os.pyc stays too: the interpreter finds its prefix by it.
    /opt/venv/bin/python -I -c "$(printf '%s\n' \
        'import os, sys, sysconfig, zipfile' \
        'stdlib = sysconfig.get_path("stdlib")' \
        'target = next(p for p in sys.path if p.endswith(".zip"))' \
        'keep = {"lib-dynload", "site-packages", "dist-packages"}' \
        'with zipfile.ZipFile(target, "x", zipfile.ZIP_DEFLATED, compresslevel=9) as z:' \
        '    for root, dirs, files in os.walk(stdlib):' \
        '        dirs[:] = sorted(d for d in dirs if d not in keep and not d.startswith("config-"))' \
        '        if root != stdlib: z.mkdir(os.path.relpath(root, stdlib))' \
        '        for name in sorted(files):' \
        '            path = os.path.join(root, name)' \
        '            rel = os.path.relpath(path, stdlib)' \
        '            if rel in ("LICENSE.txt", "EXTERNALLY-MANAGED"): continue' \
        '            z.write(path, rel)' \
        '            if rel != "os.pyc": os.remove(path)' \
        )"; \
    # Likewise the packages that are bytecode alone (no data files, no extension modules, so
    # nothing of theirs looks for a file beside it): pydantic, mcp, ldap3, anyio... (about
    # 7 MB less), in a zip a .pth puts on sys.path; their dist-info stays for metadata. The
    # zip has entries for directories too: zipimport finds namespace packages (ruamel) by them.
    /opt/venv/bin/python -I -c "$(printf '%s\n' \
        'import os, shutil, sysconfig, zipfile' \
        'site = sysconfig.get_path("purelib")' \
        'target = os.path.join(os.path.dirname(site), "site-packages.zip")' \
        'with zipfile.ZipFile(target, "x", zipfile.ZIP_DEFLATED, compresslevel=9) as z:' \
        '    for name in sorted(os.listdir(site)):' \
        '        top = os.path.join(site, name)' \
        '        if not os.path.isdir(top) or name.endswith(".dist-info"): continue' \
        '        files = sorted(os.path.join(r, f) for r, _, fs in os.walk(top) for f in fs)' \
        '        if not files or not all(f.endswith((".pyc", "py.typed")) for f in files): continue' \
        '        for root, _, _ in sorted(os.walk(top)): z.mkdir(os.path.relpath(root, site))' \
        '        for f in files: z.write(f, os.path.relpath(f, site))' \
        '        shutil.rmtree(top)' \
        'with open(os.path.join(site, "bottle-zipped.pth"), "x") as pth: print(target, file=pth)' \
        )"; \
    find /usr/lib/python3* /usr/local/lib/python3* -depth -type d -empty -delete 2>/dev/null || true; \
    git --version >/dev/null; ssh -V 2>/dev/null; gitleaks version >/dev/null; \
    # Every extension module of site-packages still loads once stripped, and the sidecars'
    # entry points import from the zipped standard library.
    /opt/venv/bin/python -I -c "$(printf '%s\n' \
        'import importlib, pathlib, sysconfig' \
        'site = pathlib.Path(sysconfig.get_path("purelib"))' \
        'for so in sorted(site.rglob("*.so")):' \
        '    parts = so.relative_to(site).parts' \
        '    importlib.import_module(".".join((*parts[:-1], parts[-1].split(".")[0])))' \
        'import mitmproxy.tools.dump, mitmproxy.addons, mcp.server.fastmcp, pydantic, ruamel.yaml' \
        'import importlib.metadata as md; md.version("mcp"); md.entry_points()' \
        )"

# One layer: the base's files this image does not need are not in it.
FROM scratch
COPY --from=build / /
# PYDANTIC_DISABLE_PLUGINS: pydantic looks for plugins among every installed distribution's
# entry points when it builds its first validator (about 3 % of a sidecar's start-up CPU);
# the image installs none.
ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    LANG=C.UTF-8 \
    PYDANTIC_DISABLE_PLUGINS=__all__ \
    PYTHONPATH=/opt/bottle \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

COPY bottle /opt/bottle/bottle
# bottle's own modules compiled here, sources kept (tracebacks): on the read-only root, with
# PYTHONDONTWRITEBYTECODE, each sidecar start compiled them again (about 0.08 s of egress's).
# unchecked-hash: nothing changes them under an image.
RUN ["/opt/venv/bin/python", "-m", "compileall", "-q", "--invalidation-mode", "unchecked-hash", "/opt/bottle"]
