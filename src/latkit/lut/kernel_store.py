"""Kernel measurements and fusion rules, stored in a LUT file beside its operator rows.

A kernel predictor build measures hundreds of kernel configurations on a
device; fusion detection measures which operator pairs the device's runtime
runs as one kernel. Both belong with the device's other measurements, so they
live in the device's LUT (one SQLite file), in two tables of their own that a
LUT gains on first use:

* ``kernel_measurements``: one row per (device, precision, configuration key),
  with the configuration, the latency, its statistics and raw samples, and
  the measurement's provenance; committed row by row, so a build killed at
  any moment resumes from :meth:`KernelStore.done_keys`;
* ``fusion_rules``: per device, the detected rules with their evidence (the
  timings of A, B and A->B) and their source; the newest row is the one used.

The tables are versioned by the ``kernel_schema_version`` meta entry; a
newer one is refused.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from latkit.devices.precision import Precision
from latkit.core.errors import StoreError
from latkit.lut.store import LUT, utc_now
from latkit.profiler.kernel_models import OVERHEAD_CONFIG
from latkit.profiler.kernels import FusionRules, KernelConfig
from latkit.profiler.measurement import Measurement

KERNEL_SCHEMA_VERSION = 1

_DDL = (
    """CREATE TABLE IF NOT EXISTS kernel_measurements (
    id INTEGER PRIMARY KEY,
    device_uri TEXT NOT NULL,
    precision TEXT NOT NULL DEFAULT 'fp32',
    kernel_type TEXT NOT NULL,
    key TEXT NOT NULL,
    config_json TEXT NOT NULL,
    latency_ms REAL NOT NULL,
    std_ms REAL, rel_ci REAL, n_samples INTEGER, converged INTEGER,
    samples_json TEXT NOT NULL DEFAULT '[]',
    provenance_json TEXT NOT NULL DEFAULT '{}',
    source TEXT NOT NULL,
    created_at TEXT NOT NULL,
    UNIQUE (device_uri, precision, key)
)""",
    """CREATE TABLE IF NOT EXISTS fusion_rules (
    id INTEGER PRIMARY KEY,
    device_uri TEXT NOT NULL,
    runtime TEXT NOT NULL,
    pairs_json TEXT NOT NULL,
    evidence_json TEXT NOT NULL,
    source TEXT NOT NULL,
    created_at TEXT NOT NULL
)""",
)


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False, default=str)


def _layout_share(provenance_json: str) -> float:
    """A row's ``layout_share`` (0 when absent or not a share)."""
    try:
        share = json.loads(provenance_json).get("layout_share", 0.0)
    except (ValueError, AttributeError):
        return 0.0
    return float(share) if isinstance(share, (int, float)) and 0.0 <= share < 1.0 else 0.0


