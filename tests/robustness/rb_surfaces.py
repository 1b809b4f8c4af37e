"""The issue-28 surface cases (cache ownership, export names, device text, special files, hangs,
API doors...) as the robustness benchmark counts them.

They are pytest tests in their own files; :func:`run_surfaces` runs them once in a
child pytest and turns each test case into a ``(id, outcome, detail)`` row: a
passing test is the bad input handled (``clean error``, or ``ok`` for a valid input
that must succeed), a failing one counts in the class of problem it guards.
"""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from rb_cli import CLEAN, DATA_LOSS, FAILED, HANG, MISLEADING, OK, SECURITY, SILENT, TRACEBACK

ROOT = Path(__file__).resolve().parents[2]
FILES = ("tests/robustness/test_surfaces.py", "tests/test_api_doors.py", "tests/cli/test_cache_ownership.py",
         "tests/lut/test_claim_lease.py")  # fmt: skip
# the class a failing test falls in, by a word of its name (first match wins)
_CLASS_BY_WORD = (
    ("cache", DATA_LOSS), ("marks", DATA_LOSS), ("clear", DATA_LOSS), ("latkit_named", DATA_LOSS),
    ("export_name", SECURITY), ("spoof", SECURITY), ("controls", SECURITY),
    ("fifo", HANG), ("endless", HANG), ("never", HANG), ("claim", HANG), ("lease", HANG), ("boot", HANG),
    ("whatever_its_suffix", FAILED), ("full_disk", MISLEADING), ("blamed", MISLEADING), ("named", MISLEADING),
    ("resolution_option", MISLEADING), ("adb_key", MISLEADING),
    ("twice", SILENT), ("serial", SILENT), ("together", SILENT), ("one_way", SILENT),
    ("nonsense", SILENT),
)
_MUST_SUCCEED = ("whatever_its_suffix", "one_way", "fresh_claim")


def _class_of(name: str) -> str:
    return next((cls for word, cls in _CLASS_BY_WORD if word in name), TRACEBACK)


def run_surfaces(junit: Path) -> list[tuple[str, str, str]]:
    """Run the surface tests; one row per test case."""
    junit.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}",
                    *FILES], cwd=ROOT, env=os.environ.copy(), capture_output=True, timeout=1800)  # fmt: skip
    rows = []
    for case in ET.parse(junit).getroot().iter("testcase"):
        name = case.get("name", "")
        failure = case.find("failure") if case.find("failure") is not None else case.find("error")
        if case.find("skipped") is not None:
            continue
        if failure is None:
            rows.append((f"surface {name}", OK if any(w in name for w in _MUST_SUCCEED) else CLEAN, ""))
        else:
            rows.append((f"surface {name}", _class_of(name), (failure.get("message") or "")[:200]))
    return rows
