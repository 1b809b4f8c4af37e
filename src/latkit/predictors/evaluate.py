"""Plain functions behind ``latkit predictor fit|predict|eval``.

* :func:`evaluate` - few-shot transfer to a new device column, repeated over
  seeds, with the reference-ridge baseline beside it; optional scatter plot.
* :func:`fit_from_csv` - fit a predictor on a latency CSV and save it.
* :func:`predict_archs` - load a saved predictor and predict architectures.
* :func:`design_from_csv` - which K archs to measure on a new device.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np

from latkit.core.files import write_figure
from latkit.core.errors import StoreError, UsageError
from latkit.predictors.base import get_predictor, load, load_metadata, save
from latkit.predictors.data import (
    check_unique_archs,
    LatencyDataset,
    encode_archs,
    join_column,
    parse_archs,
    read_latency_csv,
)
from latkit.predictors.metrics import Scores, mean_scores, score
from latkit.predictors.meta import HardwareMetaPredictor
from latkit.predictors.transfer import (
    Design,
    FewShotTransfer,
    design_rows,
    hardware_of,
    known_columns,
    reference_ridge_baseline,
    select_archs,
)

log = logging.getLogger(__name__)

FEATURES_ENCODING = "encoding"
FEATURES_KNOWN = "known_devices"


class FewShotModel(str, Enum):
    """The few-shot models ``latkit predictor eval`` compares."""

    HWMETA = "hwmeta"  # hardware-conditioned, meta-trained (predictors.meta)
    FEWSHOT = "fewshot"  # ridge combination of the known devices (predictors.transfer)


@dataclass
class FewShotResult:
    """Per-seed scores of the method and of the baselines, for one target column."""

    target: str
    k: int
    known: list[str]
    method: list[Scores] = field(default_factory=list)
    baseline: list[Scores] = field(default_factory=list)  # ridge on 3 reference devices, random K
    ridge: list[Scores] = field(default_factory=list)  # the ridge combination, same design
    coverage: list[float] = field(default_factory=list)  # share of archs inside their interval

    def summary(self) -> dict[str, Any]:
        """Means over seeds, JSON-ready."""
        method = mean_scores(self.method)
        if self.coverage:
            method["coverage"] = float(np.mean(self.coverage))
        return {
            "target": self.target,
            "k": self.k,
            "known": self.known,
            "method": method,
            "ridge": mean_scores(self.ridge) if self.ridge else None,
            "baseline": mean_scores(self.baseline) if self.baseline else None,
        }


def _target_values(
    dataset: LatencyDataset, target: str, target_dataset: LatencyDataset | None
) -> np.ndarray:
    if target_dataset is not None:
        return join_column(dataset, target_dataset, target)
    return dataset.column(target, allow_nan=True)


def hardware_groups(known: list[str], columns: list[str] | tuple[str, ...]) -> np.ndarray:
    """An integer hardware id per known column (:func:`~latkit.predictors.transfer.hardware_of`)."""
    names = [hardware_of(c, columns) for c in known]
    ids = {h: i for i, h in enumerate(dict.fromkeys(names))}
    return np.asarray([ids[h] for h in names], dtype=np.int64)


@dataclass(frozen=True)
class _Task:
    """One few-shot task: known latencies, encodings and target values of the rows with a target value."""

    known_ms: np.ndarray
    encodings: np.ndarray | None
    y: np.ndarray
    groups: np.ndarray | None


def _fit_predict(model: FewShotModel, task: _Task, rows: np.ndarray, rest: np.ndarray, design: Design,
                 seed: int) -> tuple[Any, ...]:
    """Predictions of ``rest`` from the K ``rows`` (the target is read at ``rows`` only), and intervals."""
    if model is FewShotModel.FEWSHOT:
        m = FewShotTransfer().fit(task.known_ms[rows], task.y[rows], reference=task.known_ms)
        return m.predict(task.known_ms[rest]), None
    if task.encodings is None:
        raise UsageError("the hwmeta model needs the archs' encodings; pass the search space")
    m = HardwareMetaPredictor(design=design.value, random_state=seed)
    m.fit(task.encodings[rows], task.y[rows], reference_X=task.encodings, reference_ms=task.known_ms,
          groups=task.groups)
    return m.predict(task.encodings[rest]), m.predict_interval(task.encodings[rest])


def _one_seed(result: FewShotResult, task: _Task, model: FewShotModel, design: Design, seed: int,
              baseline: bool) -> tuple[np.ndarray, np.ndarray]:
    """Score one design (seed) into ``result``; the predicted and measured latencies of the rest."""
    y = task.y
    rows = design_rows(task.known_ms, result.k, design, random_state=seed)
    rest = np.setdiff1d(np.arange(len(y)), rows)
    pred, interval = _fit_predict(model, task, rows, rest, design, seed)
    result.method.append(score(y[rest], pred))
    if interval is not None:
        result.coverage.append(float(np.mean((y[rest] >= interval[0]) & (y[rest] <= interval[1]))))
    if baseline and model is not FewShotModel.FEWSHOT:
        result.ridge.append(score(y[rest], _fit_predict(FewShotModel.FEWSHOT, task, rows, rest, design, seed)[0]))
    if baseline:
        rand = np.random.default_rng(seed).choice(len(y), result.k, replace=False)
        base = reference_ridge_baseline(task.known_ms, rand, y[rand])
        rest_b = np.setdiff1d(np.arange(len(y)), rand)
        result.baseline.append(score(y[rest_b], base[rest_b]))
    return pred, y[rest]


def few_shot(
    dataset: LatencyDataset,
    target: str,
    k: int,
    *,
    known: list[str] | None = None,
    strict: bool = False,
    seeds: int | list[int] = 3,
    target_dataset: LatencyDataset | None = None,
    baseline: bool = True,
    model: FewShotModel = FewShotModel.FEWSHOT,
    design: Design = Design.FARTHEST,
    encodings: np.ndarray | None = None,
) -> tuple[FewShotResult, np.ndarray, np.ndarray]:
    """Few-shot transfer of ``dataset``'s known columns to ``target`` with K measured archs.

    The target column is never read except at the K chosen rows (and for scoring
    the other rows). Rows where the target is missing are neither chosen nor scored.
    Every choice a model makes (``hwmeta``'s head and interval, ``fewshot``'s
    ridge strength) is made by an inner leave-one-device-out loop over the known
    columns alone, so the evaluation is nested. With ``strict``, no column of the
    target's hardware is known (:func:`~latkit.predictors.transfer.hardware_of`),
    and inside ``hwmeta``'s inner loop no known device sees its own hardware either.

    Args:
        model: the few-shot model; ``hwmeta`` needs ``encodings``.
        design: how the K archs are chosen.
        encodings: one-hot encodings of ``dataset``'s rows (for ``hwmeta``).

    Returns:
        The result, and the last seed's predicted and measured latencies of the scored rows.

    Raises:
        UnknownNameError / UsageError: bad column names, K too large, NaNs in known columns.
    """
    cols = list(dataset.devices) + ([target] if target_dataset is not None and target not in dataset.devices else [])
    known = known if known is not None else known_columns(cols, target, strict=strict)
    if target in known:
        raise UsageError(f"target {target!r} cannot also be a known device")
    if not known:
        raise UsageError(f"no known device column is left beside {target!r}; pass --known")
    y_all = _target_values(dataset, target, target_dataset)
    have = np.flatnonzero(np.isfinite(y_all))
    if not 2 <= k < len(have):
        raise UsageError(
            f"K={k} must be at least 2 and below the {len(have)} archs with a {target!r} value"
        )
    task = _Task(dataset.columns(known)[have],  # raises on NaN in known columns
                 None if encodings is None else np.asarray(encodings)[have], y_all[have],
                 hardware_groups(known, cols) if strict else None)
    result = FewShotResult(target, k, list(known))
    pred = meas = np.empty(0)
    for seed in list(range(seeds)) if isinstance(seeds, int) else list(seeds):
        pred, meas = _one_seed(result, task, FewShotModel(model), Design(design), seed, baseline)
    return result, pred, meas


def evaluate(
    csv: str | Path,
    space: str,
    target: str,
    k: int = 10,
    *,
    known: list[str] | None = None,
    strict: bool = False,
    target_csv: str | Path | None = None,
    seeds: int = 3,
    plot: str | Path | None = None,
    model: FewShotModel = FewShotModel.HWMETA,
    design: Design = Design.ACTIVE,
) -> dict[str, Any]:
    """Evaluate few-shot transfer to ``target`` on a latency CSV (nested: see :func:`few_shot`).

    Args:
        csv: latency CSV (``arch_index, arch, <device>...``).
        space: search space of the ``arch`` column (checked to parse).
        target: the new device's column (in ``csv`` or in ``target_csv``).
        k: archs measured on the new device.
        known: known-device columns (default: all others, see ``strict``).
        strict: leave out every column of the target's hardware (other batch sizes).
        target_csv: a separate CSV with ``arch`` and ``target`` columns.
        seeds: repeats (different designs).
        plot: write a predicted-vs-measured scatter PNG here.
        model: the few-shot model (the ridge combination is scored beside ``hwmeta``).
        design: how the K archs are chosen.

    Returns:
        Summary dict: target, k, known columns, mean scores of the method (with
        its interval coverage), of the ridge combination and of the baseline.
    """
    dataset = read_latency_csv(csv)
    check_unique_archs(space, dataset)  # bad arch tokens and conflicting repeats fail here, with the rows
    target_dataset = read_latency_csv(target_csv) if target_csv is not None else None
    encodings = encode_archs(space, dataset.archs) if FewShotModel(model) is FewShotModel.HWMETA else None
    result, pred, meas = few_shot(
        dataset, target, k, known=known, strict=strict, seeds=seeds, target_dataset=target_dataset,
        model=model, design=design, encodings=encodings,
    )
    summary = result.summary()
    summary.update(model=FewShotModel(model).value, design=Design(design).value, strict=strict)
    if plot is not None:
        scatter_plot(meas, pred, plot, title=f"{target}, K={k} ({space})")
        summary["plot"] = str(plot)
    return summary


def scatter_plot(measured_ms: np.ndarray, predicted_ms: np.ndarray, path: str | Path, title: str = "") -> Path:
    """Predicted-vs-measured scatter with ±10% bands, as a PNG (matplotlib, Agg)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        from latkit.core.errors import MissingExtraError

        raise MissingExtraError("plotting", "predictors", exc) from exc
    fig, ax = plt.subplots(figsize=(4.5, 4.5), dpi=120)
    ax.scatter(measured_ms, predicted_ms, s=3, alpha=0.4)
    lo, hi = float(np.min(measured_ms)), float(np.max(measured_ms))
    xs = np.array([lo, hi])
    ax.plot(xs, xs, "k-", lw=1)
    ax.plot(xs, 1.1 * xs, "k--", lw=0.7)
    ax.plot(xs, 0.9 * xs, "k--", lw=0.7)
    ax.set_xlabel("measured latency (ms)")
    ax.set_ylabel("predicted latency (ms)")
    ax.set_title(title)
    fig.tight_layout()
    try:
        write_figure(path, fig, dpi=120, what="scatter plot")
    finally:
        plt.close(fig)
    return Path(path)


