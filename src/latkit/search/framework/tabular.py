"""Tabular benchmark mode: accuracy and latency read from CSV tables.

``--accuracy-table CSV:COLUMN`` makes the accuracy evaluator a table lookup (e.g.
``nasbench201_accuracy.csv:cifar10-val``, whose architecture column is
``cellstr``); ``--latency-table CSV:COLUMN`` does the same for latency (any CSV
with ``arch_index, arch`` rows and one column per device). With
``latency_samples=K`` the search sees instead a ridge model fitted on K random
rows of the latency table (an additive per-choice model), and the result reports
the true latency of the chosen architecture and whether it truly meets the target.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from latkit.core.files import one_line
from latkit.core.errors import ArchError, LatkitError, UsageError
from latkit.profiler.spaces.base import Arch, SearchSpace, get_space
from latkit.search.framework.base import SearchResult, run_algorithm

# arch column names tried in order (NB201's accuracy CSV keeps an index in "arch")
_ARCH_COLUMNS = ("cellstr", "arch")


class BenchmarkTableError(LatkitError):
    """A benchmark table (an ``--accuracy-table`` / ``--latency-table`` CSV) that cannot be read or does
    not fit the space."""


def split_spec(spec: str) -> tuple[Path, str]:
    """``"path.csv:column"`` -> ``(Path, column)``.

    Raises:
        UsageError: no ``:COLUMN`` part.
    """
    path, sep, column = str(spec).rpartition(":")
    if not sep or not path or not column:
        raise UsageError(f"table {spec!r} must be written CSV:COLUMN, e.g. data.csv:pixel3")
    return Path(path), column


@dataclass
class BenchmarkColumn:
    """One numeric column of a benchmark table (a CSV), keyed by architecture."""

    values: dict[Arch, float]
    source: str
    name: str  # the CSV column's
    provenance: dict[str, object] = field(default_factory=dict)

    @classmethod
    def read(cls, space: SearchSpace, spec: str, positive: bool = False) -> BenchmarkColumn:
        """Read ``CSV:COLUMN`` for ``space`` (``positive``: every value must be > 0, as latencies).

        Raises:
            BenchmarkTableError: missing file, unknown column, an unparsable architecture,
                a non-numeric/NaN value, or duplicated architectures.
        """
        path, column = split_spec(spec)
        try:
            with path.open(newline="", encoding="utf-8") as fh:
                rows = list(csv.DictReader(fh))
        except OSError as exc:
            raise BenchmarkTableError(f"cannot read table {path}: {exc.strerror or exc}") from exc
        except UnicodeDecodeError:
            raise BenchmarkTableError(f"table {path} is not a UTF-8 text CSV; give a CSV file") from None
        except csv.Error as exc:
            raise BenchmarkTableError(f"table {path} is not a readable CSV ({one_line(exc)})") from exc
        header = list(rows[0]) if rows else []
        if column not in header:
            shown = ", ".join(h for h in header if h not in _ARCH_COLUMNS + ("arch_index",))
            raise BenchmarkTableError(f"{path} has no column {column!r}; columns: {shown or 'none'}")
        arch_col = _arch_column(path, header, rows)
        values: dict[Arch, float] = {}
        for n, row in enumerate(rows, start=2):
            try:
                arch = space.arch_from_native(row[arch_col].strip())
            except ArchError as exc:
                raise BenchmarkTableError(f"{path} line {n}: {exc}") from None
            value = _number(row[column])
            if value is None:
                raise BenchmarkTableError(
                    f"{path} line {n}: {column}={row[column]!r} is not a finite number; "
                    "drop or fill that row"
                )
            if positive and value <= 0:
                raise BenchmarkTableError(f"{path} line {n}: {column}={row[column]!r} is not a positive latency (ms); "
                                 "drop or fix that row")
            if arch in values:
                raise BenchmarkTableError(f"{path} line {n}: architecture {row[arch_col]!r} is repeated")
            values[arch] = value
        if not values:
            raise BenchmarkTableError(f"{path} has no rows")
        prov = {"table": str(path), "column": column, "rows": len(values)}
        return cls(values, str(path), column, prov)

    def lookup(self, arch: Arch, what: str) -> float:
        try:
            return self.values[arch]
        except KeyError:
            raise BenchmarkTableError(
                f"{what} table {self.source} has no row for an architecture the search "
                "sampled; use a table that covers the whole space"
            ) from None


def _arch_column(path: Path, header: list[str], rows: list[dict[str, str]]) -> str:
    for name in _ARCH_COLUMNS:
        if name in header and not rows[0][name].strip().lstrip("-").isdigit():
            return name
    raise BenchmarkTableError(f"{path} has no architecture column (one of {', '.join(_ARCH_COLUMNS)})")


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


class BenchmarkAccuracy:
    """Accuracy as a benchmark table lookup (an :class:`~latkit.search.framework.base.AccuracyModel`)."""

    def __init__(self, column: BenchmarkColumn) -> None:
        self.column = column
        self.provenance = {"kind": "table", **column.provenance}

    def accuracy(self, arch: Arch) -> float:
        """The table's accuracy of ``arch``."""
        return self.column.lookup(arch, "accuracy")


