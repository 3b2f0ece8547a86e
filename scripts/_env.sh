# Shared by the scripts: find Python 3.12+, create or refresh the virtual environment.
# Sourced, not run. Sets ROOT and VENV, and puts the venv first on PATH.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"

find_python() {
  local candidate
  for candidate in python3.13 python3.12; do
    if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c 'import sys; assert sys.version_info >= (3, 12)' 2>/dev/null; then
      command -v "$candidate"; return 0
    fi
  done
  # pyenv installs that are not the selected global version
  for candidate in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.1[2-9]*/bin/python3; do
    [ -x "$candidate" ] && { echo "$candidate"; return 0; }
  done
  echo "keyrelay needs Python >= 3.12 (python3.12 was not found)" >&2
  return 1
}

# Bytecode for both levels Python runs keyrelay at: `keyrelay` starts Python with PYTHONOPTIMIZE=1
# (addon/cli.py), whose .opt-1.pyc files pip does not write, and with PYTHONDONTWRITEBYTECODE set
# (as on this project's machines) nor does Python: every start compiled mitmproxy and keyrelay
# from source again, about 1.5 s of each start's 2.7 s.
compile_bytecode() {
  "$VENV/bin/python" -m compileall -q -o 0 -o 1 "$1" >/dev/null
}

ensure_venv() {
  local stamp="$VENV/.keyrelay-installed"
  if [ ! -x "$VENV/bin/python" ]; then
    "$(find_python)" -m venv "$VENV"
  fi
  # Reinstall only when the dependency list or its pins changed since the last install.
  if [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ] || [ "$ROOT/constraints.txt" -nt "$stamp" ]; then
    echo "keyrelay: installing Python dependencies into $VENV" >&2
    "$VENV/bin/python" -m pip install -q --upgrade pip >&2
    # constraints.txt: exactly the mitmproxy the engine patches were checked on (addon/engine).
    "$VENV/bin/python" -m pip install -q -c "$ROOT/constraints.txt" -e "$ROOT[${KEYRELAY_EXTRAS:-test}]" >&2
    compile_bytecode "$VENV/lib"
    touch "$stamp"
  fi
  # keyrelay's own modules, when one changed since they were last compiled.
  if [ -n "$(find "$ROOT/addon" -name '*.py' -newer "$stamp.compiled" -print -quit 2>/dev/null || echo stale)" ]; then
    compile_bytecode "$ROOT/addon"
    touch "$stamp.compiled"
  fi
  export PATH="$VENV/bin:$PATH"
}
