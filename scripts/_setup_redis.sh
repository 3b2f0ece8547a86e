#!/usr/bin/env bash
# Make sure a real redis-server is installed (the shared-limits tests start their own on a free
# loopback port). Run directly or sourced by scripts/test. Idempotent; quick when present.
# Fails loudly (non-zero exit, message on stderr) when it cannot be installed: never skips.

_keyrelay_setup_redis() {
  local sudo=""
  if command -v redis-server >/dev/null 2>&1; then
    redis-server --version >/dev/null 2>&1 || { echo "keyrelay setup-redis: ERROR: redis-server does not run" >&2; return 1; }
    export KEYRELAY_REDIS_SERVER="$(command -v redis-server)"
    return 0
  fi
  command -v apt-get >/dev/null 2>&1 ||
    { echo "keyrelay setup-redis: ERROR: redis-server is missing and apt-get is not available to install it" >&2; return 1; }
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null 2>&1 ||
      { echo "keyrelay setup-redis: ERROR: redis-server is missing; installing it needs root (or sudo)" >&2; return 1; }
    sudo="sudo"
  fi
  echo "keyrelay setup-redis: installing Debian redis-server (apt-get)" >&2
  if ! { $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q >&2 &&
         $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends redis-server >&2; }; then
    echo "keyrelay setup-redis: ERROR: apt-get could not install redis-server" >&2; return 1
  fi
  command -v redis-server >/dev/null 2>&1 ||
    { echo "keyrelay setup-redis: ERROR: redis-server was installed but is not on PATH" >&2; return 1; }
  # The package starts a system service on 6379; the tests never use it (they run their own).
  export KEYRELAY_REDIS_SERVER="$(command -v redis-server)"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  _keyrelay_setup_redis
  echo "keyrelay setup-redis: ok ($(redis-server --version))" >&2
else
  _keyrelay_setup_redis || { echo "keyrelay setup-redis: failed" >&2; return 1; }
fi
