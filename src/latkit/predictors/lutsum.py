"""The LUT-sum network estimator, calibrated per device, as a predictor.

A network's latency is the sum of its operators' LUT latencies, mapped to the
end-to-end figure by the device's calibration (:mod:`latkit.lut.calibration`,
``e2e ~ a * lut_sum + b * n_ops + c``). ``fit`` on networks measured end to
end *is* that calibration; without end-to-end data the LUT's stored
calibration (or none) is used.

Searching a space means estimating millions of architectures, so the
predictor also reads the space's **slot tables** (:func:`latkit.lut.tables.slot_tables`,
compiled from the layout the search's latency model uses): every network of a
space has the same layer slots, and each slot's operator depends on a few
choices only, so a slot is a small table of latencies over the joint options
of its choices. An architecture's LUT sum is then a gather and a sum over an
``[n_archs, n_slots]`` index matrix, itself one matrix product of the
``[n_archs, n_choices]`` option indices with a mixed-radix matrix.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from latkit.core.errors import MissingOpsError, UsageError
from latkit.devices.precision import Precision, parse_precision
from latkit.predictors.base import (
    Predictor,
    WeightsInfo,
    read_json_arrays,
    register_predictor,
    write_json_arrays,
)
from latkit.profiler.spaces.base import SearchSpace

log = logging.getLogger(__name__)

_N_VERIFY = 16  # random architectures checked against their networks after compiling
_BATCH = 32_768  # architectures per matrix product in vectorised prediction


@register_predictor("lutsum")
class LutSumPredictor(Predictor):
    """Calibrated LUT sum of a network's operators (see the module docstring).

    Args:
        lut_path: the LUT file (read at fit time only).
        device: device URI in the LUT; default its only device.
        space: search space name; needed to predict from architectures.
        resolution: input resolution for spaces whose architectures do not
            choose it (default the space's default).
        use_stored_calibration: when ``fit`` gets no end-to-end latencies, use
            the LUT's stored calibration for the device (else the plain sum).
        precision: the precision of the LUT rows (and stored calibration) read, as text:
            a parameter is stored as given and saved as JSON (checked in ``fit``).
    """

    def __init__(
        self,
        lut_path: str | None = None,
        device: str | None = None,
        space: str | None = None,
        resolution: int | None = None,
        use_stored_calibration: bool = True,
        precision: str = Precision.FP32.value,
    ) -> None:
        self.lut_path = lut_path
        self.device = device
        self.space = space
        self.resolution = resolution
        self.use_stored_calibration = use_stored_calibration
        self.precision = precision

    # ------------------------------------------------------------------ fitting

    def fit(self, X: Any = None, y: Any = None) -> LutSumPredictor:  # noqa: N803
        """Read the LUT, compile the space, and calibrate.

        Args:
            X: networks (``Network`` objects, ``Arch`` es or an index matrix of
                ``space``) measured end to end; may be None without ``y``.
            y: their end-to-end latencies (ms); None = stored/no calibration.

        Raises:
            UsageError: no ``lut_path``, or ``X``/``y`` lengths differ.
            MissingOpsError: a network in ``X`` has an op the LUT lacks.
        """
        from latkit.lut.calibration import Calibration, fit_calibration, load_calibration
        from latkit.lut.store import LUT

        if not self.lut_path:
            raise UsageError("LutSumPredictor needs lut_path=<LUT file> to fit")
        with LUT.open(self.lut_path) as lut:
            uri = lut.resolve_device(self.device)
            self.device_ = uri
            precision = parse_precision(self.precision)
            rows = lut.iter_rows(uri, precision=precision)
            self.key_ms_ = {r["op_key"]: float(r["latency_ms"]) for r in rows}
            stored = load_calibration(lut, uri, precision=precision) if self.use_stored_calibration else None
        if self.space:
            self._compile()
        if y is not None:
            sums, counts = self._sums(self._networks_or_index(X))
            if len(sums) != len(np.asarray(y).reshape(-1)):
                raise UsageError(f"{len(sums)} networks but {np.asarray(y).size} latencies")
            cal = fit_calibration(sums, counts, np.asarray(y, dtype=np.float64).reshape(-1))
        else:
            cal = stored or Calibration(1.0, 0.0, 0.0, "none", 0, 0.0, 0.0)
        self.calibration_ = cal.to_dict()
        return self

    def _compile(self) -> None:
        from latkit.lut.tables import build_layout, slot_tables
        from latkit.profiler.spaces import get_space

        try:
            slots = slot_tables(build_layout(get_space(self.space), self.resolution, checks=_N_VERIFY))
        except UsageError as e:
            raise UsageError(f"the LUT-sum predictor cannot compile {self.space} into slot tables ({e}); "
                             "estimate its networks one by one instead (predict on Network objects)") from e
        flat = slots.flat_keys
        self.slot_ms_ = np.array([0.0 if k is None else self.key_ms_.get(k, np.nan) for k in flat])
        self.slot_count_ = np.array([0 if k is None else 1 for k in flat], dtype=np.float64)
        self.radix_ = slots.radix.astype(np.float64)  # float: the product runs in BLAS
        self.offsets_ = slots.offsets
        self.slot_keys_ = [k or "" for k in flat]

    # ---------------------------------------------------------------- predicting

    def _networks_or_index(self, X: Any) -> Any:  # noqa: N803
        from latkit.profiler.spaces.base import Arch

        if isinstance(X, np.ndarray):
            return X
        items = list(X)
        if items and all(isinstance(a, Arch) for a in items):
            return np.asarray([a.indices for a in items], dtype=np.int64)
        return items

    def _sums(self, X: Any) -> tuple[np.ndarray, np.ndarray]:  # noqa: N803
        """(LUT sums, measurable op counts) of networks or of an index matrix."""
        if isinstance(X, np.ndarray):
            return self._index_sums(X)
        sums, counts, missing = [], [], []
        for net in X:
            keys = [s.key for s in net.specs if s.measurable]
            missing += [k for k in keys if k not in self.key_ms_]
            sums.append(sum(self.key_ms_.get(k, 0.0) for k in keys))
            counts.append(len(keys))
        if missing:
            raise MissingOpsError(sorted(set(missing)), lut=f"{self.lut_path} ({self.device_})")
        return np.asarray(sums, dtype=np.float64), np.asarray(counts, dtype=np.float64)

    def _index_sums(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if not hasattr(self, "radix_"):
            raise UsageError("predicting from architectures needs space=<name> at fit time")
        idx = np.asarray(idx)
        if idx.ndim != 2 or idx.shape[1] != self.radix_.shape[0]:
            raise UsageError(
                f"index matrix must be [n_archs, {self.radix_.shape[0]}], got {idx.shape}"
            )
        radix = self.radix_.astype(np.float32)
        offsets = np.asarray(self.offsets_, dtype=np.int32)
        sums, counts = np.empty(len(idx)), np.empty(len(idx))
        for i in range(0, len(idx), _BATCH):  # batches keep the index block in cache
            # combination indices are < 2**24, so the float32 product is exact
            combo = (idx[i : i + _BATCH].astype(np.float32) @ radix).astype(np.int32) + offsets
            sums[i : i + _BATCH] = self.slot_ms_[combo].sum(axis=1)
            counts[i : i + _BATCH] = self.slot_count_[combo].sum(axis=1)
            if np.isnan(sums[i : i + _BATCH]).any():
                bad = combo[np.isnan(sums[i : i + _BATCH])].ravel()
                keys = sorted({self.slot_keys_[k] for k in bad if np.isnan(self.slot_ms_[k])})
                raise MissingOpsError(keys, lut=f"{self.lut_path} ({self.device_})")
        return sums, counts

    def predict(self, X: Any) -> np.ndarray:  # noqa: N803
        """Calibrated latency (ms) of networks, ``Arch`` es, or an index matrix.

        Raises:
            MissingOpsError: an op is not in the LUT (every missing key listed).
        """
        self._check_fitted()
        sums, counts = self._sums(self._networks_or_index(X))
        cal = self.calibration_
        return cal["a"] * sums + cal["b"] * counts + cal["c"]

    def lut_sums(self, X: Any) -> np.ndarray:  # noqa: N803
        """Uncalibrated LUT sums (ms) of networks, ``Arch`` es or an index matrix."""
        self._check_fitted()
        return self._sums(self._networks_or_index(X))[0]

    # ------------------------------------------------------------------ persistence

    def _save_weights(self, directory: Path) -> WeightsInfo:
        arrays: dict[str, object] = {"device": self.device_, "calibration": self.calibration_,
                                  "key_ms": self.key_ms_}  # fmt: skip
        if hasattr(self, "radix_"):
            arrays.update(
                slot_ms=np.nan_to_num(self.slot_ms_, nan=-1.0), slot_count=self.slot_count_,
                radix=self.radix_, offsets=self.offsets_, slot_keys=self.slot_keys_,
            )  # fmt: skip
        write_json_arrays(directory / "lutsum.json", arrays)
        return WeightsInfo("json", ["lutsum.json"])

    def _load_weights(self, directory: Path, info: WeightsInfo) -> None:
        a = read_json_arrays(directory / "lutsum.json")
        self.device_ = a["device"]
        self.calibration_ = a["calibration"]
        self.key_ms_ = {k: float(v) for k, v in a["key_ms"].items()}
        if "radix" in a:
            slot_ms = np.asarray(a["slot_ms"], dtype=np.float64)
            self.slot_ms_ = np.where(slot_ms < 0, np.nan, slot_ms)  # -1 marks a missing op
            self.slot_count_ = a["slot_count"]
            self.radix_ = a["radix"]
            self.offsets_ = a["offsets"]
            self.slot_keys_ = list(a["slot_keys"])


def random_index_matrix(
    space: SearchSpace, n: int, rng: np.random.Generator | int | None = 0
) -> np.ndarray:
    """``n`` uniformly random architectures of ``space`` as an ``[n, n_choices]`` index matrix."""
    gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    sizes = np.array([len(c.options) for c in space.choices()])
    return (gen.random((n, len(sizes))) * sizes).astype(np.int64)


def lutsum_throughput(
    predictor: LutSumPredictor, n_archs: int = 1_000_000, batch: int = 250_000, seed: int = 0
) -> dict[str, float]:
    """Time vectorised predictions of random architectures of the predictor's space.

    Returns:
        ``{"n_archs", "seconds", "archs_per_s"}`` (the index matrix is drawn
        before the clock starts).
    """
    from latkit.profiler.spaces import get_space

    if not predictor.space:
        raise UsageError("throughput needs a LutSumPredictor fitted with space=<name>")
    idx = random_index_matrix(get_space(predictor.space), n_archs, seed)
    start = time.perf_counter()
    for i in range(0, n_archs, batch):
        predictor.predict(idx[i : i + batch])
    seconds = time.perf_counter() - start
    return {"n_archs": float(n_archs), "seconds": seconds, "archs_per_s": n_archs / seconds}


__all__ = [
    "LutSumPredictor",
    "lutsum_throughput",
    "random_index_matrix",
]
