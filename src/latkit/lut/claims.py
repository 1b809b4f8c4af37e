"""Sharing one LUT between profiling processes: claims on operators.

Two ``latkit profile`` runs on one LUT file must not both measure everything
(the second would then fail on the first's rows). So a profiler *claims* the
operators it is about to measure, a few at a time, in the LUT's ``claims``
table, under SQLite's write lock (``BEGIN IMMEDIATE``): a second profiler
skips what the first has claimed or stored, so the two split the work, and a
run that finds everything left claimed by others waits for them and takes over
what they give up (a failure, a crash). A claim belongs to a process (host,
pid, boot and start time): one whose process no longer exists on this host, or
whose pid now belongs to another process (a reboot, or a pid reused after a
crash), is dropped. Every claim is also a lease: one not renewed for
:data:`STALE_S` seconds (a run renews its claims with every stored measurement)
is taken over, on any host, so no run waits without end on a claim whose
holder cannot be told apart from an unrelated live process.

Claims are per precision: a run profiling int8 operators and one profiling
the fp32 ones of the same device measure different rows and never wait for
each other (they share the device's time, which the caller arranges).

A run that must hold the device alone (``--sample`` fits a predictor on what
it measured) claims the whole device at its precision (op key ``*``); others then fail at once
with a line naming the holder's pid.

The ``claims`` table is working state, not data: it is made on first use,
never exported or merged, and its rows disappear when their runs end. A LUT
that never had a profiler run on it has no such table, and an older latkit
reads a file that has one.
"""

from __future__ import annotations

import logging
import os
import socket
import sqlite3
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from latkit.devices.precision import Precision
from latkit.core.errors import StoreError, UsageError
from latkit.lut.store import LUT
from latkit.profiler.measurement import Measurement
from latkit.profiler.ops import OpSpec, measurable_by_key

log = logging.getLogger(__name__)

WHOLE_DEVICE = "*"
STALE_S = 600.0  # a claim not renewed for this long is abandoned (the lease)

_DDL = """CREATE TABLE IF NOT EXISTS claims (
    op_key TEXT NOT NULL,
    device_uri TEXT NOT NULL,
    precision TEXT NOT NULL DEFAULT '{fp32}',
    owner TEXT NOT NULL,
    pid INTEGER NOT NULL,
    host TEXT NOT NULL,
    renewed_at REAL NOT NULL,
    PRIMARY KEY (op_key, device_uri, precision)
)""".format(fp32=Precision.FP32.value)


