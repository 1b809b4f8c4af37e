"""Every Python API verb and argument with wrong types and values (rb_api): refused at the door with
one line (a ``LatkitError``, or Python's own signature ``TypeError``), never a traceback from deep
inside, a hang or a silently odd run; the valid calls of the quick verbs succeed."""

from __future__ import annotations

import pytest

from rb_api import api_cases, run_api_case
from rb_cli import CLEAN, OK

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in api_cases()])
def test_api_case(case, ws, case_dir):
    verdict = run_api_case(case, case_dir, ws)
    assert verdict.kind == (OK if case.expect == "ok" else CLEAN), f"{case.id}: {verdict.kind}: {verdict.detail}"
