"""A device's own latency dataset: sampled architectures measured end to end into a latency CSV.

The predictors fit on end-to-end latencies of architectures of a space
(:mod:`latkit.predictors.data`: an ``arch`` column in the space's native text, one
column per device). :func:`sample_latencies` makes that column for a device: it
draws ``n`` distinct architectures (seeded), builds each as a whole network and
measures it as a calibration does (:func:`latkit.lut.calibrate.measure_passes`:
a batch of networks measured together, interleaved, in passes, each network's
lowest figure kept), and writes the CSV after every batch, atomically, so an
interrupted run loses at most one batch and a rerun measures only what the
file lacks. The same draw with a larger ``n`` starts with the smaller one's
architectures, so a rerun can grow a dataset.

An existing CSV is extended, not replaced: its rows and other columns are kept
(e.g. HW-NAS-Bench's ``fbnet_latency_ms.csv`` gains a column for your phone),
rows are matched by the parsed architecture, and sampled architectures it lacks
become new rows with the other columns empty. Beside the CSV, ``FILE.json``
records, per column it measured, where the numbers came from (device, protocol,
precision, resolution, classifier, every pass's figure) under a schema name and
version; a rerun into a column checks them, so one column never mixes settings.
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from latkit._version import __version__
from latkit.core import checks
from latkit.core.errors import ArchError, UsageError
from latkit.core.files import check_output_dir, check_output_target, read_json, write_json, write_text
from latkit.devices.precision import Precision, check_precision
from latkit.predictors.data import ARCH_COLUMN, INDEX_COLUMN, parse_archs, read_latency_csv

if TYPE_CHECKING:
    from latkit.devices.base import Device
    from latkit.profiler.protocol import ProtocolConfig
    from latkit.profiler.spaces.base import Arch, Network, SearchSpace

SCHEMA = "latkit.latency_sample"
SCHEMA_VERSION = 1
BATCH = 8  # networks measured together (one pool, its passes); the CSV is written after each batch
DRAWS_PER_ARCH = 50  # the draw stops after this many tries per wanted architecture (small spaces)
SETTINGS = ("space", "resolution", "precision", "classes", "column")  # a rerun must match these

Progress = Callable[[int, int, str], None]  # (done, total, message), as measure_passes reports


@dataclass(frozen=True)
class SampleReport:
    """What :func:`sample_latencies` did: the file, its column, the architectures measured now and before."""

    out: Path
    column: str
    space: str
    resolution: int
    precision: Precision
    n: int
    measured: tuple[str, ...]  # architectures measured in this run (native text)
    reused: int  # sampled architectures the file already held
    elapsed_s: float

    def __repr__(self) -> str:
        return (f"SampleReport({str(self.out)!r}, column={self.column!r}, {len(self.measured)} measured, "
                f"{self.reused} reused of n={self.n})")  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        """JSON form (``latkit predictor sample --json``)."""
        return {"out": str(self.out), "column": self.column, "space": self.space, "resolution": self.resolution,
                "precision": self.precision.value, "n": self.n, "measured": list(self.measured),
                "reused": self.reused, "elapsed_s": self.elapsed_s}  # fmt: skip


def sample_archs(space: SearchSpace, n: int, seed: int, pool: Sequence[Arch] | None = None) -> list[Arch]:
    """``n`` distinct architectures drawn uniformly with ``seed`` (fewer if the space is smaller).

    Drawn one at a time, so the draw for a larger ``n`` begins with the draw for
    a smaller one. Bounded: at most ``DRAWS_PER_ARCH * n`` draws. With ``pool``
    (e.g. the architectures of a published latency CSV, so the new column shares
    rows with its device columns), they are drawn from it instead, in a seeded order.
    """
    rng = np.random.default_rng(seed)
    if pool is not None:
        distinct = list(dict.fromkeys(pool))
        return [distinct[i] for i in rng.permutation(len(distinct))[:n].tolist()]
    picked: dict[Arch, None] = {}
    for _ in range(DRAWS_PER_ARCH * n):
        if len(picked) == n:
            break
        picked.setdefault(space.sample(rng))
    return list(picked)


def arch_text(space: SearchSpace, arch: Arch) -> str:
    """The architecture as the CSV's ``arch`` cell: the space's native text, which parses back to it."""
    native = space.arch_to_native(arch)
    if isinstance(native, (list, tuple)) and all(isinstance(v, str) and " " not in v for v in native):
        text = " ".join(native)  # HW-NAS-Bench's form for FBNet; every list space splits it back
    else:
        text = native if isinstance(native, str) else json.dumps(native, separators=(",", ":"))
    try:
        if space.parse_arch(text) == arch:
            return text
    except ArchError:
        pass
    return json.dumps(native, separators=(",", ":"))


@dataclass
class _Table:
    """The CSV being written: header, rows (cells by column) and the row of each parsed architecture."""

    header: list[str]
    rows: list[dict[str, str]]
    index: dict[Arch, int]

    @classmethod
    def load(cls, path: Path, space: SearchSpace, column: str) -> _Table:
        if not path.exists():
            return cls([ARCH_COLUMN, column], [], {})
        read_latency_csv(path)  # every check of the predictors' reader, with its messages
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            header = list(reader.fieldnames or [])
            rows = [dict(r) for r in reader if any((v or "").strip() for v in r.values())]
        archs = parse_archs(space.name, [r[ARCH_COLUMN].strip() for r in rows])
        if column not in header:
            header.append(column)
        return cls(header, rows, {a: i for i, a in enumerate(archs)})

    def value(self, arch: Arch, column: str) -> float | None:
        i = self.index.get(arch)
        cell = (self.rows[i].get(column) or "").strip() if i is not None else ""
        return float(cell) if cell else None

    def put(self, arch: Arch, text: str, column: str, latency_ms: float) -> None:
        if arch not in self.index:
            row = {h: "" for h in self.header}
            row[ARCH_COLUMN] = text
            if INDEX_COLUMN in self.header:
                row[INDEX_COLUMN] = str(len(self.rows))
            self.index[arch] = len(self.rows)
            self.rows.append(row)
        self.rows[self.index[arch]][column] = repr(float(latency_ms))

    def write(self, path: Path) -> None:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=self.header, lineterminator="\n")
        writer.writeheader()
        writer.writerows({h: r.get(h) or "" for h in self.header} for r in self.rows)
        write_text(path, buf.getvalue(), "latency CSV")


def sidecar_path(out: Path) -> Path:
    """Where the provenance of ``out``'s column is kept: ``out`` plus ``.json``."""
    return out.with_name(out.name + ".json")


