"""Generated bad inputs (hypothesis): absurd numbers, bad fields, garbage output, odd paths.

Bounded example counts, no shrinking (an example can be a subprocess), no example database.
Each example runs in-process unless its case ``needs_process``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings

from rb_cli import CLEAN, OK
from rb_corpus import FAMILIES, release_sockets, run_case


def _family_test(family):
    @settings(max_examples=family.test_examples, deadline=None, database=None, derandomize=True,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(value=family.strategy)
    def test(ws, in_process, value):
        case = family.to_case(value)
        with tempfile.TemporaryDirectory(prefix="rb-gen-") as tmp:
            try:
                verdict = run_case(case, Path(tmp) / "case", ws, in_process)
            finally:
                release_sockets()
        want = OK if case.expect == "ok" else CLEAN
        res = verdict.result
        assert verdict.kind == want, (f"{case.id}: {verdict.kind}: {verdict.detail}\n"
                                      f"stderr tail: {res.stderr[-1000:] if res else ''}")

    return test


SLOW_FAMILIES = {"absurd numeric options", "unknown names"}

for _family in FAMILIES:
    _name = "test_" + _family.name.replace(" ", "_").replace("-", "_")
    _t = _family_test(_family)
    _t.__name__ = _name
    if _family.name in SLOW_FAMILIES:
        _t = pytest.mark.slow(_t)
    globals()[_name] = _t