class KernelStore:
    """The kernel tables of one open :class:`~latkit.lut.store.LUT`."""

    def __init__(self, lut: LUT) -> None:
        self.lut = lut
        version = int(lut.meta.get("kernel_schema_version", 0))
        if version > KERNEL_SCHEMA_VERSION:
            raise StoreError(f"LUT {lut.path} holds kernel tables of a newer latkit (schema {version}); upgrade latkit")
        if version < KERNEL_SCHEMA_VERSION and not lut.readonly:
            with lut.transaction() as conn:
                for statement in _DDL:
                    conn.execute(statement)
                conn.execute("INSERT OR REPLACE INTO meta(name, value) VALUES ('kernel_schema_version', ?)",
                             (str(KERNEL_SCHEMA_VERSION),))  # fmt: skip
        self._ready = version == KERNEL_SCHEMA_VERSION or not lut.readonly

    def _rows(self, sql: str, params: Iterable[Any] = ()) -> list[tuple]:
        if not self._ready:
            return []  # a read-only LUT that never held kernel tables
        return self.lut._q(sql, params)  # noqa: SLF001 - the LUT's one guarded read path

    # ------------------------------------------------------------ kernels

    def add(self, config: KernelConfig, m: Measurement, device: dict[str, Any], *, precision: Precision = Precision.FP32,
            source: str = "measured") -> None:
        """Store one kernel measurement in its own committed transaction (a re-measure replaces it)."""
        with self.lut.transaction() as conn:
            self.lut.ensure_device(device["uri"], device)
            conn.execute(
                "INSERT OR REPLACE INTO kernel_measurements(device_uri, precision, kernel_type, key, config_json, "
                "latency_ms, std_ms, rel_ci, n_samples, converged, samples_json, provenance_json, source, "
                "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (device["uri"], precision.value, config.type.value, config.key, _json(config.to_dict()), m.latency_ms,
                 m.std_ms, m.rel_ci, m.n_samples, int(bool(m.converged)), _json(m.samples_ms),
                 _json(m.provenance), source, utc_now()),
            )  # fmt: skip

    def done_keys(self, device_uri: str, *, precision: Precision = Precision.FP32) -> set[str]:
        """Configuration keys already measured on the device at the precision."""
        rows = self._rows("SELECT key FROM kernel_measurements WHERE device_uri = ? AND precision = ?",
                          (device_uri, precision.value))  # fmt: skip
        return {r[0] for r in rows}

    def measurements(self, device_uri: str, *, precision: Precision = Precision.FP32,
                     kernel_type: str | None = None) -> list[tuple[KernelConfig, float]]:
        """Every measured (configuration, ms) of the device, optionally of one kernel type.

        A row whose provenance gives a share of its run to the layout changes at the lone
        kernel's edges (``layout_share``, ONNX Runtime's NCHWc reorders, which a network runs
        once rather than around every kernel) counts without them: the device's per-invocation
        overhead (its overhead configuration's row) plus the rest of the run less that share.
        Rows without a share count whole.
        """
        sql = ("SELECT config_json, latency_ms, provenance_json, key, kernel_type FROM kernel_measurements "
               "WHERE device_uri = ? AND precision = ?")  # fmt: skip
        rows = self._rows(sql + " ORDER BY id", [device_uri, precision.value])
        overhead = min((float(ms) for _, ms, _, key, _ in rows if key == OVERHEAD_CONFIG.key), default=0.0)
        out = []
        for c, ms, prov, _, kind in rows:
            if kernel_type is None or kind == kernel_type:
                own = max(float(ms) - overhead, 0.0) * (1.0 - _layout_share(prov))
                out.append((KernelConfig.from_dict(json.loads(c)), overhead + own if own > 0 else float(ms)))
        return out

    def devices(self) -> list[str]:
        """Devices with kernel measurements."""
        return [r[0] for r in self._rows("SELECT DISTINCT device_uri FROM kernel_measurements ORDER BY device_uri")]

    # ------------------------------------------------------------ fusion rules

    def save_rules(self, device_uri: str, runtime: str, rules: FusionRules) -> None:
        """Store the device's detected fusion rules with their evidence."""
        with self.lut.transaction() as conn:
            conn.execute(
                "INSERT INTO fusion_rules(device_uri, runtime, pairs_json, evidence_json, source, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (device_uri, runtime, _json(sorted(list(p) for p in rules.pairs)), _json(dict(rules.evidence)),
                 rules.source, utc_now()),
            )  # fmt: skip

    def rules(self, device_uri: str) -> FusionRules | None:
        """The device's newest stored fusion rules, or None when detection never ran on it."""
        rows = self._rows("SELECT pairs_json, evidence_json, source FROM fusion_rules WHERE device_uri = ? "
                          "ORDER BY id DESC LIMIT 1", (device_uri,))  # fmt: skip
        if not rows:
            return None
        pairs, evidence, source = rows[0]
        return FusionRules(frozenset(tuple(p) for p in json.loads(pairs)), source, json.loads(evidence))


__all__ = ["KERNEL_SCHEMA_VERSION", "KernelStore"]
