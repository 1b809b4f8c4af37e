"""The latency lookup table: one SQLite file per LUT.

A LUT holds, per device and precision (fp32, fp16, int8), one measurement per
operator key, with its statistics, raw samples and provenance, plus calibrations
per device and precision. A measurement's identity is (op, device, precision):
the int8 and fp32 timings of one operator on one device are two rows, and every
read names the precision it wants (fp32 by default), so rows of two precisions
never stand in for each other. The file is SQLite in
WAL mode with ``synchronous=FULL``: every :meth:`LUT.add` is its own committed
transaction, so a profiling run killed at any moment loses at most the
measurement it was taking, and a rerun resumes from :meth:`LUT.done_keys`.

The schema is identified by ``PRAGMA user_version`` and a ``meta`` table
(``schema = latkit.lut``). A file of a newer schema is refused, an older one
goes through :func:`migrate` (schema 1, before precisions, becomes 2 with every
row fp32).
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import stat
import statistics
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from latkit.core.files import finite_or_null, one_line
from latkit._version import __version__
from latkit.devices.precision import Precision
from latkit.core.errors import MissingOpsError, StoreError, UsageError
from latkit.lut.rows import (  # noqa: F401  (re-exported: the row form is part of the store's API)
    MAX_LATENCY_MS,
    ROW_FIELDS,
    STAT_COLUMNS,
    check_row,
    valid_latency,
)
from latkit.profiler.measurement import Measurement
from latkit.profiler.ops import OpSpec

log = logging.getLogger(__name__)

SCHEMA_NAME = "latkit.lut"
SCHEMA_VERSION = 2
SOURCE_MEASURED = "measured"
# rows an op-level predictor filled in: estimates use them, a measurement replaces them
SOURCE_PREDICTED_PREFIX = "predicted:"

_FP32 = Precision.FP32.value  # the precision of a row or calibration that names none (schema 1)

_MEASUREMENTS_V2 = """
CREATE TABLE {name} (
    id INTEGER PRIMARY KEY,
    op_key TEXT NOT NULL REFERENCES ops(key),
    device_id INTEGER NOT NULL REFERENCES devices(id),
    precision TEXT NOT NULL DEFAULT '{fp32}',
    latency_ms REAL NOT NULL,
    mean_ms REAL, std_ms REAL, min_ms REAL, max_ms REAL,
    p10_ms REAL, p90_ms REAL, mad_ms REAL,
    ci_low_ms REAL, ci_high_ms REAL, rel_ci REAL,
    n_samples INTEGER, n_outliers INTEGER, iterations INTEGER, converged INTEGER,
    samples_json TEXT NOT NULL DEFAULT '[]',
    provenance_json TEXT NOT NULL DEFAULT '{{}}',
    source TEXT NOT NULL,
    created_at TEXT NOT NULL,
    UNIQUE (op_key, device_id, precision)
)"""

_DDL = (
    """
CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE devices (
    id INTEGER PRIMARY KEY,
    uri TEXT NOT NULL UNIQUE,
    info_json TEXT NOT NULL
);
CREATE TABLE ops (
    key TEXT PRIMARY KEY,
    op_type TEXT NOT NULL,
    spec_json TEXT NOT NULL
);
CREATE TABLE calibrations (
    id INTEGER PRIMARY KEY,
    device_id INTEGER NOT NULL REFERENCES devices(id),
    precision TEXT NOT NULL DEFAULT '{fp32}',
    kind TEXT NOT NULL,
    params_json TEXT NOT NULL,
    provenance_json TEXT NOT NULL,
    created_at TEXT NOT NULL
);
""".format(fp32=_FP32)
    + _MEASUREMENTS_V2.format(name="measurements", fp32=_FP32)
)

# the v1 measurement columns, copied as they are by the v1 -> v2 migration
_V1_COLUMNS = (
    "id, op_key, device_id, latency_ms, mean_ms, std_ms, min_ms, max_ms, p10_ms, p90_ms, mad_ms, "
    "ci_low_ms, ci_high_ms, rel_ci, n_samples, n_outliers, iterations, converged, samples_json, "
    "provenance_json, source, created_at"
)



def utc_now() -> str:
    """The current UTC time, ISO 8601 with microseconds (sortable as text)."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def migrate(conn: sqlite3.Connection, from_version: int) -> None:
    """Bring a LUT of schema ``from_version`` up to :data:`SCHEMA_VERSION`.

    Each step ``v -> v+1`` goes here; the caller runs them all in one
    transaction, so a failed migration leaves the file as it was.

    * 1 -> 2: precision joins a measurement's identity, ``(op, device,
      precision)``. SQLite cannot change a UNIQUE constraint in place, so the
      measurements table is rebuilt, every row copied as it is and marked
      ``fp32`` (all a v1 LUT could hold); calibrations gain a ``precision``
      column (``fp32``). The ``claims`` table (working state of live profiling
      runs, keyed without precision) is dropped; the next profiler makes it anew.

    Raises:
        StoreError: no migration path from ``from_version``.
    """
    if from_version == 1:
        n_before = conn.execute("SELECT COUNT(*) FROM measurements").fetchone()[0]
        conn.execute(_MEASUREMENTS_V2.format(name="measurements_v2", fp32=_FP32))
        conn.execute(
            f"INSERT INTO measurements_v2({_V1_COLUMNS}, precision) "
            f"SELECT {_V1_COLUMNS}, '{_FP32}' FROM measurements"
        )
        conn.execute("DROP TABLE measurements")
        conn.execute("ALTER TABLE measurements_v2 RENAME TO measurements")
        conn.execute(f"ALTER TABLE calibrations ADD COLUMN precision TEXT NOT NULL DEFAULT '{_FP32}'")
        conn.execute("DROP TABLE IF EXISTS claims")
        n_after = conn.execute("SELECT COUNT(*) FROM measurements").fetchone()[0]
        if n_after != n_before:  # cannot happen: the copy is one statement; checked all the same
            raise StoreError(f"LUT migration copied {n_after} of {n_before} measurements; nothing was changed")
        conn.execute("UPDATE meta SET value = '2' WHERE name = 'schema_version'")
        from_version = 2
    if from_version == SCHEMA_VERSION:
        return
    raise StoreError(
        f"no migration from LUT schema {from_version} to {SCHEMA_VERSION}; "
        "re-create the LUT with this latkit (export it to JSON with the old one first)"
    )


