#!/bin/sh
# Host key and the client's public key from /keys; one repository with one commit on main.
set -eu
install -m 600 /keys/host_ed25519 /etc/ssh/ssh_host_ed25519_key
install -d -m 700 /srv/git/.ssh
install -m 600 /keys/client.pub /srv/git/.ssh/authorized_keys
if [ ! -d /srv/git/repo.git ]; then
    git init -q --bare -b main /srv/git/repo.git
    tmp=$(mktemp -d)
    git -C "$tmp" init -q -b main
    echo hello > "$tmp/README"
    git -C "$tmp" add README
    git -C "$tmp" -c user.name=up -c user.email=up@test commit -qm init
    git -C "$tmp" push -q /srv/git/repo.git main
    rm -rf "$tmp"
fi
chown -R git:git /srv/git
# The same repositories over HTTPS (git http-backend), when the test gave a certificate.
if [ -s /keys/server.pem ]; then
    git config --system safe.directory '*'
    python3 /srv/https_git.py &
fi
exec /usr/sbin/sshd -D -e -o PasswordAuthentication=no -o AllowUsers=git \
    -o HostKey=/etc/ssh/ssh_host_ed25519_key
