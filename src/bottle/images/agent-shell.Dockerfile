# The agent image of the "shell" provider: a plain Debian userland, no AI agent.
# Built by bottle.engine.images; the context holds host-ca.pem.
ARG BASE=python:3.13-slim
FROM ${BASE}

# The host's CA bundle, for build steps of images built on this one (custom agents):
# e.g. `RUN NODE_EXTRA_CA_CERTS=/etc/bottle/host-ca.pem npm install -g …`.
COPY host-ca.pem /etc/bottle/host-ca.pem

# Plain-HTTP Debian mirrors need no CA; python3 comes from Debian unless the base has one.
# git depends on perl, whose library and modules (about 54 MB) only git's perl commands use
# (send-email, svn, cvs*, archimport, instaweb); perl-base's stays, for perl -e and debconf.
# Nor does an agent serve git (daemon, http-backend, shell, WebDAV http-push), mail patches
# over IMAP, run scalar or fetch with the standalone walker (git-remote-http fetches over
# dumb HTTP itself; http-fetch serves only packfile URIs a client opts into): about 21 MB.
# iproute2's tools beyond ip and ss configure what a bottle's agent, without capabilities,
# may not change (traffic control, devlink, RDMA, DCB, TIPC, vDPA, bridges): about 2 MB.
# dpkg leaves these files out by configuration, so its database says why they are absent,
# and the config stays for every later install on this image (custom agents, capabilities).
# One that needs the whole of perl:
#   RUN rm /etc/dpkg/dpkg.cfg.d/bottle-agent-shell && apt-get update && \
#       apt-get install -y --reinstall perl-modules-5.40 libperl5.40
RUN set -eu; \
    printf '%s\n' \
        'path-exclude=/usr/share/perl/*' 'path-exclude=/usr/lib/*/perl/*' \
        'path-exclude=/usr/lib/*/libperl.so*' \
        'path-exclude=/usr/lib/git-core/git-daemon' \
        'path-exclude=/usr/lib/git-core/git-http-fetch' \
        'path-exclude=/usr/lib/git-core/git-http-backend' \
        'path-exclude=/usr/lib/git-core/git-http-push' \
        'path-exclude=/usr/lib/git-core/git-imap-send' \
        'path-exclude=/usr/lib/git-core/git-shell' 'path-exclude=/usr/bin/git-shell' \
        'path-exclude=/usr/lib/git-core/scalar' 'path-exclude=/usr/bin/scalar' \
        'path-exclude=/usr/share/gitweb/*' \
        'path-exclude=/usr/sbin/tc' 'path-exclude=/usr/lib/tc/*' 'path-exclude=/usr/sbin/devlink' \
        'path-exclude=/usr/bin/rdma' 'path-exclude=/usr/sbin/dcb' 'path-exclude=/usr/sbin/tipc' \
        'path-exclude=/usr/sbin/vdpa' 'path-exclude=/usr/sbin/genl' 'path-exclude=/usr/sbin/bridge' \
        > /etc/dpkg/dpkg.cfg.d/bottle-agent-shell; \
    pkgs="bash curl git ca-certificates procps iproute2 less openssh-client"; \
    command -v python3 >/dev/null || pkgs="$pkgs python3"; \
    apt-get update; \
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $pkgs; \
    apt-get clean; \
    # dpkg's and debconf's backups of their databases, which they write again on each run.
    rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/lib/dpkg/*-old /var/cache/debconf/*-old; \
    # git ships /usr/bin/git and /usr/lib/git-core/git as two copies of one program (4 MB):
    # one file under both names. dpkg replaces a file by renaming a new one over it, so an
    # upgrade only splits them again.
    if cmp -s /usr/bin/git /usr/lib/git-core/git; then ln -f /usr/bin/git /usr/lib/git-core/git; fi; \
    chmod 0644 /etc/bottle/host-ca.pem; \
    mkdir -p /home/agent /workspace; \
    chmod 1777 /home/agent; \
    # What a shell agent's user expects still runs without the files left out.
    git --version >/dev/null; git init -q /tmp/bottle-check; \
    git -C /tmp/bottle-check -c user.name=b -c user.email=b@b commit -q --allow-empty -m b; \
    git clone -q /tmp/bottle-check /tmp/bottle-check-clone; rm -rf /tmp/bottle-check*; \
    ssh -V 2>/dev/null; curl --version >/dev/null; ps -p 1 >/dev/null; ip -V >/dev/null; ss -V >/dev/null; \
    less --version >/dev/null; perl -e 'use strict; use POSIX ();'; \
    python3 -c 'import ssl, json, sqlite3, venv'

# The agent may run as the host user's uid, which has no passwd entry: HOME is set here.
ENV HOME=/home/agent
WORKDIR /workspace

# Last: at run time the system store holds only the bottle's own CA (/run/bottle/ca is
# bind-mounted read-only), so the agent trusts nothing but its bottle's egress.
RUN ln -sf /run/bottle/ca/ca.pem /etc/ssl/certs/ca-certificates.crt
CMD ["sleep", "infinity"]
