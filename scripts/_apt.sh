# Sourced by the setup scripts (scripts/_setup_*.sh, scripts/bench); defines one function.
#
# apt_install PKG...: install Debian packages with apt-get, as root or through sudo, without prompts.
# `apt-get update` runs once per run: KEYRELAY_APT_UPDATED is exported after the first successful update,
# so later calls in this shell and in scripts it starts skip it.
# Returns non-zero, with the reason on stderr, when the packages cannot be installed.
apt_install() {
  local sudo=""
  [ $# -gt 0 ] || { echo "keyrelay apt: usage: apt_install PKG..." >&2; return 2; }
  command -v apt-get >/dev/null 2>&1 || { echo "keyrelay apt: ERROR: apt-get is not available to install $*" >&2; return 1; }
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "keyrelay apt: ERROR: installing $* needs root (or sudo)" >&2; return 1; }
    sudo="sudo"
  fi
  if [ -z "${KEYRELAY_APT_UPDATED:-}" ]; then
    echo "keyrelay apt: apt-get update" >&2
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q >&2 ||
      { echo "keyrelay apt: ERROR: apt-get update failed" >&2; return 1; }
    export KEYRELAY_APT_UPDATED=1
  fi
  echo "keyrelay apt: installing $* (apt-get)" >&2
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >&2 ||
    { echo "keyrelay apt: ERROR: apt-get could not install $*" >&2; return 1; }
}