def fit_from_csv(
    csv: str | Path,
    space: str,
    target: str,
    out_dir: str | Path,
    *,
    predictor: str = "xgboost",
    params: dict[str, Any] | None = None,
    k: int | None = None,
    known: list[str] | None = None,
    target_csv: str | Path | None = None,
    random_state: int = 0,
    design: Design = Design.ACTIVE,
) -> Any:
    """Fit a predictor of ``target``'s latency and save it to ``out_dir``.

    ``predictor="hwmeta"`` reads the space's encoding (``latkit search --predictor``
    can use it), is meta-trained on the known columns and adapted to the ``k`` archs
    ``design`` picks among the measured ones (all of them without ``k``).
    With ``predictor="fewshot"`` the features are the known devices' latencies
    (every other column, or ``known``); the rows are the ``k`` archs that
    :func:`select_archs` picks, or, without ``k``, every row where the target was
    measured (e.g. a ``target_csv`` of your own K measurements). Any other predictor
    reads the space's encoding and trains on the measured rows (a random ``k`` of
    them when given).

    Returns:
        The fitted predictor.
    """
    dataset = read_latency_csv(csv)
    target_dataset = read_latency_csv(target_csv) if target_csv is not None else None
    y_all = _target_values(dataset, target, target_dataset)
    have = np.flatnonzero(np.isfinite(y_all))
    if len(have) < 2:
        raise UsageError(f"column {target!r} has fewer than 2 measured archs; measure more")
    if k is not None and not 2 <= k <= len(have):
        raise UsageError(f"K={k} must be between 2 and the {len(have)} measured archs")
    provenance: dict[str, Any] = {"csv": str(csv), "target_csv": str(target_csv) if target_csv else None}
    if known and predictor not in ("fewshot", "hwmeta"):  # they alone read the columns: others would ignore them
        raise UsageError(f"known device columns are read by the fewshot and hwmeta predictors, not by "
                         f"{predictor!r}; drop them or use --predictor fewshot or hwmeta")
    if predictor == "hwmeta":
        model, known, rows = _fit_hwmeta(dataset, space, target, y_all, have, k, known, params, design,
                                         random_state)
        provenance.update(features=FEATURES_ENCODING, known=known, design=Design(design).value,
                          inner_spearman=model.inner_spearman_, coverage=model.coverage)
    elif predictor == "fewshot":
        model, known, rows = _fit_fewshot(dataset, target, y_all, have, k, known, params, random_state)
        provenance.update(features=FEATURES_KNOWN, known=known)
    else:
        check_unique_archs(space, dataset)
        rng = np.random.default_rng(random_state)
        rows = have if k is None else rng.choice(have, k, replace=False)
        X = encode_archs(space, [dataset.archs[i] for i in rows])
        model = get_predictor(predictor, **_with_space(predictor, params, space)).fit(X, y_all[rows])
        provenance.update(features=FEATURES_ENCODING)
    provenance.update(rows=int(len(rows)), random_state=random_state)
    save(model, out_dir, space=space, target=target, provenance=provenance)
    return model


