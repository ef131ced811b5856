"""Puts the repository root on sys.path so the tests import `devtools` as `make demo` does."""

import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)
