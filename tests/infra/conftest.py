"""Make the repo root importable, for `tests.pulumi_harness` and the program's own packages."""

import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)