class BenchmarkLatency:
    """Latency as a benchmark table lookup; its minimum is the table's minimum."""

    def __init__(self, column: BenchmarkColumn, restrict_to: set[Arch] | None = None) -> None:
        self.column = column
        self.provenance = {"kind": "table", **column.provenance}
        self._candidates = restrict_to

    def latency_ms(self, arch: Arch) -> float:
        """The table's latency of ``arch`` (ms)."""
        return self.column.lookup(arch, "latency")

    def latency_ms_batch(self, archs: list[Arch]) -> np.ndarray:
        """Latencies of several architectures."""
        return np.array([self.latency_ms(a) for a in archs])

    def min_latency(self, space: SearchSpace) -> tuple[float, Arch]:
        """The smallest latency in the table (over the searchable rows)."""
        keys = self._candidates or self.column.values.keys()
        arch = min(keys, key=self.column.values.__getitem__)
        return self.column.values[arch], arch


class RidgeLatency:
    """An additive latency model: ridge regression on the one-hot encoding.

    Additive in the choices, so its minimum over the space is exact: the intercept
    plus every choice's cheapest option.

    Args:
        space: the search space.
        alpha: the ridge penalty.
    """

    def __init__(self, space: SearchSpace, alpha: float = 1.0) -> None:
        self.space, self.alpha = space, alpha
        self.provenance: dict[str, object] = {"kind": "ridge", "alpha": alpha}

    def fit(self, archs: list[Arch], latencies_ms: np.ndarray) -> RidgeLatency:
        """Fit on measured architectures; return ``self``.

        Raises:
            UsageError: fewer than two architectures.
        """
        if len(archs) < 2:
            raise UsageError("the latency model needs at least 2 measured architectures")
        X = np.stack([self.space.encode(a) for a in archs]).astype(np.float64)  # noqa: N806
        y = np.asarray(latencies_ms, dtype=np.float64)
        x_mean, y_mean = X.mean(0), y.mean()
        Xc = X - x_mean  # noqa: N806
        self.coef_ = np.linalg.solve(Xc.T @ Xc + self.alpha * np.eye(X.shape[1]), Xc.T @ (y - y_mean))
        self.intercept_ = float(y_mean - x_mean @ self.coef_)
        self.provenance["fitted_on"] = len(archs)
        return self

    def latency_ms(self, arch: Arch) -> float:
        """Predicted latency (ms)."""
        return float(self.space.encode(arch) @ self.coef_ + self.intercept_)

    def latency_ms_batch(self, archs: list[Arch]) -> np.ndarray:
        """Predicted latencies of several architectures."""
        X = np.stack([self.space.encode(a) for a in archs])  # noqa: N806
        return X @ self.coef_ + self.intercept_

    def min_latency(self, space: SearchSpace) -> tuple[float, Arch]:
        """Exact minimum: the cheapest option of every choice."""
        picks, total, offset = [], self.intercept_, 0
        for ch in space.choices():
            part = self.coef_[offset : offset + len(ch.options)]
            picks.append(int(np.argmin(part)))
            total += float(part.min())
            offset += len(ch.options)
        return total, Arch(space.name, tuple(picks))


