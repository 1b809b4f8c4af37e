"""Fault injection over the loopback phone: every garbage/timing/outage case of the ADB path."""

from __future__ import annotations

import pytest

from rb_cli import CLEAN, OK
from rb_faults import fault_cases, run_fault_case, run_unreachable

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("case", [pytest.param(c, id=c.name) for c in fault_cases()])
def test_fault(case, ws, case_dir):
    verdict = run_fault_case(case, case_dir, ws)
    res = verdict.result
    assert verdict.kind == (OK if case.expect == "ok" else CLEAN), (
        f"{case.id}: {verdict.kind}: {verdict.detail}\nstderr tail: {res.stderr[-1500:] if res else ''}")


def test_unreachable_devices(ws, case_dir):
    bad = [(name, v.kind, v.detail) for name, v in run_unreachable(case_dir, ws) if v.kind != CLEAN]
    assert not bad, bad
