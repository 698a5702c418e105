# The agent image of the "shell" provider: a plain Debian userland, no AI agent.
# Built by bottle.engine.images; the context holds host-ca.pem.
ARG BASE=python:3.13-slim
FROM ${BASE}

# The host's CA bundle, for build steps of images built on this one (custom agents):
# e.g. `RUN NODE_EXTRA_CA_CERTS=/etc/bottle/host-ca.pem npm install -g …`.
COPY host-ca.pem /etc/bottle/host-ca.pem

# Plain-HTTP Debian mirrors need no CA; python3 comes from Debian unless the base has one.
RUN set -eu; \
    pkgs="bash curl git ca-certificates procps iproute2 less openssh-client"; \
    command -v python3 >/dev/null || pkgs="$pkgs python3"; \
    apt-get update; \
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $pkgs; \
    apt-get clean; \
    rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin; \
    chmod 0644 /etc/bottle/host-ca.pem; \
    mkdir -p /home/agent /workspace; \
    chmod 1777 /home/agent

# The agent may run as the host user's uid, which has no passwd entry: HOME is set here.
ENV HOME=/home/agent
WORKDIR /workspace

# Last: at run time the system store holds only the bottle's own CA (/run/bottle/ca is
# bind-mounted read-only), so the agent trusts nothing but its bottle's egress.
RUN ln -sf /run/bottle/ca/ca.pem /etc/ssl/certs/ca-certificates.crt
CMD ["sleep", "infinity"]