@dataclass
class TabularProblem:
    """The tables of one tabular benchmark, read once and reused across runs."""

    space: SearchSpace
    accuracy: BenchmarkAccuracy
    latency: BenchmarkLatency

    @classmethod
    def load(cls, space: str | SearchSpace, accuracy_table: str, latency_table: str) -> TabularProblem:
        """Read both tables; the searchable set is the archs present in both.

        Raises:
            BenchmarkTableError: bad tables, or no architecture in common.
        """
        sp = get_space(space) if isinstance(space, str) else space
        acc = BenchmarkColumn.read(sp, accuracy_table)
        lat = BenchmarkColumn.read(sp, latency_table, positive=True)
        common = set(acc.values) & set(lat.values)
        if not common:
            raise BenchmarkTableError(f"{acc.source} and {lat.source} share no architecture")
        return cls(sp, BenchmarkAccuracy(acc), BenchmarkLatency(lat, restrict_to=common))

    def candidates(self) -> list[Arch]:
        """Architectures with both an accuracy and a latency, in a stable order."""
        keys = self.latency._candidates or set()
        return sorted(keys, key=lambda a: a.indices)

    def oracle(self, target_ms: float) -> tuple[float, Arch]:
        """The best feasible accuracy in the tables (the benchmark's reference).

        Raises:
            BenchmarkTableError: nothing meets the target.
        """
        acc, lat = self.accuracy.column.values, self.latency.column.values
        feasible = [a for a in self.candidates() if lat[a] <= target_ms]
        if not feasible:
            raise BenchmarkTableError(f"no architecture in the tables is within {target_ms:g} ms")
        best = max(feasible, key=acc.__getitem__)
        return acc[best], best

    def fitted_latency(self, k: int, rng: np.random.Generator) -> RidgeLatency:
        """A ridge latency model fitted on ``k`` random rows of the latency table.

        Raises:
            UsageError: ``k`` outside ``[2, rows]``.
        """
        cands = self.candidates()
        if not 2 <= k <= len(cands):
            raise UsageError(f"--latency-samples must be in [2, {len(cands)}], got {k}")
        picked = [cands[i] for i in rng.choice(len(cands), size=k, replace=False)]
        y = np.array([self.latency.latency_ms(a) for a in picked])
        model = RidgeLatency(self.space).fit(picked, y)
        model.provenance.update({"table": self.latency.column.source, "column": self.latency.column.name})
        return model


def run_tabular(
    space: str | SearchSpace,
    accuracy_table: str | TabularProblem,
    latency_table: str | None,
    target_ms: float,
    algorithm: str,
    queries: int,
    seed: int,
    latency_samples: int | None = None,
    **options: Any,
) -> SearchResult:
    """Search a tabular benchmark (the engine of ``latkit search --accuracy-table``).

    Args:
        space: a space name or object (e.g. ``"nasbench201"``).
        accuracy_table: ``CSV:COLUMN`` of accuracies, or a loaded
            :class:`TabularProblem` (then ``latency_table`` is ignored).
        latency_table: ``CSV:COLUMN`` of latencies (ms).
        target_ms: the hard latency target.
        algorithm: a registered algorithm name.
        queries: the accuracy-query budget.
        seed: seeds the generator (and the latency-sample draw).
        latency_samples: when given, search against a ridge model fitted on this
            many random rows instead of the table itself.
        **options: passed to the algorithm.

    Raises:
        LatkitError: bad tables, unknown algorithm, unreachable target.
    """
    if isinstance(accuracy_table, TabularProblem):
        problem = accuracy_table
    else:
        if latency_table is None:
            raise UsageError("a tabular search needs --latency-table CSV:COLUMN")
        problem = TabularProblem.load(space, accuracy_table, latency_table)
    rng = np.random.default_rng(seed)
    latency: Any = problem.latency
    if latency_samples is not None:
        latency = problem.fitted_latency(latency_samples, np.random.default_rng([seed, 1]))
    result = run_algorithm(
        algorithm, problem.space, problem.accuracy, latency, target_ms, queries, rng,
        seed=seed, **options,
    )
    best = problem.space.arch_from_native(result.best_arch)
    true_ms = problem.latency.latency_ms(best)
    oracle_acc = None
    try:
        oracle_acc = problem.oracle(target_ms)[0]
    except BenchmarkTableError:
        pass  # the model thought something fits; the table disagrees everywhere
    result.extra.update(
        {
            "true_latency_ms": true_ms,
            "truly_feasible": bool(true_ms <= target_ms),
            "oracle_accuracy": oracle_acc,
        }
    )
    return result
