#!/bin/sh
# Install keyrelay into its own virtual environment: deploy/install.sh PREFIX [SOURCE]
# PREFIX/bin/keyrelay is then the command (addon/cli.py). SOURCE is a keyrelay checkout (default:
# the one this script is in). The container image (deploy/Dockerfile) runs exactly this, as
# does a systemd host (docs/deploy.md); tests/e2e/test_deploy.py runs it into a temporary PREFIX.
# The pins in constraints.txt are the mitmproxy keyrelay's engine patches were checked on.
set -eu
prefix="$1"
source="${2:-$(cd "$(dirname "$0")/.." && pwd)}"
"${PYTHON:-python3}" -m venv "$prefix"
"$prefix/bin/python" -m pip install --no-cache-dir --quiet -c "$source/constraints.txt" "$source"
# Compiled now: a read-only root filesystem cannot take the .pyc files later.
"$prefix/bin/python" -m compileall -q -o 0 -o 1 "$prefix/lib" >/dev/null
"$prefix/bin/keyrelay" --version >/dev/null