def _use_wal(conn: sqlite3.Connection, wait_s: float = 30.0) -> None:
    """Switch to WAL, waiting out another process's lock.

    Changing the journal mode can answer 'database is locked' at once, without SQLite's
    busy timeout, while another process is creating or switching the same file.
    """
    deadline = time.monotonic() + wait_s
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if ("locked" not in str(exc) and "busy" not in str(exc)) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


# SQLite errors that come from the disk or folder, not from the LUT's content: such a LUT
# is not called corrupt (a healthy file on a full disk must not be "restored" over).
_DISK_ERRORS = ("disk is full", "disk i/o error", "unable to open", "out of memory")


def _disk_message(path: Path, exc: BaseException) -> str | None:
    """The line for a SQLite error the disk caused, or None when the file may be at fault."""
    text = str(exc)
    if any(e in text.lower() for e in _DISK_ERRORS):
        return (f"cannot use LUT {path}: {text}; the disk or its folder is full or failing (the LUT itself "
                "is likely fine): free space or check the disk, then retry")
    return None


def _sqlite_message(path: Path, exc: sqlite3.Error) -> str:
    text = str(exc)
    disk = _disk_message(path, exc)
    if disk:
        return disk
    if "locked" in text or "busy" in text:
        return f"LUT {path} is locked by another process ({text}); wait for it or close it"
    if "readonly" in text or "read-only" in text:
        return f"LUT {path} is read-only ({text}); copy it somewhere writable"
    if "malformed" in text or "not a database" in text:
        return f"LUT {path} is corrupt ({text}); restore it from a JSON export"
    return f"SQLite failed on LUT {path} ({text}); check the file and the disk"


def _problem(check_rows: list[tuple]) -> str:
    """The first finding of an integrity check, on one line."""
    lines = [ln.strip() for r in check_rows for ln in str(r[0]).splitlines()]
    found = [ln for ln in lines if ln and not ln.startswith("***")]
    more = f" and {len(found) - 1} more" if len(found) > 1 else ""
    return (found[0][:200] if found else "integrity check failed") + more


def _json(value: Any) -> str:
    # NaN / inf (an undefined statistic in a provenance) are stored as null: a JSON
    # export must be able to carry everything the LUT holds
    return json.dumps(finite_or_null(value), sort_keys=True, separators=(",", ":"), allow_nan=False)


