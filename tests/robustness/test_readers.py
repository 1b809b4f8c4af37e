"""Library readers on bad files: a LatkitError with one line, never another exception."""

from __future__ import annotations

import pytest

from rb_cli import CLEAN, OK
from rb_corpus import reader_cases, run_reader


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in reader_cases()])
def test_reader_case(case, ws, case_dir):
    verdict = run_reader(case, case_dir, ws)
    assert verdict.kind == (OK if case.expect == "ok" else CLEAN), f"{case.id}: {verdict.kind}: {verdict.detail}"
