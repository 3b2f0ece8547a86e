"""Entry point for `mitmdump -s addon/proxy.py`."""

import sys
from pathlib import Path

# mitmproxy loads this file by path; make the `addon` package importable without installing it.
_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from addon.relay import KeyRelay  # noqa: E402

addons = [KeyRelay()]
