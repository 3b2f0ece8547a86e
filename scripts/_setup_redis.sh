#!/usr/bin/env bash
# Make sure a real redis-server is installed (the shared-limits tests start their own on a free
# loopback port). Run directly or sourced by scripts/test. Idempotent; quick when present.
# Fails loudly (non-zero exit, message on stderr) when it cannot be installed: never skips.

source "$(dirname "${BASH_SOURCE[0]}")/_apt.sh"

_keyrelay_setup_redis() {
  if command -v redis-server >/dev/null 2>&1; then
    redis-server --version >/dev/null 2>&1 || { echo "keyrelay setup-redis: ERROR: redis-server does not run" >&2; return 1; }
    export KEYRELAY_REDIS_SERVER="$(command -v redis-server)"
    return 0
  fi
  apt_install redis-server ||
    { echo "keyrelay setup-redis: ERROR: redis-server is missing and could not be installed" >&2; return 1; }
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
