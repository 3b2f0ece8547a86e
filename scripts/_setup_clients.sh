#!/usr/bin/env bash
# Prepare the real-client conformance environment: Debian's chromium and the Node clients in tests/clients.
# Sourced by scripts/test (or run directly). Idempotent and quick when everything is already in place.
# Fails loudly (non-zero exit, message on stderr) when something cannot be installed; it never skips silently.
#   - chromium: `apt_install chromium` (scripts/_apt.sh) only when /usr/bin/chromium is missing.
#   - node clients: `npm ci` in tests/clients (and tests/clients/cesdk: the CE.SDK editor with its assets and
#     AI plugins, ~70 MB, served to Chromium from there, never from IMG.LY's CDN) when node_modules is missing
#     or older than package-lock.json.
# Browsers are never downloaded by npm (PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1): playwright-core drives /usr/bin/chromium.

source "$(dirname "${BASH_SOURCE[0]}")/_apt.sh"

_keyrelay_setup_clients() {
  local root clients chromium=/usr/bin/chromium stamp
  root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  clients="$root/tests/clients"
  stamp="$clients/node_modules/.keyrelay-installed"

  _kr_fail() { echo "keyrelay setup-clients: ERROR: $*" >&2; return 1; }
  # `npm ci` in a directory when its node_modules is missing or older than its package files;
  # then each module named must be there.
  _kr_npm_ci() {
    local dir="$1" mod; shift
    local stamp="$dir/node_modules/.keyrelay-installed"
    [ -f "$dir/package-lock.json" ] || { _kr_fail "$dir/package-lock.json is missing"; return 1; }
    if [ ! -f "$stamp" ] || [ "$dir/package-lock.json" -nt "$stamp" ] || [ "$dir/package.json" -nt "$stamp" ]; then
      echo "keyrelay setup-clients: npm ci in $dir" >&2
      if ! (cd "$dir" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error >&2); then
        _kr_fail "npm ci failed in $dir"; return 1
      fi
      touch "$stamp"
    fi
    for mod in "$@"; do
      [ -f "$dir/node_modules/$mod/package.json" ] || { _kr_fail "node module $mod is missing after npm ci in $dir"; return 1; }
    done
  }

  # --- chromium (Debian package) ---
  if [ ! -x "$chromium" ]; then
    apt_install chromium || { _kr_fail "$chromium is missing and could not be installed"; return 1; }
    [ -x "$chromium" ] || { _kr_fail "chromium was installed but $chromium does not exist"; return 1; }
  fi
  "$chromium" --version >/dev/null 2>&1 || { _kr_fail "$chromium does not run ($chromium --version failed)"; return 1; }

  # --- node + npm ---
  command -v node >/dev/null 2>&1 || { _kr_fail "node is not installed (needs Node >= 20)"; return 1; }
  command -v npm >/dev/null 2>&1 || { _kr_fail "npm is not installed"; return 1; }
  node -e 'process.exit(+process.versions.node.split(".")[0] >= 20 ? 0 : 1)' ||
    { _kr_fail "Node >= 20 is needed, found $(node --version)"; return 1; }

  # --- node_modules: the clients, and apart the CE.SDK editor with its AI plugins ---
  _kr_npm_ci "$clients" @fal-ai/client @google/genai @inferencesh/sdk @openai/agents-realtime playwright-core esbuild ||
    return 1
  _kr_npm_ci "$clients/cesdk" @cesdk/cesdk-js @cesdk/engine @imgly/plugin-ai-image-generation-web \
    @imgly/plugin-ai-video-generation-web @imgly/plugin-ai-audio-generation-web @imgly/plugin-ai-text-generation-web || return 1

  # --- browser bundle of @fal-ai/client (built locally from node_modules with esbuild; not committed) ---
  local bundle="$clients/browser/fal-client.js"
  if [ ! -f "$bundle" ] || [ "$stamp" -nt "$bundle" ] || [ "$clients/browser/build.mjs" -nt "$bundle" ]; then
    (cd "$clients" && node browser/build.mjs >&2) || { _kr_fail "building $bundle failed"; return 1; }
  fi
  export KEYRELAY_CHROMIUM="$chromium"
  export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  # Run as a script.
  set -euo pipefail
  _keyrelay_setup_clients
  echo "keyrelay setup-clients: ok ($(/usr/bin/chromium --version 2>/dev/null), node $(node --version))" >&2
else
  # Sourced: fail the caller loudly as well.
  _keyrelay_setup_clients || { echo "keyrelay setup-clients: failed" >&2; return 1; }
fi
