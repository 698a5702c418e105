# The image every bottle sidecar runs (egress, git-gate, supervise).
# Built by bottle.engine.images; the context holds host-ca.pem, sidecar-requirements.txt and
# the bottle modules the sidecars run (bottle.images.sources).
ARG BASE=python:3.13-slim
FROM ${BASE}

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
    /opt/venv/bin/python -m pip uninstall --yes --quiet pip tornado urwid wcwidth

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/opt/bottle \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

COPY bottle /opt/bottle/bottle