def _fit_fewshot(dataset: LatencyDataset, target: str, y_all: np.ndarray, have: np.ndarray, k: int | None,
                 known: list[str] | None, params: dict[str, Any] | None,
                 random_state: int) -> tuple[Any, list[str], np.ndarray]:
    """``fewshot`` on the known columns' latencies, fitted on the ``k`` archs :func:`select_archs` picks.

    Returns:
        The fitted predictor, the known columns, the rows it was fitted on.
    """
    cols = list(dataset.devices) + ([target] if target not in dataset.devices else [])
    known = known or known_columns(cols, target)
    ref = dataset.columns(known)
    rows = have if k is None else have[select_archs(ref[have], k, random_state=random_state)]
    model = get_predictor("fewshot", **(params or {})).fit(ref[rows], y_all[rows], reference=ref)
    return model, known, rows


def _fit_hwmeta(dataset: LatencyDataset, space: str, target: str, y_all: np.ndarray, have: np.ndarray,
                k: int | None, known: list[str] | None, params: dict[str, Any] | None, design: Design,
                random_state: int) -> tuple[HardwareMetaPredictor, list[str], np.ndarray]:
    """``hwmeta`` meta-trained on the table's known columns, adapted to the target's K rows.

    Returns:
        The fitted predictor, the known columns, the rows it was adapted on.
    """
    check_unique_archs(space, dataset)
    cols = list(dataset.devices) + ([target] if target not in dataset.devices else [])
    known = known or known_columns(cols, target)
    ref = dataset.columns(known)
    rows = have if k is None or k >= len(have) else have[design_rows(ref[have], k, Design(design), random_state)]
    x = encode_archs(space, dataset.archs)
    model = HardwareMetaPredictor(**{"design": Design(design).value, "random_state": random_state, **(params or {})})
    model = model.fit(x[rows], y_all[rows], reference_X=x, reference_ms=ref)
    return model, known, rows


