"""Every named bad input of every CLI command (rb_corpus, rb_commands): one error line, exit != 0,
no traceback or hang.

A case runs in-process unless it ``needs_process`` (then in a subprocess). Cases that
can run long when the input is (wrongly) accepted are marked slow.
"""

from __future__ import annotations

import pytest

from rb_cli import CLEAN, OK
from rb_commands import suite_cases
from rb_corpus import cli_cases, release_sockets, run_case

pytestmark = pytest.mark.slow

CASES = cli_cases() + suite_cases()


@pytest.mark.parametrize("case", [
    pytest.param(c, id=c.id, marks=[pytest.mark.slow] if c.timeout > 30 or c.slow else [])
    for c in CASES
])
def test_cli_case(case, ws, case_dir, in_process):
    try:
        verdict = run_case(case, case_dir, ws, in_process)
    finally:
        release_sockets()
    want = OK if case.expect == "ok" else CLEAN
    res = verdict.result
    assert verdict.kind == want, (
        f"{case.id}: {verdict.kind}: {verdict.detail}\n"
        f"argv: {res.argv if res else '?'}\nstderr tail: {res.stderr[-1500:] if res else ''}")
