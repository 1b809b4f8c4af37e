"""The predictor contract, its registry, and pickle-free persistence.

Every latency predictor follows scikit-learn's estimator contract:

* ``__init__`` stores its keyword parameters unchanged (no validation, no work);
* ``fit(X, y) -> self`` learns; every learned attribute ends in ``_``;
* ``predict(X) -> np.ndarray`` of latencies (ms), shape ``[n]``;
* randomness comes only from the ``random_state`` parameter;
* optionally ``predict_with_uncertainty(X) -> (mean, std)``.

Predictors register themselves with :func:`register_predictor` and are created by
name with :func:`get_predictor`; third-party packages add theirs through the
``latkit.predictors`` entry-point group (each entry point names a module or a
class; loading it registers the predictor).

:func:`save` writes a directory holding ``predictor.json`` (schema, versions,
parameters, provenance) plus the weights in a portable format chosen by the
predictor: XGBoost's JSON model, safetensors (torch) or plain JSON arrays. Nothing
is pickled. :func:`load` refuses, with one actionable line, a file of another
schema version or one whose weights were written by another major version of
the library that reads them.

To be persistable a predictor implements two hooks::

    def _save_weights(self, directory: Path) -> WeightsInfo: ...
    def _load_weights(self, directory: Path, info: WeightsInfo) -> None: ...
"""

from __future__ import annotations

import importlib.metadata
import inspect
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from latkit.core.files import one_line, read_json, write_json
from latkit._version import __version__
from latkit.core.errors import StoreError, UsageError
from latkit.core.registry import Registry, name_attribute, subclass_of

log = logging.getLogger(__name__)

SCHEMA = "latkit.predictor"
SCHEMA_VERSION = 1
METADATA_FILE = "predictor.json"
ENTRY_POINT_GROUP = "latkit.predictors"

# libraries whose versions every saved predictor records
_TRACKED_LIBRARIES = ("numpy", "xgboost", "torch", "scikit-learn", "safetensors")
# a library installed under another distribution name (the same module, another wheel)
_DISTRIBUTIONS = {"xgboost": ("xgboost", "xgboost-cpu")}
# weight formats and the library whose major version must match to read them
WEIGHT_FORMATS = {"json": None, "xgboost": "xgboost", "safetensors": "torch"}


# --------------------------------------------------------------------------- contract


class Predictor:
    """Base class of latency predictors (scikit-learn estimator contract).

    Subclasses declare every parameter as a keyword argument of ``__init__`` and
    store it under the same attribute name, so that :meth:`get_params`,
    :meth:`clone` and :func:`save` work without extra code.
    """

    #: registry name, set by :func:`register_predictor`
    name: str = ""

    def fit(self, X: np.ndarray, y: np.ndarray) -> Predictor:  # noqa: N803 (sklearn names)
        """Learn from features ``X`` [n, d] and latencies ``y`` [n] (ms); return ``self``."""
        raise NotImplementedError

    def predict(self, X: np.ndarray) -> np.ndarray:  # noqa: N803
        """Predicted latency (ms) of every row of ``X``."""
        raise NotImplementedError

    # ---- parameters ----

    @classmethod
    def _param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [
            p.name
            for p in sig.parameters.values()
            if p.name != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        ]

    def get_params(self) -> dict[str, Any]:
        """The constructor parameters, as given."""
        return {k: getattr(self, k) for k in self._param_names()}

    def set_params(self, **params: Any) -> Predictor:
        """Change constructor parameters; return ``self``.

        Raises:
            UsageError: a name that is not a parameter of this predictor.
        """
        known = set(self._param_names())
        for k, v in params.items():
            if k not in known:
                raise UsageError(
                    f"{type(self).__name__} has no parameter {k!r}; known: {', '.join(sorted(known))}"
                )
            setattr(self, k, v)
        return self

    def clone(self) -> Predictor:
        """A new, unfitted predictor with the same parameters."""
        return type(self)(**self.get_params())

    @property
    def is_fitted(self) -> bool:
        """True once :meth:`fit` has set learned (``_``-suffixed) attributes."""
        return any(k.endswith("_") and not k.startswith("_") for k in vars(self))

    def _check_fitted(self) -> None:
        if not self.is_fitted:
            raise UsageError(f"{type(self).__name__} is not fitted; call fit(X, y) first")

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    # ---- persistence hooks (override to make a predictor savable) ----

    def _save_weights(self, directory: Path) -> WeightsInfo:
        raise StoreError(f"predictor {self.name or type(self).__name__!r} cannot be saved")

    def _load_weights(self, directory: Path, info: WeightsInfo) -> None:
        raise StoreError(f"predictor {self.name or type(self).__name__!r} cannot be loaded")