def _with_space(predictor: str, params: dict[str, Any] | None, space: str) -> dict[str, Any]:
    """``params`` with ``space`` filled in for predictors (or ensemble members) that take one."""
    from latkit.predictors.base import predictor_class

    out = dict(params or {})
    if "space" in predictor_class(predictor)._param_names():
        out.setdefault("space", space)
    if predictor == "ensemble":
        member = out.get("base", "xgboost")
        out["params"] = _with_space(member, out.get("params"), space)
    return out


def design_from_csv(
    csv: str | Path, k: int, *, known: list[str] | None = None, random_state: int = 0,
    space: str | None = None, design: Design = Design.FARTHEST,
) -> list[str]:
    """The ``k`` archs (native text, as in the CSV) to measure on a new device.

    Measure these, write them as a CSV with ``arch`` and the new device's column,
    and pass it as ``target_csv`` to :func:`fit_from_csv` with ``predictor="fewshot"``.
    Every arch must parse in ``space`` (default: the registered space that reads
    the first row), so a CSV of garbage never yields a design.

    Raises:
        ArchError: an arch that does not parse (naming its row), or no space reads the CSV.
    """
    dataset = read_latency_csv(csv)
    check_unique_archs(space or _space_of(dataset), dataset)
    ref = dataset.columns(known or list(dataset.devices))
    return [dataset.archs[i] for i in design_rows(ref, k, Design(design), random_state=random_state)]


