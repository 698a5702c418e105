#!/usr/bin/env bash
# bottle's main job on a fresh machine: set up, then one headless agent run that shows an
# allowed and a refused request.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-docker.sh
command -v uv >/dev/null || pip install --quiet uv
uv sync --frozen --quiet
export BOTTLE_HOME="${BOTTLE_HOME:-$PWD/.demo-home}"
mkdir -p "$BOTTLE_HOME"
cp -rn examples/bottles examples/agents "$BOTTLE_HOME"/
# The agent runs as the owner of the directory it starts in, and never as root by accident:
# run from a workspace of the invoking user (uid 1000 when the demo runs as root).
workspace="$(mktemp -d)"
if [ "$(id -u)" = 0 ]; then chown 1000:1000 "$workspace"; fi
bottle="$PWD/.venv/bin/bottle"
cd "$workspace"
"$bottle" run prober -- sh -c '
  echo "--- allowed: https://pypi.org/simple/pip/ (GET, in the demo bottle routes)"
  curl -sS -o /dev/null -w "HTTP %{http_code}\n" https://pypi.org/simple/pip/
  echo "--- refused: https://example.com/ (no route)"
  curl -sS -w "\nHTTP %{http_code}\n" https://example.com/
  echo "--- direct, around the proxy (no route exists)"
  curl -sS --noproxy "*" -m 5 http://192.0.2.1/ || echo "failed, as it must"
'
cd - >/dev/null
rmdir "$workspace" 2>/dev/null || true