def _boot_id() -> str:
    """This boot's id (Linux), so start times of two boots never compare equal; "" where unknown."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()[:8]
    except OSError:
        return ""


def _started(pid: int) -> str:
    """When process ``pid`` started (boot id and clock ticks since boot), or "" where unknown."""
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    fields = stat_line.rsplit(")", 1)[-1].split()
    return f"{_boot_id()}/{fields[19]}" if len(fields) > 19 else ""


@dataclass(frozen=True)
class Holder:
    """Another process holding claims on a device of the LUT."""

    pid: int
    host: str
    n_ops: int
    whole_device: bool

    def __str__(self) -> str:
        here = "" if self.host == socket.gethostname() else f" on {self.host}"
        return f"pid {self.pid}{here}"


class Claims:
    """This process's claims on the operators of one device, at one precision, in one LUT."""

    def __init__(self, lut: LUT, device_uri: str, *, precision: Precision = Precision.FP32) -> None:
        self.lut, self.uri = lut, device_uri
        self.precision = precision
        self.pid, self.host = os.getpid(), socket.gethostname()
        # the process's start time tells a reused pid from the run that held it
        self.owner = f"{self.host}:{self.pid}:{_started(self.pid)}:{uuid.uuid4().hex[:12]}"

    # ------------------------------------------------------------ plumbing

    def _alive(self, owner: str, pid: int, host: str, renewed_at: float) -> bool:
        if time.time() - renewed_at >= STALE_S or host != self.host:
            return time.time() - renewed_at < STALE_S  # the lease: whatever holds that pid now
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # someone else's process: it exists
            pass
        parts = owner.split(":")
        started = parts[-2] if len(parts) >= 4 else ""
        now = _started(pid)
        return not (started and now and started != now)

    def _others(self, conn: sqlite3.Connection) -> list[tuple[str, int, str]]:
        """Live claims of other processes on this device (stale ones are deleted)."""
        conn.execute(_DDL)
        rows = conn.execute(
            "SELECT op_key, owner, pid, host, renewed_at FROM claims WHERE device_uri = ? AND precision = ?",
            (self.uri, self.precision.value),
        ).fetchall()
        live, dead = [], []
        for key, owner, pid, host, renewed in rows:
            if owner == self.owner:
                continue
            if self._alive(owner, pid, host, renewed):
                live.append((key, pid, host))
            else:
                dead.append(owner)
        if dead:
            log.info("dropping the claims of %d ended profiling run(s) on %s", len(set(dead)), self.uri)
            conn.executemany("DELETE FROM claims WHERE owner = ?", [(o,) for o in set(dead)])
        return live

    def _busy(self, holder: Holder) -> StoreError:
        what = "holds the whole device" if holder.whole_device else f"is measuring {holder.n_ops} operator(s)"
        return StoreError(
            f"LUT {self.lut.path} is busy: another latkit run ({holder}) {what} of {self.uri} "
            f"at {self.precision} in it; wait for it to finish, or give another --lut and merge the two later"
        )

    @staticmethod
    def _holders(live: list[tuple[str, int, str]]) -> list[Holder]:
        by: dict[tuple[int, str], list[str]] = {}
        for key, pid, host in live:
            by.setdefault((pid, host), []).append(key)
        return [Holder(pid, host, len([k for k in keys if k != WHOLE_DEVICE]), WHOLE_DEVICE in keys)
                for (pid, host), keys in by.items()]  # fmt: skip

    def _insert(self, conn: sqlite3.Connection, keys: Iterable[str]) -> None:
        now = time.time()
        conn.executemany(
            "INSERT OR REPLACE INTO claims(op_key, device_uri, precision, owner, pid, host, renewed_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(k, self.uri, self.precision.value, self.owner, self.pid, self.host, now) for k in keys],
        )
        conn.execute("UPDATE claims SET renewed_at = ? WHERE owner = ?", (now, self.owner))

    # ------------------------------------------------------------- public

    def claim(self, keys: Iterable[str], n: int) -> list[str]:
        """Claim up to ``n`` of ``keys`` that are neither stored (measured) nor claimed.

        Returns:
            The keys claimed, in the order given (empty when none is free).

        Raises:
            StoreError: another run holds the whole device.
        """
        with self.lut.transaction() as conn:
            live = self._others(conn)
            whole = [h for h in self._holders(live) if h.whole_device]
            if whole:
                raise self._busy(whole[0])
            taken = {k for k, _, _ in live} | self.lut.done_keys(self.uri, precision=self.precision)
            mine = {r[0] for r in conn.execute(
                "SELECT op_key FROM claims WHERE owner = ?", (self.owner,))}  # fmt: skip
            picks = [k for k in dict.fromkeys(keys) if k not in taken and k not in mine][: max(n, 0)]
            self._insert(conn, picks)
        return picks

    def claim_device(self) -> None:
        """Hold the whole device alone.

        Raises:
            StoreError: another run holds claims on the device (the message names its pid).
        """
        with self.lut.transaction() as conn:
            holders = self._holders(self._others(conn))
            if holders:
                raise self._busy(holders[0])
            self._insert(conn, [WHOLE_DEVICE])

    def held_by_others(self, keys: Iterable[str]) -> list[Holder]:
        """The other live runs holding claims on some of ``keys`` (or the whole device)."""
        wanted = set(keys) | {WHOLE_DEVICE}
        with self.lut.transaction() as conn:
            live = [c for c in self._others(conn) if c[0] in wanted]
        return self._holders(live)

    def release(self, keys: Iterable[str] | None = None) -> None:
        """Give up some claims (default: all of this process's)."""
        if self.lut._conn is None:
            return
        with self.lut.transaction() as conn:
            conn.execute(_DDL)
            if keys is None:
                conn.execute("DELETE FROM claims WHERE owner = ?", (self.owner,))
            else:
                conn.executemany(
                    "DELETE FROM claims WHERE owner = ? AND op_key = ?",
                    [(self.owner, k) for k in keys],
                )
                # each stored measurement renews the rest: a long chunk is not taken for abandoned
                conn.execute("UPDATE claims SET renewed_at = ? WHERE owner = ?", (time.time(), self.owner))


class ClaimingSink:
    """A :class:`~latkit.profiler.measurement.MeasurementSink` over a LUT that
    releases each claim as its measurement is stored.

    A measurement of an op that another run stored meanwhile (one that does not
    claim, e.g. an older latkit) is not an error: the stored row is kept and
    the op is listed in :attr:`already`.
    """

    def __init__(self, lut: LUT, claims: Claims) -> None:
        self.lut, self.claims = lut, claims
        self.already: list[str] = []

    def _precision(self, precision: Precision | None) -> Precision:
        """The claims' precision; another one is a caller's mistake."""
        prec = self.claims.precision if precision is None else precision
        if prec != self.claims.precision:
            raise UsageError(
                f"this profiling run claimed {self.claims.precision} operators; it cannot store {prec} ones"
            )
        return prec

    def done_keys(self, device_uri: str, *, precision: Precision | None = None) -> set[str]:
        """Keys already measured on ``device_uri`` at the claims' precision."""
        return self.lut.done_keys(device_uri, precision=self._precision(precision))

    def add(
        self,
        spec: OpSpec,
        measurement: Measurement,
        device: dict[str, Any],
        *,
        precision: Precision | None = None,
    ) -> None:
        """Store one measurement (at the claims' precision) and release its claim (one transaction)."""
        prec = self._precision(precision)
        with self.lut.transaction():
            if spec.key in self.lut.done_keys(device["uri"], precision=prec):
                log.warning("%s was stored by another run meanwhile; its row is kept", spec.key)
                self.already.append(spec.key)
            else:
                self.lut.add(spec, measurement, device, precision=prec)
            self.claims.release([spec.key])


