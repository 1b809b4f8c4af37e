"""A claim names its process by pid, boot and start time, and is a lease (issue 28, hangs):
a claim whose pid now belongs to an unrelated live process is taken over, never waited on forever."""

from __future__ import annotations

import os
import socket
import time

import pytest

from latkit.lut import claims as claims_mod
from latkit.lut.claims import Claims
from latkit.lut.store import LUT

URI = "cpu:onnxruntime"


def _plant(lut: LUT, owner: str, pid: int, renewed_at: float) -> None:
    """A claim row as a crashed run leaves it."""
    with lut.transaction() as conn:
        conn.execute(claims_mod._DDL)
        conn.execute("INSERT INTO claims(op_key, device_uri, precision, owner, pid, host, renewed_at) "
                     "VALUES ('k1', ?, 'fp32', ?, ?, ?, ?)", (URI, owner, pid, socket.gethostname(), renewed_at))


@pytest.fixture()
def lut(tmp_path):
    with LUT.open(tmp_path / "shared.db", create=True) as table:
        yield table


def test_an_unrenewed_claim_on_a_live_unrelated_pid_is_taken_over(lut):
    live = os.getppid()  # alive, and no latkit run
    _plant(lut, f"{socket.gethostname()}:{live}::old", live, time.time() - claims_mod.STALE_S - 1)
    assert Claims(lut, URI).claim(["k1"], 1) == ["k1"]


def test_a_fresh_claim_of_a_live_process_is_respected(lut):
    live = os.getppid()
    _plant(lut, f"{socket.gethostname()}:{live}:{claims_mod._started(live)}:other", live, time.time())
    assert Claims(lut, URI).claim(["k1"], 1) == []


def test_a_claim_from_another_boot_is_dropped_at_once(lut):
    live = os.getppid()
    ticks = claims_mod._started(live).split("/")[-1]
    if not ticks:
        pytest.skip("no /proc here")
    _plant(lut, f"{socket.gethostname()}:{live}:deadbeef/{ticks}:other", live, time.time())
    assert Claims(lut, URI).claim(["k1"], 1) == ["k1"]
