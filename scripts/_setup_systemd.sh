#!/usr/bin/env bash
# Make sure `systemd-analyze` is installed (tests/e2e/test_deploy.py verifies deploy/keyrelay.service
# with it; nothing here runs systemd itself). Run directly or sourced by scripts/test.
# Idempotent; quick when present. Fails loudly when it cannot be installed: never skips.

source "$(dirname "${BASH_SOURCE[0]}")/_apt.sh"

_keyrelay_setup_systemd() {
  if ! command -v systemd-analyze >/dev/null 2>&1; then
    apt_install systemd ||
      { echo "keyrelay setup-systemd: ERROR: systemd-analyze is missing and could not be installed" >&2; return 1; }
  fi
  systemd-analyze --version >/dev/null 2>&1 ||
    { echo "keyrelay setup-systemd: ERROR: systemd-analyze does not run" >&2; return 1; }
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  _keyrelay_setup_systemd
  echo "keyrelay setup-systemd: ok ($(systemd-analyze --version | head -1))" >&2
else
  _keyrelay_setup_systemd || { echo "keyrelay setup-systemd: failed" >&2; return 1; }
fi
