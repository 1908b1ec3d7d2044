"""Makes ``oat`` importable from a source checkout that is not pip-installed."""

import sys
from pathlib import Path

try:
    import oat  # noqa: F401
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))