class LUT:
    """A latency LUT in one SQLite file (a :class:`MeasurementSink`).

    Use :meth:`open`; the object is a context manager that closes the file.
    """

    def __init__(self, path: Path, conn: sqlite3.Connection, readonly: bool = False) -> None:
        self.path = path
        self.readonly = readonly
        self._conn = conn
        self._depth = 0  # nesting level of transaction()

    # ---------------------------------------------------------------- opening

    @classmethod
    def open(cls, path: str | Path, create: bool = False, readonly: bool = False) -> LUT:
        """Open the LUT at ``path``, creating it when ``create`` is true.

        Every open runs SQLite's ``quick_check``, so a damaged file is refused
        before anything reads or merges it.

        Args:
            path: the SQLite file.
            create: make an empty LUT if the file is missing or empty.
            readonly: open with ``mode=ro`` (for commands that only read); a
                read-only file opens, and any write raises :class:`StoreError`.

        Raises:
            StoreError: the file is missing (without ``create``), not a regular
                file, not SQLite, corrupt, of another schema or a newer one, or
                not writable (without ``readonly``).
        """
        path = Path(path)
        try:
            st = path.stat()
        except FileNotFoundError:
            st = None
        except OSError as exc:
            raise StoreError(f"cannot open LUT {path}: {exc.strerror or exc}; check the path") from exc
        if st is None and (not create or readonly):
            raise StoreError(
                f"no LUT at {path}; check the path or create one with `latkit profile --lut {path}`"
            )
        if st is not None and stat.S_ISDIR(st.st_mode):
            raise StoreError(f"{path} is a directory; give a LUT file path such as {path}/lut.db")
        if st is not None and not stat.S_ISREG(st.st_mode):
            raise StoreError(f"{path} is not a regular file; give a LUT file path")
        if st is not None and not readonly and not os.access(path, os.W_OK):
            raise StoreError(
                f"LUT {path} is read-only and this command writes to it; "
                "copy it somewhere writable or give another --lut"
            )
        try:
            if not readonly:
                from latkit.core.cache import prepare

                prepare(path.parent)  # marks the LUT cache area when latkit creates it
                path.parent.mkdir(parents=True, exist_ok=True)
            conn = cls._connect(path, readonly)
        except (OSError, ValueError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open LUT {path}: {one_line(exc)}; check the path and its folder") from exc
        try:
            cls._prepare(conn, path, create and not readonly, readonly)
            cls._quick_check(conn, path)
        except sqlite3.Error as exc:
            conn.close()
            raise StoreError(_sqlite_message(path, exc)) from exc
        except BaseException:
            conn.close()
            raise
        return cls(path, conn, readonly)

    @staticmethod
    def _connect(path: Path, readonly: bool) -> sqlite3.Connection:
        # bytes, so that a file name that is not UTF-8 opens too
        if not readonly:
            return sqlite3.connect(os.fsencode(path), timeout=30.0)
        # a URI, so that any character of the path ('?', '#', '%', spaces) is quoted
        uri = "file:" + urllib.parse.quote(os.fsencode(path.resolve())) + "?mode=ro"
        conn = sqlite3.connect(uri, uri=True, timeout=30.0)
        try:
            conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
        except sqlite3.OperationalError as exc:
            # a WAL file whose -shm cannot be made here (read-only folder or mount):
            # nobody can be writing it, so read it as an immutable file
            conn.close()
            if "unable to open" not in str(exc) and "readonly" not in str(exc):
                raise
            return sqlite3.connect(uri + "&immutable=1", uri=True, timeout=30.0)
        except sqlite3.DatabaseError:
            pass  # not a database: _prepare says so in its own words
        return conn

    @staticmethod
    def _quick_check(conn: sqlite3.Connection, path: Path) -> None:
        try:
            result = conn.execute("PRAGMA quick_check").fetchall()
        except sqlite3.DatabaseError as exc:
            raise StoreError(_disk_message(path, exc) or f"LUT {path} is corrupt ({exc}); restore it from a "
                             "JSON export") from exc
        if result != [("ok",)]:
            raise StoreError(f"LUT {path} is damaged ({_problem(result)}); restore it from a JSON export")

    @staticmethod
    def _prepare(conn: sqlite3.Connection, path: Path, create: bool, readonly: bool = False) -> None:
        try:
            version, tables = LUT._schema_state(conn)
        except sqlite3.DatabaseError as exc:
            raise StoreError(
                _disk_message(path, exc) or f"{path} is not a latkit LUT or is corrupt ({exc}); "
                "give a LUT file written by `latkit profile`"
            ) from exc
        if not tables and version == 0:
            if not create:
                raise StoreError(
                    f"{path} is empty, not a LUT; give a LUT file written by `latkit profile`"
                )
            if LUT._create_schema(conn):
                return
            # another process created it meanwhile: check what it made like any LUT
            version, tables = LUT._schema_state(conn)
        meta = LUT._read_meta(conn, path) if "meta" in tables else {}
        if meta.get("schema") != SCHEMA_NAME:
            raise StoreError(
                f"{path} is an SQLite file of another schema "
                f"({meta.get('schema') or 'no latkit meta table'}), not a latkit LUT"
            )
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{path} was written by a newer latkit (schema {version}); upgrade latkit"
            )
        if readonly:
            if version < SCHEMA_VERSION:
                raise StoreError(
                    f"LUT {path} has the older schema {version}; open it once with a command "
                    "that writes (e.g. `latkit lut import`) to migrate it"
                )
            return
        if version < SCHEMA_VERSION:
            conn.execute("BEGIN IMMEDIATE")
            with conn:
                # read again under the write lock: another process may have migrated it meanwhile
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                if version < SCHEMA_VERSION:
                    log.info("migrating LUT %s from schema %d to %d", path, version, SCHEMA_VERSION)
                    migrate(conn, version)
                    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        _use_wal(conn)
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")

    @staticmethod
    def _schema_state(conn: sqlite3.Connection) -> tuple[int, set[str]]:
        """user_version and table names, read in one transaction (one snapshot)."""
        in_tx = conn.in_transaction
        if not in_tx:
            conn.execute("BEGIN")
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        finally:
            if not in_tx:
                conn.rollback()
        return version, tables

    @staticmethod
    def _read_meta(conn: sqlite3.Connection, path: Path) -> dict[str, str]:
        try:
            return dict(conn.execute("SELECT name, value FROM meta").fetchall())
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{path} has an unreadable meta table ({exc}); not a latkit LUT") from exc

    @staticmethod
    def _create_schema(conn: sqlite3.Connection) -> bool:
        """Make the tables; False if another process made them first."""
        _use_wal(conn)
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
        meta = [
            ("schema", SCHEMA_NAME),
            ("schema_version", str(SCHEMA_VERSION)),
            ("latkit_version", __version__),
            ("created_at", utc_now()),
        ]
        # tables, meta and user_version in one write transaction, taken before looking
        # again: of two processes creating one LUT, the second finds it made
        conn.execute("BEGIN IMMEDIATE")
        with conn:
            if conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0]:
                return False
            for statement in filter(str.strip, _DDL.split(";")):
                conn.execute(statement)
            conn.executemany("INSERT INTO meta(name, value) VALUES (?, ?)", meta)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        return True

    def close(self) -> None:
        """Close the file (idempotent)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None  # type: ignore[assignment]

    def __enter__(self) -> LUT:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"LUT({str(self.path)!r})"

    # -------------------------------------------------------------- plumbing

    def _q(self, sql: str, params: Iterable[Any] = ()) -> list[tuple]:
        if self._conn is None:
            raise StoreError(f"LUT {self.path} is closed; open it again")
        try:
            return self._conn.execute(sql, tuple(params)).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(_sqlite_message(self.path, exc)) from exc

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One transaction, committed on success and rolled back on error.

        Nested uses join the outermost transaction, so a bulk import that
        calls :meth:`save_calibration` still commits once, at the end.
        """
        if self._conn is None:
            raise StoreError(f"LUT {self.path} is closed; open it again")
        if self._depth:
            self._depth += 1
            try:
                yield self._conn
            finally:
                self._depth -= 1
            return
        if self.readonly:
            raise StoreError(
                f"LUT {self.path} was opened read-only; use a command that writes to change it"
            )
        try:  # the write lock up front: a read that later upgrades could fail as busy
            if not self._conn.in_transaction:  # (a bare write outside one opened it already)
                self._conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise StoreError(_sqlite_message(self.path, exc)) from exc
        self._depth = 1
        try:
            with self._conn:
                yield self._conn
        except sqlite3.Error as exc:
            raise StoreError(_sqlite_message(self.path, exc)) from exc
        finally:
            self._depth = 0

    @property
    def meta(self) -> dict[str, str]:
        """The ``meta`` table (schema, schema_version, latkit_version, created_at)."""
        return dict(self._q("SELECT name, value FROM meta"))

    def check(self) -> None:
        """Run SQLite's integrity check.

        Raises:
            StoreError: the file is damaged.
        """
        result = self._q("PRAGMA integrity_check")
        if result != [("ok",)]:
            raise StoreError(f"LUT {self.path} is damaged ({_problem(result)}); restore it from a JSON export")

    # -------------------------------------------------------------- writing

    def ensure_device(self, uri: str, info: dict[str, Any] | None = None) -> int:
        """The id of device ``uri``, adding it (with ``info``) if new.

        The info of an existing device is kept: every measurement also carries
        the device info it was taken with in its provenance.
        """
        self._q(
            "INSERT OR IGNORE INTO devices(uri, info_json) VALUES (?, ?)",
            (uri, _json(info or {"uri": uri})),
        )
        return int(self._q("SELECT id FROM devices WHERE uri = ?", (uri,))[0][0])

    def ensure_op(self, spec: OpSpec, key: str | None = None) -> str:
        """Record the spec behind ``key`` (default ``spec.key``) if new; return the key."""
        key = key or spec.key
        self._q(
            "INSERT OR IGNORE INTO ops(key, op_type, spec_json) VALUES (?, ?, ?)",
            (key, spec.op_type.value, _json(spec.to_dict())),
        )
        return key

    def put_row(self, row: dict[str, Any], replace: bool = False) -> bool:
        """Insert one measurement row (the form :meth:`rows` returns).

        The op and device must already exist (:meth:`ensure_op`,
        :meth:`ensure_device`). Not committed: call inside :meth:`transaction`.

        The row's ``precision`` (absent: fp32) is part of its identity: rows of
        one op on one device at two precisions are two rows.

        Returns:
            True if written, False if a row for (op, device, precision) exists and
            ``replace`` is false (a stored row with an invalid latency is
            always replaced: re-profiling is how such a LUT is repaired).
        """
        row = check_row(row, f"measurement for LUT {self.path}")
        device_id = self.ensure_device(row["device_uri"])
        exists = self._q(
            "SELECT source, latency_ms FROM measurements WHERE op_key = ? AND device_id = ? AND precision = ?",
            (row["op_key"], device_id, row["precision"].value),
        )
        predicted_only = bool(exists) and exists[0][0].startswith(SOURCE_PREDICTED_PREFIX)
        incoming_real = not str(row.get("source", "")).startswith(SOURCE_PREDICTED_PREFIX)
        stored_invalid = bool(exists) and not valid_latency(exists[0][1])
        if exists and not replace and not (predicted_only and incoming_real) and not stored_invalid:
            return False
        values = [row.get(c) for c in STAT_COLUMNS]
        conv = row.get("converged")
        values[STAT_COLUMNS.index("converged")] = None if conv is None else int(bool(conv))
        samples = row["samples_ms"]
        self._q(
            f"INSERT OR REPLACE INTO measurements(op_key, device_id, precision, {', '.join(STAT_COLUMNS)}, "
            "samples_json, provenance_json, source, created_at) "
            f"VALUES (?, ?, ?, {', '.join('?' * len(STAT_COLUMNS))}, ?, ?, ?, ?)",
            (
                row["op_key"], device_id, row["precision"].value, *values, _json(samples),
                _json(row.get("provenance") or {}), row["source"], row.get("created_at") or utc_now(),
            ),
        )  # fmt: skip
        return True

    def add(
        self,
        spec: OpSpec,
        measurement: Measurement,
        device: dict[str, Any],
        source: str = SOURCE_MEASURED,
        replace: bool = False,
        *,
        precision: Precision = Precision.FP32,
    ) -> None:
        """Store one measurement in its own committed transaction (MeasurementSink).

        Args:
            spec: the operator measured; ``measurement.key`` must be its key.
            measurement: what the profiler measured.
            device: ``DeviceInfo.to_dict()`` of the device (needs ``uri``).
            source: ``"measured"`` or ``"imported:<name>"``.
            replace: overwrite an existing measurement of this op on this device.
            precision: the precision the op's model was built and timed at.

        Raises:
            StoreError: the op is already measured on this device at this
                precision (and not ``replace``), or the file cannot be written.
            UsageError: the measurement's key is not the spec's key.
        """
        if measurement.key != spec.key:
            raise UsageError(f"measurement key {measurement.key!r} is not the spec's {spec.key!r}")
        uri = device.get("uri")
        if not uri:
            raise UsageError("device info has no 'uri'; pass DeviceInfo.to_dict()")
        row = {k: getattr(measurement, k) for k in STAT_COLUMNS if hasattr(measurement, k)}
        row.update(
            op_key=spec.key, device_uri=uri, precision=precision, samples_ms=measurement.samples_ms,
            provenance=measurement.provenance, source=source, created_at=utc_now(),
        )  # fmt: skip
        with self.transaction():
            self.ensure_device(uri, device)
            self.ensure_op(spec)
            written = self.put_row(row, replace=replace)
        if not written:
            raise StoreError(
                f"LUT {self.path} already holds {spec.key} on {uri} at {precision} (measured by another run "
                "meanwhile?); the new measurement was not stored"
            )

    def save_calibration(
        self,
        device_uri: str,
        kind: str,
        params: dict[str, Any],
        provenance: dict[str, Any],
        created_at: str | None = None,
        *,
        precision: Precision = Precision.FP32,
    ) -> None:
        """Add a calibration for a device at a precision (the newest of a kind is the one used)."""
        with self.transaction():
            device_id = self.ensure_device(device_uri)
            self._q(
                "INSERT INTO calibrations(device_id, precision, kind, params_json, provenance_json, "
                "created_at) VALUES (?, ?, ?, ?, ?, ?)",
                (device_id, precision.value, kind, _json(params), _json(provenance), created_at or utc_now()),
            )

    # -------------------------------------------------------------- reading

    def done_keys(self, device_uri: str, *, precision: Precision = Precision.FP32) -> set[str]:
        """Keys already measured on ``device_uri`` at ``precision`` (MeasurementSink); predicted
        rows, and rows with an invalid latency (re-profiling replaces them), are not."""
        return {
            r[0]
            for r in self._q(
                "SELECT m.op_key, m.latency_ms FROM measurements m JOIN devices d ON d.id = m.device_id "
                "WHERE d.uri = ? AND m.precision = ? AND m.source NOT LIKE ?",
                (device_uri, precision.value, SOURCE_PREDICTED_PREFIX + "%"),
            )
            if valid_latency(r[1])
        }

    def devices(self) -> list[dict[str, Any]]:
        """Every device: ``uri``, ``info`` and its number of measurements."""
        rows = self._q(
            "SELECT d.uri, d.info_json, COUNT(m.id) FROM devices d "
            "LEFT JOIN measurements m ON m.device_id = d.id GROUP BY d.id ORDER BY d.id"
        )
        return [{"uri": u, "info": json.loads(i), "n_measurements": n} for u, i, n in rows]

    def resolve_device(self, device: str | None) -> str:
        """The device uri to read: ``device``, or the LUT's only measured device.

        Raises:
            UsageError: ``device`` is None and the LUT holds several devices or none.
            StoreError: ``device`` is not in the LUT.
        """
        known = [d["uri"] for d in self.devices() if d["n_measurements"]]
        if device is None:
            if len(known) == 1:
                return known[0]
            if not known:
                raise StoreError(f"LUT {self.path} holds no measurements; profile or import first")
            raise UsageError(
                f"LUT {self.path} holds {len(known)} devices ({', '.join(known)}); name one (--device)"
            )
        if device not in [d["uri"] for d in self.devices()]:
            raise StoreError(
                f"LUT {self.path} has no device {device!r}; it has: {', '.join(known) or 'none'}"
            )
        return device

    def precisions(self, device: str | None = None) -> list[Precision]:
        """The precisions the LUT holds measurement rows at (on ``device``, or on any), sorted."""
        where, params = ("WHERE d.uri = ?", (device,)) if device else ("", ())
        return sorted(
            self._stored_precision(r[0])
            for r in self._q(
                "SELECT DISTINCT m.precision FROM measurements m "
                f"JOIN devices d ON d.id = m.device_id {where}",
                params,
            )
        )

    def lookup(
        self,
        keys: Iterable[str],
        device: str | None = None,
        strict: bool = True,
        *,
        precision: Precision = Precision.FP32,
    ) -> dict[str, float]:
        """Latency (ms) of each key on ``device`` at ``precision`` (rows of another
        precision never stand in).

        Raises:
            MissingOpsError: some keys are absent (only when ``strict``).
        """
        uri = self.resolve_device(device)
        wanted = list(dict.fromkeys(keys))
        found = self._column_by_key("latency_ms", wanted, uri, precision)
        for key, value in found.items():
            if not valid_latency(value):  # a row an older latkit imported unchecked
                raise StoreError(
                    f"LUT {self.path} holds an invalid latency for {key} on {uri} at {precision} ({value!r}); "
                    "re-profile that operator or rebuild the LUT from a checked import"
                )
        missing = [k for k in wanted if k not in found]
        if missing and strict:
            raise MissingOpsError(missing, lut=f"{self.path} ({uri}, {precision})")
        return {k: found[k] for k in wanted if k in found}

    def sources(
        self, keys: Iterable[str], device: str | None = None, *, precision: Precision = Precision.FP32
    ) -> dict[str, str]:
        """Where each key's row came from on ``device`` at ``precision`` (``measured``,
        ``imported:...``, ``predicted:...``); keys without a row are left out."""
        return self._column_by_key(
            "source", list(dict.fromkeys(keys)), self.resolve_device(device), precision
        )

    def quantiles(self, device: str, *, precision: Precision = Precision.FP32) -> set[float]:
        """The quantiles (the reported statistic, see :class:`latkit.profiler.protocol.Statistic`) that the rows
        measured on ``device`` at ``precision`` report, as their protocols recorded them; empty without rows."""
        rows = self._q(
            "SELECT DISTINCT json_extract(m.provenance_json, '$.protocol.quantile') FROM measurements m "
            "JOIN devices d ON d.id = m.device_id WHERE d.uri = ? AND m.precision = ? AND m.source = ?",
            (device, precision.value, SOURCE_MEASURED),
        )
        return {float(q) for (q,) in rows if q is not None}

    def _column_by_key(self, column: str, keys: list[str], uri: str, precision: Precision) -> dict[str, Any]:
        """``column`` of the measurement rows of ``keys`` on ``uri`` at ``precision``."""
        found: dict[str, Any] = {}
        for i in range(0, len(keys), 500):  # SQLite caps the number of bound parameters
            part = keys[i : i + 500]
            found.update(
                self._q(
                    f"SELECT m.op_key, m.{column} FROM measurements m "
                    "JOIN devices d ON d.id = m.device_id "
                    f"WHERE d.uri = ? AND m.precision = ? AND m.op_key IN ({', '.join('?' * len(part))})",
                    (uri, precision.value, *part),
                )
            )
        return found

    def latency_ms(
        self, key: str, device: str | None = None, *, precision: Precision = Precision.FP32
    ) -> float:
        """Latency of one key (ms) at ``precision``.

        Raises:
            MissingOpsError: the key is not in the LUT for that device and precision.
        """
        return self.lookup([key], device, precision=precision)[key]

    def spec(self, key: str) -> OpSpec:
        """The op spec stored for ``key``.

        Raises:
            MissingOpsError: the LUT has no such op.
        """
        rows = self._q("SELECT spec_json FROM ops WHERE key = ?", (key,))
        if not rows:
            raise MissingOpsError([key], lut=str(self.path))
        return OpSpec.from_dict(json.loads(rows[0][0]))

    def ops(self) -> list[dict[str, Any]]:
        """Every op: ``key``, ``op_type`` and ``spec`` (dict)."""
        return [
            {"key": k, "op_type": t, "spec": json.loads(s)}
            for k, t, s in self._q("SELECT key, op_type, spec_json FROM ops ORDER BY key")
        ]

    def iter_rows(
        self,
        device: str | None = None,
        invalid: str = "raise",
        *,
        precision: Precision | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Measurement rows (dicts with :data:`ROW_FIELDS`), by device, precision, then key.

        Args:
            device: only this device's rows (default: all).
            precision: only the rows at this precision (default: all; each row
                names its ``precision``).
            invalid: what to do with a row whose latency no check would let in (an
                older latkit's unchecked import: text, non-finite, <= 0, huge):
                ``"raise"`` (before any row is yielded), ``"skip"`` or ``"keep"``
                (as stored, for a caller that marks them).

        Raises:
            StoreError: ``invalid="raise"`` and the LUT holds such a row.
        """
        if invalid not in ("raise", "skip", "keep"):
            raise ValueError(f"invalid={invalid!r}: use 'raise', 'skip' or 'keep'")
        if invalid == "raise":
            self.refuse_invalid(device, precision=precision)
        where, params = self._where(device, precision, "m")
        rows = self._q(
            f"SELECT m.op_key, d.uri, m.precision, {', '.join('m.' + c for c in STAT_COLUMNS)}, "
            "m.samples_json, m.provenance_json, m.source, m.created_at "
            f"FROM measurements m JOIN devices d ON d.id = m.device_id {where} "
            "ORDER BY d.id, m.precision, m.op_key",
            params,
        )
        for r in rows:
            row = dict(zip(ROW_FIELDS, r))
            if invalid == "skip" and not valid_latency(row["latency_ms"]):
                continue
            row["precision"] = self._stored_precision(row["precision"])
            row["samples_ms"] = json.loads(row["samples_ms"])
            row["provenance"] = json.loads(row["provenance"])
            if row["converged"] is not None:
                row["converged"] = bool(row["converged"])
            yield row

    @staticmethod
    def _where(device: str | None, precision: Precision | None, table: str) -> tuple[str, tuple]:
        """A WHERE clause for an optional device (``d.uri``) and precision (``<table>.precision``)."""
        terms, params = [], []
        if device:
            terms.append("d.uri = ?")
            params.append(device)
        if precision is not None:
            terms.append(f"{table}.precision = ?")
            params.append(precision.value)
        return ("WHERE " + " AND ".join(terms) if terms else ""), tuple(params)

    def rows(
        self, device: str | None = None, invalid: str = "raise", *, precision: Precision | None = None
    ) -> list[dict[str, Any]]:
        """All measurement rows as dicts (see :meth:`iter_rows`).

        Raises:
            StoreError: ``invalid="raise"`` and a row holds an invalid latency.
        """
        return list(self.iter_rows(device, invalid, precision=precision))

    def measurement(
        self, key: str, device: str | None = None, *, precision: Precision = Precision.FP32
    ) -> Measurement:
        """The stored measurement of ``key`` at ``precision``; unknown statistics read as NaN.

        Raises:
            MissingOpsError: no such measurement.
        """
        uri = self.resolve_device(device)
        for row in self.iter_rows(uri, invalid="keep", precision=precision):
            if row["op_key"] == key:
                self.lookup([key], uri, precision=precision)  # refuses an invalid latency, naming the row
                nan = float("nan")
                return Measurement(
                    key=key,
                    **{c: (nan if row[c] is None else row[c]) for c in STAT_COLUMNS
                       if c not in ("n_samples", "n_outliers", "iterations", "converged")},
                    n_samples=row["n_samples"] or 0,
                    n_outliers=row["n_outliers"] or 0,
                    iterations=row["iterations"] or 0,
                    converged=bool(row["converged"]),
                    samples_ms=row["samples_ms"],
                    provenance=row["provenance"],
                )  # fmt: skip
        raise MissingOpsError([key], lut=f"{self.path} ({uri}, {precision})")

    def calibrations(
        self, device: str | None = None, *, precision: Precision | None = None
    ) -> list[dict[str, Any]]:
        """Calibration rows (``device_uri, precision, kind, params, provenance,
        created_at``), oldest first; only ``device``'s / ``precision``'s when given."""
        where, params = self._where(device, precision, "c")
        rows = self._q(
            "SELECT d.uri, c.precision, c.kind, c.params_json, c.provenance_json, c.created_at "
            f"FROM calibrations c JOIN devices d ON d.id = c.device_id {where} "
            "ORDER BY c.created_at, c.id",
            params,
        )
        return [
            {"device_uri": u, "precision": self._stored_precision(pr), "kind": k, "params": json.loads(p),
             "provenance": json.loads(v), "created_at": t}
            for u, pr, k, p, v, t in rows
        ]  # fmt: skip

    def summary(self) -> dict[str, Any]:
        """What the LUT holds: totals, per op type, per source, per precision and per device.

        ``devices`` is a list with one entry per device and precision it holds
        rows at (a device without rows: one entry, precision fp32): ``uri``,
        ``precision``, ``runtime``, ``threads``, ``ops`` (measurements),
        ``min_ms`` / ``median_ms`` / ``max_ms`` / ``total_ms`` of its latencies
        and its ``sources``. Latencies of two precisions are never pooled.
        """
        rows = self._q(
            "SELECT d.uri, m.latency_ms, m.source, o.op_type, m.converged, m.precision FROM measurements m "
            "JOIN devices d ON d.id = m.device_id JOIN ops o ON o.key = m.op_key"
        )
        invalid = [r for r in rows if not valid_latency(r[1])]  # older, unchecked imports
        lat = [r[1] for r in rows if valid_latency(r[1])]
        devices = []
        for dev in self.devices():
            held = sorted({self._stored_precision(r[5]) for r in rows if r[0] == dev["uri"]}) or [Precision.FP32]
            for precision in held:
                mine = [r for r in rows if r[0] == dev["uri"] and r[5] == precision.value]
                devices.append(self._device_summary(dev, precision, mine))
        return {
            "path": str(self.path),
            "schema": SCHEMA_NAME,
            "schema_version": SCHEMA_VERSION,
            "latkit_version": self.meta.get("latkit_version"),
            "total": len(rows),
            "n_ops": self._q("SELECT COUNT(*) FROM ops")[0][0],
            "by_type": dict(sorted(Counter(r[3] for r in rows).items())),
            "by_precision": dict(sorted(Counter(r[5] for r in rows).items())),
            "sources": dict(sorted(Counter(r[2] for r in rows).items())),
            "unconverged": sum(1 for r in rows if r[4] == 0),
            "invalid": len(invalid),
            "min_latency_ms": min(lat) if lat else None,
            "median_latency_ms": statistics.median(lat) if lat else None,
            "max_latency_ms": max(lat) if lat else None,
            "devices": devices,
        }

    @staticmethod
    def _device_summary(dev: dict[str, Any], precision: Precision, mine: list[tuple]) -> dict[str, Any]:
        """One ``summary()["devices"]`` entry: a device's rows at one precision."""
        ms = [r[1] for r in mine if valid_latency(r[1])]
        return {
            "uri": dev["uri"],
            "precision": precision,
            "runtime": dev["info"].get("runtime", ""),
            "threads": dev["info"].get("threads", ""),
            "ops": len(mine),
            "min_ms": min(ms) if ms else None,
            "median_ms": statistics.median(ms) if ms else None,
            "max_ms": max(ms) if ms else None,
            "total_ms": sum(ms) if ms else None,
            "sources": sorted({r[2] for r in mine}),
        }

    def invalid_rows(
        self, device: str | None = None, *, precision: Precision | None = None
    ) -> list[tuple[str, str, Any]]:
        """``(op_key, device_uri, latency_ms)`` of rows whose latency no check would
        let in (an older latkit's unchecked import): text, non-finite, <= 0, huge;
        only ``device``'s / ``precision``'s rows when given."""
        where, params = self._where(device, precision, "m")
        rows = self._q(
            "SELECT m.op_key, d.uri, m.latency_ms FROM measurements m "
            f"JOIN devices d ON d.id = m.device_id {where} ORDER BY d.id, m.precision, m.op_key",
            params,
        )
        return [r for r in rows if not valid_latency(r[2])]

    def refuse_invalid(self, device: str | None = None, *, precision: Precision | None = None) -> None:
        """Raise if the LUT (or ``device``'s / ``precision``'s rows) holds an invalid latency.

        Raises:
            StoreError: one line: how many, the first row, what to do.
        """
        bad = self.invalid_rows(device, precision=precision)
        if bad:
            key, uri, value = bad[0]
            raise StoreError(
                f"LUT {self.path} holds {len(bad)} invalid latenc{'y' if len(bad) == 1 else 'ies'} "
                f"(first: {key} on {uri}: {value!r}); re-profile those operators or rebuild the "
                "LUT from a checked import"
            )

    def _stored_precision(self, text: str) -> Precision:
        """A precision as this file holds it (every row is checked on the way in)."""
        try:
            return Precision(text)
        except ValueError:
            raise StoreError(f"LUT {self.path} holds a row of the unknown precision {text!r}; "
                             "it was not written by latkit: rebuild the LUT from a checked import") from None

    def __len__(self) -> int:
        return int(self._q("SELECT COUNT(*) FROM measurements")[0][0])


def check_statistic(lut: LUT, device: str, quantile: float, *, precision: Precision = Precision.FP32) -> None:
    """UsageError when ``lut`` holds figures of ``device`` at ``precision`` of another statistic than ``quantile``.

    A LUT keeps one statistic per device and precision: a sum over operators of
    p5 and median figures, or a calibration fitted on one and applied to the
    other, is neither.
    """
    from latkit.profiler.protocol import short_statistic

    other = sorted(q for q in lut.quantiles(device, precision=precision) if q != quantile)
    if other:
        held = ", ".join(short_statistic(q) for q in other)
        raise UsageError(f"{lut.path} holds {held} figures of {device} at {precision.value}, and a LUT keeps one "
                         f"statistic: give --statistic {held}, or profile {short_statistic(quantile)} into another "
                         "LUT file")  # fmt: skip