def supports_uncertainty(predictor: Predictor) -> bool:
    """Whether the predictor offers ``predict_with_uncertainty``."""
    return callable(getattr(predictor, "predict_with_uncertainty", None))


def check_X(X: Any, n_features: int | None = None, what: str = "X") -> np.ndarray:  # noqa: N802
    """``X`` as a finite float64 2-D array.

    Raises:
        UsageError: wrong shape, NaN/inf values, or a feature count other than the fit's.
    """
    arr = np.asarray(X, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise UsageError(f"{what} must be a non-empty 2-D array, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise UsageError(f"{what} holds NaN or infinite values; drop or fill those rows first")
    if n_features is not None and arr.shape[1] != n_features:
        raise UsageError(
            f"{what} has {arr.shape[1]} features but the predictor was fitted on {n_features}"
        )
    return arr


def check_Xy(X: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:  # noqa: N802
    """``X`` and ``y`` validated: same row count, finite, ``y`` positive latencies.

    Raises:
        UsageError: mismatched lengths, NaN/inf, or non-positive latencies.
    """
    arr = check_X(X)
    lat = np.asarray(y, dtype=np.float64).reshape(-1)
    if lat.shape[0] != arr.shape[0]:
        raise UsageError(f"X has {arr.shape[0]} rows but y has {lat.shape[0]} latencies")
    if not np.all(np.isfinite(lat)):
        raise UsageError("y holds NaN or infinite latencies; drop those rows first")
    if np.any(lat < 0):
        raise UsageError("y holds negative latencies; latencies must be >= 0 ms")
    return arr, lat


# --------------------------------------------------------------------------- registry

# built-in modules are imported on first registry use, so that every built-in predictor
# is listed without the caller importing its module (one whose optional backend is
# absent is skipped)
PREDICTORS: Registry[type[Predictor]] = Registry(
    "predictor",
    ENTRY_POINT_GROUP,
    builtins=(
        "latkit.predictors.network",
        "latkit.predictors.gcn",
        "latkit.predictors.ensemble",
        "latkit.predictors.transfer",
        "latkit.predictors.meta",
        "latkit.predictors.oplevel",
        "latkit.predictors.lutsum",
    ),
    on_register=name_attribute("name"),
    check=subclass_of(Predictor),
)


def register_predictor(name: str) -> Callable[[type[Predictor]], type[Predictor]]:
    """Class decorator: register a :class:`Predictor` subclass under ``name``."""
    return PREDICTORS.register(name)


def predictor_class(name: str) -> type[Predictor]:
    """The predictor class registered under ``name``.

    Raises:
        UnknownNameError: no such predictor.
    """
    return PREDICTORS.get(name)


def get_predictor(name: str, **params: Any) -> Predictor:
    """A new, unfitted predictor ``name`` built with ``params``.

    Raises:
        UnknownNameError: no such predictor.
        UsageError: a parameter the predictor does not take.
    """
    cls = predictor_class(name)
    known = set(cls._param_names())
    bad = sorted(set(params) - known)
    if bad:
        raise UsageError(
            f"predictor {name!r} has no parameter(s) {', '.join(bad)}; "
            f"known: {', '.join(sorted(known))}"
        )
    return cls(**params)


def list_predictors(pattern: str = "*") -> list[str]:
    """Registered predictor names matching a glob."""
    return PREDICTORS.names(pattern)


# --------------------------------------------------------------------------- persistence


@dataclass
class WeightsInfo:
    """What :meth:`Predictor._save_weights` wrote: format, files and extra fields."""

    format: str  # one of WEIGHT_FORMATS
    files: list[str]
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.format not in WEIGHT_FORMATS:
            raise UsageError(
                f"unknown weights format {self.format!r}; known: {', '.join(WEIGHT_FORMATS)}"
            )

    def to_json(self) -> dict[str, Any]:
        lib = WEIGHT_FORMATS[self.format]
        return {
            "format": self.format,
            "files": list(self.files),
            "library": lib,
            "library_version": library_versions().get(lib) if lib else None,
            "extra": self.extra,
        }


def library_versions() -> dict[str, str | None]:
    """Installed versions of the libraries predictors depend on (None when absent)."""
    out: dict[str, str | None] = {}
    for lib in _TRACKED_LIBRARIES:
        out[lib] = None
        for dist in _DISTRIBUTIONS.get(lib, (lib,)):
            try:
                out[lib] = importlib.metadata.version(dist)
                break
            except importlib.metadata.PackageNotFoundError:
                continue
    return out


def _major(version: str | None) -> str | None:
    return version.split(".")[0] if version else None


def _jsonable(value: Any) -> Any:
    """Parameters as JSON (tuples to lists, numpy scalars to Python)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise StoreError(
        f"parameter value {value!r} of type {type(value).__name__} cannot be saved as JSON; "
        "pass plain numbers, strings or lists"
    )


def save(
    predictor: Predictor,
    directory: str | Path,
    *,
    space: str | None = None,
    target: str | None = None,
    provenance: dict[str, Any] | None = None,
) -> Path:
    """Write a fitted predictor to ``directory`` (created if needed).

    Args:
        predictor: a fitted, registered predictor.
        directory: where ``predictor.json`` and the weight files go.
        space: the search space whose encoding the predictor reads.
        target: the device (column) whose latency it predicts.
        provenance: where the training data came from (file, rows, K, seed, ...).

    Returns:
        The directory.

    Raises:
        StoreError: the predictor is not fitted, not registered, or cannot be saved.
    """
    if not predictor.name or predictor_class(predictor.name) is not type(predictor):
        raise StoreError(
            f"{type(predictor).__name__} is not a registered predictor; "
            "decorate it with @register_predictor(name) before saving"
        )
    if not predictor.is_fitted:
        raise StoreError(f"predictor {predictor.name!r} is not fitted; fit it before saving")
    path = Path(directory)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create predictor directory {path}: {exc}") from exc
    weights = predictor._save_weights(path)
    meta = {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "latkit_version": __version__,
        "predictor": predictor.name,
        "params": _jsonable(predictor.get_params()),
        "space": space,
        "target_device": target,
        "provenance": _jsonable(provenance or {}),
        "libraries": library_versions(),
        "weights": weights.to_json(),
    }
    write_json(path / METADATA_FILE, meta, "predictor metadata", indent=2, sort_keys=True)
    log.info("saved predictor %s to %s", predictor.name, path)
    return path


# old schema versions map to a function that upgrades their metadata dict
_MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {}


def load_metadata(directory: str | Path) -> dict[str, Any]:
    """The checked metadata of a saved predictor.

    Raises:
        StoreError: missing or unreadable file, another schema, or an incompatible version.
    """
    path = Path(directory) / METADATA_FILE
    if not path.exists():
        raise StoreError(f"{path} not found; point to a directory written by `latkit predictor fit`")
    meta = read_json(path, "predictor metadata")
    if not isinstance(meta, dict) or meta.get("schema") != SCHEMA:
        raise StoreError(f"{path} is not a latkit predictor (schema {SCHEMA!r} expected)")
    version = meta.get("schema_version")
    while isinstance(version, int) and version < SCHEMA_VERSION and version in _MIGRATIONS:
        meta = _MIGRATIONS[version](meta)
        version = meta.get("schema_version")
    if version != SCHEMA_VERSION:
        raise StoreError(
            f"{path} has predictor schema version {version}, this latkit "
            f"{__version__} reads version {SCHEMA_VERSION}; refit with `latkit predictor fit`"
        )
    _check_metadata_types(meta, path)
    weights = meta["weights"]
    lib = weights.get("library")
    if lib:
        saved, now = weights.get("library_version"), library_versions().get(lib)
        if now is None:
            raise StoreError(
                f"{path} needs {lib} {saved} to read its weights, which is not installed; "
                "install it with: pip install 'latkit[predictors]'"
            )
        if _major(saved) != _major(now):
            raise StoreError(
                f"predictor {path.parent} was saved with {lib} {_major(saved)}.x, this is "
                f"{_major(now)}.x; refit with `latkit predictor fit`"
            )
    return meta


def load(directory: str | Path) -> Predictor:
    """Read a predictor written by :func:`save`.

    Raises:
        StoreError: see :func:`load_metadata`; or weights that do not match the predictor.
        UnknownNameError: the predictor's name is not registered here.
    """
    path = Path(directory)
    meta = load_metadata(path)
    cls = predictor_class(meta["predictor"])
    params = meta.get("params", {})
    check_params(cls, params, f"{path / METADATA_FILE}")
    try:
        predictor = cls(**params)
    except (TypeError, UsageError) as exc:
        raise StoreError(
            f"{path}: parameters do not fit predictor {meta['predictor']!r} ({one_line(exc)}); "
            "refit with `latkit predictor fit`"
        ) from exc
    w = meta["weights"]
    info = WeightsInfo(w["format"], list(w.get("files", [])), dict(w.get("extra", {})))
    for name in info.files:
        weight_file(path, name)
    try:
        predictor._load_weights(path, info)
    except (KeyError, IndexError, TypeError, ValueError, AttributeError, OverflowError) as exc:
        raise StoreError(
            f"the weights metadata in {path / METADATA_FILE} is malformed ({type(exc).__name__}: "
            f"{one_line(exc)}); refit with `latkit predictor fit`"
        ) from exc
    return predictor


def weight_file(directory: Path, name: Any) -> Path:
    """``directory / name`` for a weight file a predictor lists, refusing names that leave it.

    Raises:
        StoreError: an absolute name, a name that resolves (through ``..`` or a
            symlink) outside ``directory``, or a file that is missing.
    """
    if not isinstance(name, str) or not name or Path(name).is_absolute():
        raise StoreError(f"{directory / METADATA_FILE} lists a weight file {name!r}; "
                         "weight files are relative names inside the predictor's folder")
    root = directory.resolve()
    target = (directory / name).resolve()
    if not target.is_relative_to(root):
        raise StoreError(f"{directory / METADATA_FILE} lists a weight file {name!r} outside the "
                         "predictor's folder; refusing to read it")
    if not target.is_file():
        raise StoreError(f"{directory / name} is missing; the predictor directory is incomplete")
    return target


# bounds of loaded integer parameters: far beyond any fitted predictor, small enough
# that building the model they describe cannot exhaust memory
_INT_RANGE = (0, 2**32 - 1)
_WIDTH_RANGE = (1, 1 << 16)
_WIDTH_PARAMS = frozenset({"hidden", "layers", "head", "n_members"})
_THREAD_RANGE = (0, 1024)
_THREAD_PARAMS = frozenset({"threads", "n_jobs"})


def check_params(cls: type, params: Any, where: str) -> None:
    """Refuse loaded parameters whose types differ from ``cls.__init__``'s annotations.

    Raises:
        StoreError: unknown names, or a value of another type (a string for an
            int, a bool for a float, a non-finite float, an out-of-range int).
    """
    if not isinstance(params, dict):
        raise StoreError(f"{where}: 'params' must be an object, got {type(params).__name__}")
    sig = inspect.signature(cls.__init__)
    for name, value in params.items():
        p = sig.parameters.get(name)
        if p is None or name == "self":
            known = ", ".join(n for n in sig.parameters if n != "self")
            raise StoreError(f"{where}: {cls.__name__} has no parameter {name!r} (known: {known}); refit it")
        annotation = p.annotation if isinstance(p.annotation, str) else getattr(p.annotation, "__name__", "")
        problem = _param_problem(name, value, str(annotation))
        if problem:
            shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
            raise StoreError(f"{where}: parameter {name!r} is {shown}, {problem}; refit the predictor")
    base, inner = params.get("base"), params.get("params")
    if isinstance(base, str) and isinstance(inner, dict):  # an ensemble's member parameters
        check_params(predictor_class(base), inner, where)


def _param_problem(name: str, value: Any, annotation: str) -> str:
    """What is wrong with ``value`` for an ``annotation`` like ``int | None``; "" if fine."""
    kinds = {a.strip().split("[")[0] for a in annotation.split("|")}
    if not kinds - {""} or "Any" in kinds:
        return ""
    lo, hi = (_WIDTH_RANGE if name in _WIDTH_PARAMS else _THREAD_RANGE if name in _THREAD_PARAMS
              else _INT_RANGE)
    if value is None:
        return "" if "None" in kinds else f"expected {annotation}"
    if isinstance(value, bool):
        return "" if "bool" in kinds else f"expected {annotation}"
    if isinstance(value, int):
        if "int" in kinds:
            return "" if lo <= value <= hi else f"expected an integer from {lo} to {hi}"
        if "float" in kinds:
            return "" if math.isfinite(value) else "expected a finite number"
        return f"expected {annotation}"
    if isinstance(value, float):
        if "float" in kinds:
            return "" if math.isfinite(value) else "expected a finite number"
        return f"expected {annotation}"
    if isinstance(value, str):
        return "" if "str" in kinds else f"expected {annotation}"
    if isinstance(value, list):
        if not kinds & {"list", "tuple"}:
            return f"expected {annotation}"
        if "[int" in annotation.replace(" ", "") and not all(
            isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi for v in value
        ):
            return f"expected integers from {lo} to {hi}"
        return "" if len(value) <= 64 else "expected at most 64 entries"
    if isinstance(value, dict):
        return "" if "dict" in kinds else f"expected {annotation}"
    return f"expected {annotation}"


def _check_metadata_types(meta: dict[str, Any], path: Path) -> None:
    """The fields :func:`load` reads have the types it expects."""
    if not isinstance(meta.get("predictor"), str):
        raise StoreError(f"{path}: 'predictor' must be a predictor name; refit with `latkit predictor fit`")
    w = meta.get("weights")
    if (not isinstance(w, dict) or not isinstance(w.get("format"), str)
            or not isinstance(w.get("files", []), list) or not isinstance(w.get("extra", {}), dict)):
        raise StoreError(f"{path}: 'weights' must be an object with a format, a files list and an extra "
                         "object; refit with `latkit predictor fit`")
    if not _all_finite(w.get("extra", {})):
        raise StoreError(f"{path}: 'weights.extra' holds NaN or infinite numbers; the file is damaged, "
                         "refit with `latkit predictor fit`")


# --------------------------------------------------------------------------- weight helpers


# dtypes a weights file may hold (no objects, strings or structured records)
_ARRAY_DTYPES = frozenset({"bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32",
                           "uint64", "float16", "float32", "float64"})
MAX_ARRAY_ELEMENTS = 1 << 26


def write_json_arrays(path: Path, arrays: dict[str, Any]) -> None:
    """Write named numpy arrays (and plain scalars/lists) as one JSON file, atomically."""
    out = {}
    for k, v in arrays.items():
        if isinstance(v, np.ndarray):
            out[k] = {"dtype": str(v.dtype), "shape": list(v.shape), "data": v.ravel().tolist()}
        else:
            out[k] = {"value": _jsonable(v)}
    write_json(path, out, "predictor weights", indent=None)


def read_json_arrays(path: Path) -> dict[str, Any]:
    """Read a file written by :func:`write_json_arrays`.

    Raises:
        StoreError: unreadable or malformed file.
    """
    raw = read_json(path, "predictor weights")
    if not isinstance(raw, dict):
        raise StoreError(f"cannot read weights {path}: not a JSON object; refit the predictor")
    out: dict[str, Any] = {}
    for k, v in raw.items():
        if isinstance(v, dict) and set(v) == {"value"}:
            if not _all_finite(v["value"]):
                raise StoreError(f"{path}: value {k!r} holds NaN or infinite numbers; the file is damaged, "
                                 "refit the predictor")
            out[k] = v["value"]
            continue
        out[k] = _json_array(v, f"{path}: array {k!r}")
    return out


class JsonWeights:
    """Persistence for a predictor whose learned state is a few float arrays and numbers.

    Mix in before :class:`Predictor` and list the state in ``json_weights``: each
    name ``n`` is the attribute ``n_``, saved under the key ``n`` of
    ``weights.json`` (:func:`write_json_arrays`) and read back as a float64
    array or a float.
    """

    json_weights: tuple[str, ...] = ()

    def _save_weights(self, directory: Path) -> WeightsInfo:
        write_json_arrays(directory / "weights.json", {n: getattr(self, n + "_") for n in self.json_weights})
        return WeightsInfo("json", ["weights.json"])

    def _load_weights(self, directory: Path, info: WeightsInfo) -> None:
        w = read_json_arrays(directory / "weights.json")
        for n in self.json_weights:
            v = w[n]
            setattr(self, n + "_", v.astype(np.float64) if isinstance(v, np.ndarray) else float(v))


def _all_finite(value: Any, depth: int = 0) -> bool:
    """No NaN or infinity anywhere in a plain JSON value (bounded depth)."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, (list, dict)) and depth < 32:
        items = value.values() if isinstance(value, dict) else value
        return all(_all_finite(v, depth + 1) for v in items)
    return True


def _json_array(v: Any, where: str) -> np.ndarray:
    """One ``{"dtype", "shape", "data"}`` entry, checked before anything is allocated."""
    if not isinstance(v, dict) or set(v) != {"dtype", "shape", "data"}:
        raise StoreError(f"{where} must have exactly dtype, shape and data; refit the predictor")
    dtype, shape, data = v["dtype"], v["shape"], v["data"]
    if dtype not in _ARRAY_DTYPES:
        raise StoreError(f"{where} has dtype {dtype!r}; numeric dtypes only; refit the predictor")
    if (not isinstance(shape, list) or len(shape) > 8
            or not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d <= MAX_ARRAY_ELEMENTS for d in shape)):
        raise StoreError(f"{where} has shape {shape!r}; refit the predictor")
    size = math.prod(shape)
    if not isinstance(data, list) or len(data) != size or size > MAX_ARRAY_ELEMENTS:
        raise StoreError(f"{where} holds {len(data) if isinstance(data, list) else type(data).__name__} "
                         f"values for shape {shape}; refit the predictor")
    if not all(isinstance(x, (int, float)) for x in data):
        raise StoreError(f"{where} holds values that are not numbers; refit the predictor")
    if not all(math.isfinite(x) for x in data):  # predictors save finite weights (lutsum maps gaps to -1)
        raise StoreError(f"{where} holds NaN or infinite values; the file is damaged, refit the predictor")
    try:
        return np.asarray(data, dtype=dtype).reshape(shape)
    except (ValueError, OverflowError) as exc:
        raise StoreError(f"{where}: {one_line(exc)}; refit the predictor") from exc