def _space_of(dataset: LatencyDataset) -> str:
    """The registered space whose native form the CSV's first arch is written in."""
    from latkit.core.errors import ArchError
    from latkit.profiler.spaces import get_space, list_spaces

    first = dataset.archs[0]
    for name in list_spaces():
        try:
            get_space(name).parse_arch(first)
        except (ArchError, UsageError):
            continue
        return name
    raise ArchError(f"arch #1 of {dataset.source or 'the latency CSV'} ({first[:60]!r}) is an architecture of no "
                    f"known space ({', '.join(list_spaces())}); fix the {'arch'!r} column")


def predict_archs(
    predictor_dir: str | Path, archs: list[str], *, reference_csv: str | Path | None = None
) -> np.ndarray:
    """Latency (ms) of each architecture (native text) from a saved predictor.

    A few-shot predictor reads the known devices' latencies of each arch from
    ``reference_csv`` (default: the CSV it was fitted on).

    Raises:
        StoreError: unreadable predictor. ArchError: an arch the space cannot parse.
        UsageError: an arch absent from the reference CSV (few-shot).
    """
    meta = load_metadata(predictor_dir)
    model = load(predictor_dir)
    prov = meta.get("provenance", {})
    space = meta.get("space")
    if not isinstance(prov, dict) or (space is not None and not isinstance(space, str)):
        raise StoreError(f"{predictor_dir}: malformed provenance or space in its metadata; refit it")
    if prov.get("features") == FEATURES_KNOWN and (
        not isinstance(prov.get("known"), list) or not all(isinstance(c, str) for c in prov["known"])
        or not isinstance(reference_csv or prov.get("csv"), (str, Path))
    ):
        raise StoreError(f"{predictor_dir}: a few-shot predictor must record its known columns and CSV; "
                         "refit it")
    if not archs:
        raise UsageError("no architectures to predict")
    if reference_csv is not None and prov.get("features") != FEATURES_KNOWN:  # it would be ignored
        raise UsageError(f"{predictor_dir} predicts from the architecture alone; a reference CSV of known "
                         "devices' latencies is for few-shot predictors: drop it")
    if prov.get("features") == FEATURES_KNOWN:
        dataset = read_latency_csv(reference_csv or prov["csv"])
        if space:
            archs = [_canonical(space, a, dataset) for a in archs]
        where = {a: i for i, a in enumerate(dataset.archs)}
        missing = [a for a in archs if a not in where]
        if missing:
            raise UsageError(
                f"{len(missing)} arch(s) not in {dataset.source}, e.g. {missing[0][:60]!r}; "
                "few-shot predictors need the known devices' latencies of every arch"
            )
        X = dataset.columns(prov["known"])[[where[a] for a in archs]]
    else:
        if not space:
            raise UsageError(f"{predictor_dir} records no search space; refit it with --space")
        X = encode_archs(space, archs)
    pred = np.asarray(model.predict(X), dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(pred))
    if bad.size:  # damaged weights the loader could not see (e.g. inside an XGBoost model)
        raise StoreError(f"predictor {predictor_dir} gives a non-finite latency for arch #{bad[0] + 1} "
                         f"({archs[bad[0]][:60]!r}); its weights are damaged, refit it")
    return pred


def _canonical(space_name: str, text: str, dataset: LatencyDataset) -> str:
    """``text`` written as the CSV writes archs (parsing validates it)."""
    from latkit.profiler.spaces import get_space

    sp = get_space(space_name)
    arch = parse_archs(space_name, [text])[0]
    if text in dataset.archs:
        return text
    native = sp.arch_to_native(arch)
    return " ".join(native) if isinstance(native, list) else str(native)