def _provenance(out: Path, settings: dict[str, Any], seed: int, device: Device,
                config: ProtocolConfig) -> dict[str, Any]:  # fmt: skip
    """The sidecar to extend, with an entry for ``settings["column"]``.

    Each latency column has its own entry (settings, device, protocol, every
    figure); an existing entry's settings must equal ``settings``, so one column
    never mixes them. ``seed`` is added to the entry's draws.
    """
    doc = _sidecar(out)
    column = settings["column"]
    entry = doc["columns"].setdefault(column, {
        "settings": settings, "device": device.info().to_dict(), "protocol": config.to_dict(),
        "statistic": "lowest of each network's passes (latkit.lut.calibrate.measure_passes)", "seeds": [],
        "archs": {},
    })  # fmt: skip
    old = entry.get("settings", {})
    differ = [f"{k}: {old.get(k)!r} -> {settings[k]!r}" for k in SETTINGS if old.get(k) != settings[k]]
    if differ:
        raise UsageError(f"column {column!r} of {out} was measured with other settings ({', '.join(differ)}); "
                         "rerun with the same settings to resume, or choose another --out or --column")  # fmt: skip
    entry["seeds"] = sorted({*entry.get("seeds", []), seed})  # each draw is a prefix of a larger one with its seed
    return doc


