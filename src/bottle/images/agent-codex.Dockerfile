# The agent image of the "codex" provider: the shell provider's userland plus Codex.
# Built by bottle.engine.images; the context holds host-ca.pem.
ARG BASE=python:3.13-slim
FROM ${BASE}

ARG CODEX_VERSION=0.171.0

# The host's CA bundle: npm trusts it to reach its registry during this build, and images
# built on this one (custom agents) can do the same.
COPY host-ca.pem /etc/bottle/host-ca.pem

# Plain-HTTP Debian mirrors need no CA; python3 comes from Debian unless the base has one.
RUN set -eu; \
    pkgs="bash curl git ca-certificates procps iproute2 less openssh-client nodejs npm"; \
    command -v python3 >/dev/null || pkgs="$pkgs python3"; \
    apt-get update; \
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $pkgs; \
    apt-get clean; \
    rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin; \
    chmod 0644 /etc/bottle/host-ca.pem; \
    mkdir -p /home/agent /workspace; \
    chmod 1777 /home/agent

RUN set -eu; \
    if [ -s /etc/bottle/host-ca.pem ]; then \
        export NODE_EXTRA_CA_CERTS=/etc/bottle/host-ca.pem npm_config_cafile=/etc/bottle/host-ca.pem; \
    fi; \
    npm install -g --no-fund --no-audit --no-update-notifier @openai/codex@${CODEX_VERSION}; \
    npm cache clean --force; \
    rm -rf /root/.npm; \
    codex --version

# The agent may run as the host user's uid, which has no passwd entry: HOME is set here.
ENV HOME=/home/agent
WORKDIR /workspace

# Last: at run time the system store holds only the bottle's own CA (/run/bottle/ca is
# bind-mounted read-only), so the agent trusts nothing but its bottle's egress.
RUN ln -sf /run/bottle/ca/ca.pem /etc/ssl/certs/ca-certificates.crt
CMD ["sleep", "infinity"]
