#!/bin/sh
# Host key and the client's public key from /keys; one repository with one commit on main.
set -eu
install -m 600 /keys/host_ed25519 /etc/ssh/ssh_host_ed25519_key
# As public hosts do: a client may ask for protocol v2 over ssh.
grep -q '^AcceptEnv GIT_PROTOCOL' /etc/ssh/sshd_config || echo 'AcceptEnv GIT_PROTOCOL' >> /etc/ssh/sshd_config
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
# Upstream's own rule, so a test can see the gate pass upstream's rejection on.
cat > /srv/git/repo.git/hooks/pre-receive <<'HOOK'
#!/bin/sh
while read old new ref; do
    case "$ref" in refs/heads/protected*) echo "upstream says no to $ref" >&2; exit 1;; esac
done
HOOK
chmod 755 /srv/git/repo.git/hooks/pre-receive
chown -R git:git /srv/git
# The same repositories over HTTPS (git http-backend), when the test gave a certificate.
if [ -s /keys/server.pem ]; then
    git config --system safe.directory '*'
    python3 /srv/https_git.py &
fi
exec /usr/sbin/sshd -D -e -o PasswordAuthentication=no -o AllowUsers=git \
    -o HostKey=/etc/ssh/ssh_host_ed25519_key