def _sidecar(out: Path) -> dict[str, Any]:
    """The existing sidecar of ``out`` (checked) or a new, empty one."""
    side = sidecar_path(out)
    if not side.exists():
        return {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, "latkit_version": __version__, "columns": {}}
    doc = read_json(side, "latency sample sidecar")
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA or not isinstance(doc.get("columns"), dict):
        raise UsageError(f"{side} is not a latkit latency sample sidecar; move it away or choose another --out")
    if doc.get("schema_version") != SCHEMA_VERSION:
        raise UsageError(f"{side} has schema version {doc.get('schema_version')}, this latkit reads "
                         f"{SCHEMA_VERSION}; measure into a new --out")  # fmt: skip
    doc["latkit_version"] = __version__  # the version that wrote it last
    return doc


def _standard_protocol() -> ProtocolConfig:
    from latkit.profiler.protocol import ProtocolConfig

    return ProtocolConfig()


def _network(space: SearchSpace, arch: Arch, resolution: int, classes: int | None) -> Network:
    from latkit.profiler.spaces.base import with_classes

    net = space.network(arch, resolution)
    return with_classes(net, classes) if classes else net


def sample_latencies(
    device: Device,
    space: SearchSpace,
    n: int,
    out: str | Path,
    *,
    resolution: int | None = None,
    seed: int = 0,
    config: ProtocolConfig | None = None,
    precision: Precision = Precision.FP32,
    column: str | None = None,
    classes: int | None = 10,
    batch: int = BATCH,
    pool: Sequence[Arch] | None = None,
    on_progress: Progress | None = None,
    cache_dir: Path | str | None = None,
) -> SampleReport:
    """Measure ``n`` sampled architectures of ``space`` end to end on ``device`` into the latency CSV ``out``.

    Resumable: architectures whose ``column`` cell ``out`` already holds are not
    measured again, and the file is rewritten (atomically) after every batch.

    Args:
        device, space: an open device; the space (its networks are built and exported).
        n, seed, pool: architectures to sample, distinct (see :func:`sample_archs`).
        out: the CSV (created, or extended: other rows and columns are kept).
        resolution, precision: the networks are built (and timed) at these; the device must run it.
        config: protocol of every measurement (default the standard one).
        column: the latency column (default the device's URI).
        classes: the networks' classifier outputs (default 10, as ``latkit profile``
            and ``lut calibrate`` build them; None or 0: the space's own).
        batch: networks measured together in one pool (and per write of the file).
        on_progress: ``(done, total, message)``: first ``(0, total, plan)``, then
            each measurement (a network's figure in one pass) and each pass's note.
        cache_dir: where the networks' model files are cached.

    Raises:
        UsageError: bad ``n`` (or over ``checks.MAX_SAMPLED_ARCHS``) or ``batch``, a space without
            networks, a precision the device does not run, or an ``out`` measured at other settings.
        ParseError / ArchError: an existing ``out`` that is not a latency CSV of ``space``.
        StoreError: ``out`` is not a file, or its folder cannot be written.
    """
    _check_sample_args(n, batch, out, column)
    t0, out, prec, res = time.perf_counter(), Path(out), check_precision(device, precision), space.check_resolution(resolution)
    column, config = column or device.uri, config or _standard_protocol()
    archs = sample_archs(space, n, seed, pool)
    nets = {a: _network(space, a, res, classes) for a in archs}  # a space without networks stops here
    table = _Table.load(out, space, column)
    settings = {"space": space.name, "resolution": res, "precision": prec.value, "classes": classes or None,
                "column": column}  # fmt: skip
    doc = _provenance(out, settings, seed, device, config)
    todo = [a for a in archs if table.value(a, column) is None]
    run = _Batches(device, space, config, prec, cache_dir, on_progress, len(todo), out, column)
    run.say(0, f"{len(todo)} of {len(archs)} architecture(s) to measure ({len(archs) - len(todo)} already in "
               f"{out.name}), in batches of {batch}")  # fmt: skip
    measured = [text for start in range(0, len(todo), batch)
                for text in run.batch(todo[start : start + batch], archs, nets, table, doc)]  # fmt: skip
    return SampleReport(out, column, space.name, res, prec, len(archs), tuple(measured),
                        len(archs) - len(todo), time.perf_counter() - t0)  # fmt: skip