#: operators claimed at a time: two measurement pools' worth, so a claim round
#: keeps the protocol's interleaving while two runs still split a space finely
def _chunk(config: Any) -> int:
    return 2 * max(1, int(getattr(config, "pool_size", 12)))


def _holders_of_rest(claims: Claims, free: list[str]) -> list[Holder]:
    """Who else holds the keys of ``free`` not stored yet (empty: none left to wait for)."""
    done = claims.lut.done_keys(claims.uri, precision=claims.precision)
    left = [k for k in free if k not in done]
    return claims.held_by_others(left) if left else []


def _merge(report: Any, part: Any, sink: ClaimingSink) -> None:
    """Add one chunk's :class:`~latkit.profiler.runner.ProfileReport` to the run's."""
    report.measured += [k for k in part.measured if k not in sink.already]
    report.failed.update(part.failed)
    report.unconverged += part.unconverged


def _finish(report: Any, claims: Claims, todo: list[str], t0: float) -> list[str]:
    """Fill in what is left and the time taken; returns the keys other runs measured."""
    done = claims.lut.done_keys(claims.uri, precision=claims.precision)
    mine = set(report.measured)
    report.left = len([k for k in todo if k not in done and k not in report.failed])
    report.elapsed_s = time.perf_counter() - t0
    return [k for k in todo if k in done and k not in mine]


def _claimed_chunks(
    claims: Claims,
    todo: list[str],
    budget: int,
    chunk: int,
    *,
    wait: bool,
    on_wait: Any,
    poll_s: float,
) -> Iterator[list[str]]:
    """Claim ``todo`` a chunk at a time and yield each chunk, ``budget`` operators in all.

    When only others' claims remain, stop (``wait`` false) or poll every
    ``poll_s`` until they are released or stored, calling ``on_wait(holders)``
    once per change of who holds them.
    """
    tried: set[str] = set()
    last_holders: list[Holder] | None = None
    while budget > 0:
        free = [k for k in todo if k not in tried]
        batch = claims.claim(free, min(chunk, budget))
        if not batch:
            holders = _holders_of_rest(claims, free)
            if not holders or not wait:
                return  # all stored (or failed here); a limited run leaves the rest to others
            if on_wait is not None and holders != last_holders:
                on_wait(holders)
            last_holders = holders
            time.sleep(poll_s)
            continue
        tried.update(batch)
        yield batch
        budget -= len(batch)


def profile_shared(
    device: Any,
    specs: Iterable[OpSpec],
    lut: LUT,
    config: Any = None,
    limit: int | None = None,
    on_progress: Any = None,
    on_wait: Any = None,
    poll_s: float = 1.0,
    *,
    precision: Precision = Precision.FP32,
    passes: int = 1,
) -> tuple[Any, list[str]]:
    """:func:`~latkit.profiler.runner.profile_ops` for a LUT other runs may share.

    Operators are claimed a chunk at a time; what another live run has claimed
    is left to it. When only others' claims remain, a run without ``limit``
    waits for them (``on_wait(holders)`` is called once per change of who
    holds them) and takes over whatever they release unmeasured, so it ends
    with every operator stored or failed.

    Returns:
        ``(report, by_others)``: the merged
        :class:`~latkit.profiler.runner.ProfileReport` of this run (``skipped``
        lists what was stored before it started), and the keys other runs
        measured while it ran.

    ``precision`` is the precision measured and stored (claims are per precision);
    ``passes``: each claimed chunk is measured that many times over and each op's
    lowest figure stored (:func:`~latkit.profiler.runner.profile_ops`).

    Raises:
        StoreError: another run holds the whole device (``--sample``).
    """
    from latkit.profiler.runner import ProfileReport, profile_ops

    t0 = time.perf_counter()
    uri = device.info().uri
    unique = measurable_by_key(specs)
    done_before = lut.done_keys(uri, precision=precision)
    report = ProfileReport(device=uri, skipped=[k for k in unique if k in done_before])
    todo = [k for k in unique if k not in done_before]
    budget = len(todo) if limit is None else min(limit, len(todo))
    claims = Claims(lut, uri, precision=precision)
    sink = ClaimingSink(lut, claims)
    chunks = _claimed_chunks(
        claims, todo, budget, _chunk(config), wait=limit is None, on_wait=on_wait, poll_s=poll_s
    )
    try:
        for batch in chunks:
            part = profile_ops(
                device, [unique[k] for k in batch], sink, config, on_progress=on_progress, precision=precision,
                passes=passes,
            )
            claims.release(batch)  # the failed ones: another run may try them
            _merge(report, part, sink)
    finally:
        claims.release()
    return report, _finish(report, claims, todo, t0)
