"""Makes the shared test helpers in this folder (``cli_checks``) importable from every test module."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