def _check_sample_args(n: int, batch: int, out: Path | str, column: str | None) -> None:
    """Refuse, before anything is measured, a count out of range, an odd column name or an unwritable ``out``.

    Raises:
        UsageError: bad ``n``, ``batch`` or ``column``. StoreError: ``out`` cannot be written.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1 or isinstance(batch, bool) or batch < 1:
        raise UsageError(f"n and batch must be integers >= 1, got n={n!r}, batch={batch!r}")
    if n > checks.MAX_SAMPLED_ARCHS:  # every network is drawn and built before the first is measured
        raise UsageError(f"n={n} architectures: at most {checks.MAX_SAMPLED_ARCHS} are sampled in one table")
    checks.text("column", column, none_ok=True)  # a newline would split the CSV's header
    check_output_target(out, "latency CSV")
    check_output_dir(Path(out).parent, "latency CSV's folder")


class _Batches:
    """Measures batches of networks, reporting one running count over all batches."""

    def __init__(self, device: Device, space: SearchSpace, config: ProtocolConfig, precision: Precision,
                 cache_dir: Path | str | None, on_progress: Progress | None, n_todo: int, out: Path,
                 column: str) -> None:  # fmt: skip
        from latkit.lut.calibrate import PASSES

        self.device, self.precision, self.cache_dir, self.on_progress = device, precision, cache_dir, on_progress
        self.space, self.config, self.out, self.column = space, config, out, column
        self.base = 0  # measurements of the batches before
        self.left = n_todo  # networks not measured yet
        self.total = PASSES * n_todo
        self.passes = PASSES

    def say(self, done: int, message: str) -> None:
        if self.on_progress is not None:
            self.on_progress(done, self.total, message)

    def batch(self, group: list[Arch], archs: list[Arch], nets: dict[Arch, Network], table: _Table,
              doc: dict[str, Any]) -> list[str]:  # fmt: skip
        """Measure ``group``, put it in ``table`` and the sidecar ``doc``, write both; the texts measured."""
        texts = [arch_text(self.space, a) for a in group]
        labels = [f"#{archs.index(a) + 1} {text}" for a, text in zip(group, texts)]  # numbered in the draw's order
        for a, text, figures, key in zip(group, texts, *self.measure([nets[a] for a in group], labels)):
            table.put(a, text, self.column, min(figures))
            doc["columns"][self.column]["archs"][text] = {"latency_ms": min(figures), "passes_ms": figures,
                                                          "network_key": key}  # fmt: skip
        table.write(self.out)
        write_json(sidecar_path(self.out), doc, "latency sample sidecar", indent=1)
        return texts

    def measure(self, networks: Sequence[Network], labels: list[str]) -> tuple[list[list[float]], list[str]]:
        """Each network's figures (one per pass) and its model key."""
        from latkit.lut.calibrate import measure_passes
        from latkit.profiler.export import BuiltModel

        self.left -= len(networks)
        later = self.passes * self.left

        def progress(done: int, total: int, label: str) -> None:
            self.total = self.base + total + later
            self.say(self.base + done, label)

        models = [BuiltModel(net, cache_dir=self.cache_dir, precision=self.precision) for net in networks]
        pool = replace(self.config, pool_size=max(self.config.pool_size, len(models)))
        runs = measure_passes(self.device, models, pool, progress, labels)
        self.base += sum(len(r) for r in runs)
        return runs, [m.key for m in models]


__all__ = ["BATCH", "SCHEMA", "SampleReport", "arch_text", "sample_archs", "sample_latencies", "sidecar_path"]
