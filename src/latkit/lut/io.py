"""Moving LUT contents in and out: JSON export/import, merging, public tables.

The JSON form is a versioned envelope (``schema = latkit.lut.json``) holding
the devices, ops, measurements (with raw samples and provenance) and
calibrations of a LUT; it round-trips exactly. Each measurement and calibration
names its ``precision``; in a file written before precisions (schema version 1,
or a row without the field) every one is ``fp32``, all such a LUT could hold.

Conflict rule, for :func:`import_json` and :func:`merge`: a measurement of an
(op, device, precision) that the destination already holds is a *duplicate* when it has the
same latency and source (re-importing a file changes nothing) and a *conflict*
otherwise.
Conflicts are settled by ``prefer``:

* ``"existing"`` (default): keep what the destination has; a LUT never
  changes under you unless you ask;
* ``"newer"``: keep the row measured last (``created_at``);
* ``"more_samples"``: keep the row with more samples (ties keep the existing);
* ``"incoming"``: always take the row being imported.

Every conflict is reported with both latencies, whichever row is kept.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from latkit.core.reprs import short_repr
from latkit.core.files import OUTPUT_MODE, check_output_target, one_line, read_json, removed_on_failure, write_json
from latkit._version import __version__
from latkit.devices.precision import PRECISIONS, Precision, parse_precision
from latkit.core.errors import LatkitError, ParseError, StoreError, UnknownNameError, UsageError
from latkit.lut.calibration import KIND as CALIBRATION_KIND
from latkit.lut.rows import STAT_COLUMNS
from latkit.lut.store import LUT, check_row, utc_now
from latkit.profiler.ops import MBCONV_NAME, Act, OpSpec, parse_key

log = logging.getLogger(__name__)

JSON_SCHEMA = "latkit.lut.json"
# 2: measurements and calibrations carry a precision (a version 1 file's are all fp32);
# an older latkit refuses a version 2 file rather than import its int8 rows as fp32
JSON_SCHEMA_VERSION = 2
PREFER = ("existing", "newer", "more_samples", "incoming")


@dataclass(frozen=True)
class Conflict:
    """Two different measurements of the same op on the same device at the same precision."""

    op_key: str
    device_uri: str
    existing_ms: float
    incoming_ms: float
    kept: str  # "existing" or "incoming"
    precision: Precision = Precision.FP32


@dataclass
class MergeReport:
    """What an import or merge did."""

    added: int = 0
    duplicates: int = 0
    replaced: int = 0
    conflicts: list[Conflict] = field(default_factory=list)
    calibrations_added: int = 0
    sources: list[str] = field(default_factory=list)

    def __repr__(self) -> str:
        return short_repr(self, 'added', 'duplicates', 'replaced', 'conflicts', 'calibrations_added', 'sources')

    def __str__(self) -> str:
        kept = sum(c.kept == "existing" for c in self.conflicts)
        text = (f"{self.added} added, {self.duplicates} already present, {self.replaced} replaced, "
                f"{len(self.conflicts)} conflict(s)")  # fmt: skip
        if self.conflicts:
            text += f" ({kept} kept existing)"
        if self.calibrations_added:
            text += f", {self.calibrations_added} calibration(s)"
        return text


# ------------------------------------------------------------------ JSON


def to_payload(lut: LUT) -> dict[str, Any]:
    """The JSON envelope of everything in ``lut``."""
    return {
        "schema": JSON_SCHEMA,
        "schema_version": JSON_SCHEMA_VERSION,
        "latkit_version": __version__,
        "exported_at": utc_now(),
        "provenance": {"lut": str(lut.path), "lut_meta": lut.meta},
        "devices": [{"uri": d["uri"], "info": d["info"]} for d in lut.devices()],
        "ops": lut.ops(),
        "measurements": lut.rows(),
        "calibrations": lut.calibrations(),
    }


def check_export_target(path: str | Path) -> None:
    """Refuse an export path that cannot be written, or that is an SQLite file (its own LUT, or
    any other): an export never replaces one.

    Raises:
        UsageError: ``path`` is an SQLite file. StoreError: it cannot be written.
    """
    check_output_target(path, "LUT export")
    try:
        with open(path, "rb") as fh:
            head = fh.read(16)
    except OSError:
        return  # missing (or unreadable: the write will say so)
    if head == b"SQLite format 3\0":
        raise UsageError(f"{path} is an SQLite file (a LUT?); an export would replace it: give a .json path")


def export_json(lut: LUT, path: str | Path) -> int:
    """Write ``lut`` as a JSON envelope to ``path`` atomically; return the row count.

    Raises:
        StoreError: ``path`` is a folder or a device, or cannot be written (the
            previous file, if any, is left as it was).
    """
    payload = to_payload(lut)
    write_json(path, payload, what="LUT export", indent=1, sort_keys=True)
    return len(payload["measurements"])


def _read_payload(path: Path) -> dict[str, Any]:
    payload = read_json(path, what="LUT export")
    if not isinstance(payload, dict) or payload.get("schema") != JSON_SCHEMA:
        got = payload.get("schema") if isinstance(payload, dict) else type(payload).__name__
        raise StoreError(
            f"{path} is not a latkit LUT export (schema {got!r}, want {JSON_SCHEMA!r}); "
            "give a file from `latkit lut export`"
        )
    version = payload.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise StoreError(f"{path} has no valid schema_version; re-export it with latkit")
    if version > JSON_SCHEMA_VERSION:
        raise StoreError(f"{path} was written by a newer latkit (schema {version}); upgrade latkit")
    for section in ("devices", "ops", "measurements", "calibrations"):
        if not isinstance(payload.get(section, []), list):
            raise StoreError(f"{path}: section {section!r} is not a list; the file is damaged")
    return payload


@dataclass
class _Checked:
    """A payload whose every entry was checked: what :func:`_absorb` writes."""

    origin: str
    devices: list[tuple[str, dict[str, Any] | None]]
    ops: list[tuple[OpSpec, str]]
    rows: list[dict[str, Any]]
    calibrations: list[dict[str, Any]]


def _check_payload(payload: dict[str, Any], origin: str, known_ops: set[str]) -> _Checked:
    """Check every device, op, measurement and calibration of ``payload``.

    ``known_ops`` are the keys the destination holds already; a measurement of
    a key in neither is refused.

    Raises:
        StoreError: the first malformed entry, named by section and number.
    """
    devices = []
    for i, dev in enumerate(payload.get("devices", [])):
        uri = dev.get("uri") if isinstance(dev, dict) else None
        if not isinstance(uri, str) or not uri.strip():
            raise StoreError(f"{origin}: device #{i} has no uri (text); the file is damaged")
        info = dev.get("info")
        if info is not None and not isinstance(info, dict):
            raise StoreError(
                f"{origin}: device #{i} ({uri}) has info of type {type(info).__name__}, "
                "not an object; the file is damaged"
            )
        devices.append((uri, info))
    ops = []
    for i, op in enumerate(payload.get("ops", [])):
        key = op.get("key") if isinstance(op, dict) else None
        if not isinstance(key, str) or not key.strip():
            raise StoreError(f"{origin}: op #{i} has no key (text); the file is damaged")
        spec_dict = op.get("spec")
        try:
            if not isinstance(spec_dict, dict):
                raise TypeError(f"spec is {type(spec_dict).__name__}, not an object")
            spec = OpSpec.from_dict(spec_dict)
        except (LatkitError, KeyError, TypeError, ValueError, AttributeError) as exc:
            raise StoreError(
                f"{origin}: op #{i} ({key}) has no valid spec ({one_line(exc)}); the file is damaged"
            ) from exc
        ops.append((spec, key))
    keys = known_ops | {k for _, k in ops}
    rows = []
    for i, row in enumerate(payload.get("measurements", [])):
        _refuse_non_finite_stats(row, f"{origin}: measurement #{i}")
        checked = check_row(row, f"{origin}: measurement #{i}")
        if not checked["created_at"]:
            raise StoreError(f"{origin}: measurement #{i} ({checked['op_key']}) has no created_at")
        if checked["op_key"] not in keys:
            raise StoreError(
                f"{origin}: measurement #{i} is of op {checked['op_key']}, which the file's ops "
                "section does not define; the file is damaged"
            )
        rows.append(checked)
    cals = []
    for i, cal in enumerate(payload.get("calibrations", [])):
        cals.append(_check_calibration(cal, f"{origin}: calibration #{i}"))
    return _Checked(origin, devices, ops, rows, cals)


def _refuse_non_finite_stats(row: Any, where: str) -> None:
    """A latkit export writes an unknown statistic as null, never NaN or inf: a file
    holding one was written by something else (or edited), so it is refused rather
    than its number quietly dropped."""
    if not isinstance(row, dict):
        return  # check_row names the wrong type
    for column in STAT_COLUMNS:
        value = row.get(column)
        if isinstance(value, float) and not math.isfinite(value):
            raise StoreError(
                f"{where} ({row.get('op_key')}): {column} is {value!r}; a statistic must be a finite "
                "number or null; nothing was stored, fix or remove that row"
            )


def _check_calibration(cal: Any, where: str) -> dict[str, Any]:
    if not isinstance(cal, dict):
        raise StoreError(f"{where} is {type(cal).__name__}, not an object; the file is damaged")
    for f in ("device_uri", "kind", "created_at"):
        if not isinstance(cal.get(f), str) or not cal[f].strip():
            raise StoreError(f"{where} has no {f} (text); the file is damaged")
    try:  # absent: a calibration from before precisions, fitted at fp32
        precision = parse_precision(cal.get("precision"))
    except UsageError:
        raise StoreError(
            f"{where} ({cal['device_uri']}): precision is {cal.get('precision')!r}, not one of "
            f"{', '.join(PRECISIONS)}; nothing was stored, fix or remove that calibration"
        ) from None
    params, prov = cal.get("params"), cal.get("provenance", {})
    if not isinstance(params, dict) or not isinstance(prov, dict):
        raise StoreError(f"{where}: params and provenance must be objects; the file is damaged")
    bad = _non_finite(params)
    if bad is not None:
        raise StoreError(f"{where}: params.{bad} is not a finite number; the file is damaged")
    if cal["kind"] == CALIBRATION_KIND:  # the coefficients estimates apply
        for name in ("a", "b", "c"):
            v = params.get(name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
                raise StoreError(f"{where}: coefficient {name} is {v!r}, not a finite number")
    return {"device_uri": cal["device_uri"], "precision": precision, "kind": cal["kind"],
            "created_at": cal["created_at"], "params": params, "provenance": prov}  # fmt: skip


def _non_finite(value: Any, where: str = "") -> str | None:
    """The path of the first NaN / inf inside ``value`` (None if there is none)."""
    if isinstance(value, float) and not math.isfinite(value):
        return where or "value"
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return None
    for k, v in items:
        found = _non_finite(v, f"{where}.{k}" if where else str(k))
        if found is not None:
            return found
    return None


def import_json(lut: LUT, path: str | Path, prefer: str = "existing") -> MergeReport:
    """Add the contents of a JSON export to ``lut`` (one transaction).

    Every entry is checked before anything is written. Conflicts with rows
    already in ``lut`` follow ``prefer`` (module docstring).

    Raises:
        StoreError: the file is unreadable, of another schema or newer, or an
            entry is malformed (the message names it; nothing is imported then).
    """
    path = Path(path)
    checked = _check_payload(_read_payload(path), str(path), {o["key"] for o in lut.ops()})
    report = _absorb(lut, checked, prefer)
    report.sources.append(str(path))
    return report


def read_source(src: str | Path, known_ops: set[str] = frozenset()) -> _Checked:
    """Read and check one merge source: a LUT file (opened read-only) or a JSON export.

    Raises:
        StoreError: the source is missing, unreadable, damaged or malformed.
    """
    src = Path(src)
    if src.suffix.lower() == ".json":
        payload = _read_payload(src)
    else:
        with LUT.open(src, readonly=True) as lut:
            lut.check()  # the full integrity check: a damaged source must not spread
            payload = to_payload(lut)
    return _check_payload(payload, str(src), set(known_ops))


def merge(dst: LUT, src_paths: list[str | Path], prefer: str = "existing") -> MergeReport:
    """Merge LUT files (SQLite LUTs or JSON exports) into ``dst``, all or nothing.

    Every source is read and checked first; then all of them go into ``dst`` in
    one transaction, so a bad or missing source leaves ``dst`` as it was.
    Devices are matched by URI, ops by key; measurement conflicts follow
    ``prefer`` (see the module docstring).

    Raises:
        UsageError: a source is ``dst`` itself, or ``prefer`` is unknown.
        StoreError: a source is unreadable or malformed (nothing is merged).
    """
    if prefer not in PREFER:
        raise UnknownNameError("conflict rule", prefer, PREFER)
    known = {o["key"] for o in dst.ops()}
    checked = []
    for src in map(Path, src_paths):
        if src.exists() and src.resolve() == dst.path.resolve():
            raise UsageError(f"cannot merge {src} into itself; give another destination")
        part = read_source(src, known)
        known |= {k for _, k in part.ops}
        checked.append(part)
    total = MergeReport()
    with dst.transaction():
        for part in checked:
            got = _absorb(dst, part, prefer)
            total.added += got.added
            total.duplicates += got.duplicates
            total.replaced += got.replaced
            total.conflicts += got.conflicts
            total.calibrations_added += got.calibrations_added
            total.sources.append(part.origin)
    return total


@contextlib.contextmanager
def writing(path: str | Path) -> Iterator[LUT]:
    """A LUT to import or merge into, all or nothing.

    An existing LUT is opened and the block runs in one transaction: on an
    error nothing of it stays. A missing LUT is built in a temporary file
    beside ``path`` and linked into place only when the block succeeds, so a
    failed import never leaves a new, empty or half-filled file behind, nor a
    folder made for it (and a file someone else created meanwhile is never replaced).

    Raises:
        StoreError: the LUT cannot be opened or written, or ``path`` appeared
            while the new LUT was being built.
    """
    path = Path(path)
    if path.exists() or path.is_symlink():
        with LUT.open(path, create=True) as lut, lut.transaction():
            yield lut
        return
    check_output_target(path, "LUT")
    with removed_on_failure(path.parent):  # a failed import leaves no empty folder made for it
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(prefix=f".{path.name[:40]}.", suffix=".part", dir=path.parent)
        except OSError as exc:
            raise StoreError(f"cannot write the LUT {path}: {exc.strerror or exc}; choose a writable folder") from exc
        os.close(fd)
        tmp = Path(name)
        try:
            with LUT.open(tmp, create=True) as lut:
                lut.path = path  # messages name the file the user gave
                with lut.transaction():
                    yield lut
            os.chmod(tmp, OUTPUT_MODE)
            try:
                os.link(tmp, path)  # fails, rather than replaces, if the path exists by now
            except FileExistsError as exc:
                raise StoreError(f"{path} was created by another process meanwhile; run the command again") from exc
            except OSError as exc:
                raise StoreError(f"cannot write the LUT {path}: {exc.strerror or exc}") from exc
        finally:
            for leftover in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm"), Path(f"{tmp}-journal")):
                leftover.unlink(missing_ok=True)


def _keep_incoming(existing: dict[str, Any], incoming: dict[str, Any], prefer: str) -> bool:
    if prefer == "incoming":
        return True
    if prefer == "newer":
        return str(incoming["created_at"]) > str(existing["created_at"])
    if prefer == "more_samples":
        return (incoming.get("n_samples") or 0) > (existing.get("n_samples") or 0)
    return False


def _same_row(a: dict[str, Any], b: dict[str, Any]) -> bool:
    # the creation time is left out so that importing the same table twice is a no-op
    return math.isclose(a["latency_ms"], b["latency_ms"], rel_tol=1e-12) and a["source"] == b["source"]


def _ident(row: dict[str, Any]) -> tuple[str, str, Precision]:
    """A measurement's identity: op, device and precision."""
    return row["op_key"], row["device_uri"], row["precision"]


def _cal_ident(cal: dict[str, Any]) -> tuple[str, Precision, str, str]:
    """A calibration's identity: device, precision, kind and when it was fitted."""
    return cal["device_uri"], cal["precision"], cal["kind"], cal["created_at"]


def _absorb(lut: LUT, payload: _Checked, prefer: str) -> MergeReport:
    if prefer not in PREFER:
        raise UnknownNameError("conflict rule", prefer, PREFER)
    report = MergeReport()
    with lut.transaction():  # read and write under one write lock: nothing changes between
        existing = {_ident(r): r for r in lut.rows()}
        have_cal = {_cal_ident(c) for c in lut.calibrations()}
        for uri, info in payload.devices:
            lut.ensure_device(uri, info)
        for spec, key in payload.ops:
            lut.ensure_op(spec, key)
        for row in payload.rows:
            old = existing.get(_ident(row))
            if old is None:
                lut.put_row(row)
                existing[_ident(row)] = row
                report.added += 1
            elif _same_row(old, row):
                report.duplicates += 1
            else:
                take = _keep_incoming(old, row, prefer)
                report.conflicts.append(
                    Conflict(row["op_key"], row["device_uri"], old["latency_ms"],
                             row["latency_ms"], "incoming" if take else "existing", row["precision"])
                )  # fmt: skip
                if take:
                    lut.put_row(row, replace=True)
                    existing[_ident(row)] = row
                    report.replaced += 1
        for cal in payload.calibrations:
            ident = _cal_ident(cal)
            if ident not in have_cal:
                lut.save_calibration(cal["device_uri"], cal["kind"], cal["params"], cal["provenance"],
                                     cal["created_at"], precision=cal["precision"])  # fmt: skip
                have_cal.add(ident)
                report.calibrations_added += 1
    if report.conflicts:
        log.warning("%d conflicting measurement(s) from %s; kept per prefer=%s",
                    len(report.conflicts), payload.origin, prefer)  # fmt: skip
    return report


# --------------------------------------------------------- public tables


@dataclass(frozen=True)
class PublicFamily:
    """How one family of published tables is read."""

    name: str
    citation: str
    device_uri: str
    device_model: str
    head_act: Act  # activation of stem/head convolutions, which the keys leave out


FAMILIES = {
    "ofa": PublicFamily(
        "ofa", "Once-for-All (Cai et al., ICLR 2020), Samsung Note10 LUT",
        "note10:ofa-lut", "Samsung Galaxy Note10", Act.H_SWISH,
    ),
    "proxylessnas": PublicFamily(
        "proxylessnas", "ProxylessNAS (Cai et al., ICLR 2019) mobile LUT",
        "mobile:proxylessnas-lut", "Google Pixel 1 (ProxylessNAS mobile)", Act.RELU6,
    ),
}  # fmt: skip


def _detect_family(path: Path, keys: list[str], family: str | None) -> PublicFamily:
    if family is not None:
        if family not in FAMILIES:
            raise UnknownNameError("public table family", family, list(FAMILIES))
        return FAMILIES[family]
    stem = path.stem.lower()
    if "ofa" in stem:
        return FAMILIES["ofa"]
    if "proxyless" in stem:
        return FAMILIES["proxylessnas"]
    mb = [k for k in keys if k.startswith(f"{MBCONV_NAME}-")]
    if mb and all("-hs:" in k for k in mb):
        return FAMILIES["ofa"]
    if mb and not any("-hs:" in k or "-se:" in k for k in mb):
        return FAMILIES["proxylessnas"]
    raise ParseError(f"cannot tell which published table {path} is; pass --family ofa or --family proxylessnas")


def _load_yaml(path: Path) -> tuple[dict[Any, Any], bytes]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise StoreError(f"cannot read {path}: {exc.strerror or exc}; check the path") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ParseError(f"{path} is not UTF-8 text (byte {exc.start}); give an OFA/ProxylessNAS yaml table") from exc
    try:
        published = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}" if where is not None else ""
        raise ParseError(f"{path} is not valid YAML{at}; give an OFA/ProxylessNAS latency table") from exc
    except RecursionError as exc:
        raise ParseError(f"{path} is nested too deeply to be a latency table") from exc
    if not isinstance(published, dict) or not published:
        raise ParseError(f"{path} is not a mapping of operator keys to statistics")
    return published, raw


def _number(value: Any, path: Path, key: str, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ParseError(f"{path}: entry {key!r} has a non-numeric {what} ({value!r})")
    if not math.isfinite(value):
        raise ParseError(f"{path}: entry {key!r} has a non-finite {what} ({value!r})")
    if value < 0:
        raise ParseError(f"{path}: entry {key!r} has a negative {what} ({value!r})")
    return float(value)


def _public_row(path: Path, key: str, entry: Any) -> dict[str, Any]:
    if not isinstance(entry, dict) or "mean" not in entry:
        raise ParseError(f"{path}: entry {key!r} has no 'mean' (want count/mean/std or var)")
    mean = _number(entry["mean"], path, key, "mean")
    if mean <= 0:
        raise ParseError(f"{path}: entry {key!r} has a non-positive mean latency ({mean})")
    std = None
    if "std" in entry:
        std = _number(entry["std"], path, key, "std")
    elif "var" in entry:
        std = math.sqrt(_number(entry["var"], path, key, "var"))
    count = entry.get("count")
    if count is not None:
        value = _number(count, path, key, "count")
        if value != int(value):
            raise ParseError(f"{path}: entry {key!r} has a count that is not a whole number ({count!r})")
        count = int(value)
    return {"latency_ms": mean, "mean_ms": mean, "std_ms": std, "n_samples": count}


def _parse_public_key(path: Path, key: Any, head_act: Act) -> OpSpec:
    if not isinstance(key, str):
        raise ParseError(f"{path}: entry {key!r} is not an operator key (text)")
    try:
        spec = parse_key(key, default_act=head_act)
    except (LatkitError, ValueError, TypeError, KeyError, IndexError, ZeroDivisionError) as exc:
        # a key parse_key reads but whose shape no operator has (0x0, negative channels)
        raise ParseError(f"{path}: entry {key!r}: {one_line(exc)}; not imported") from exc
    if spec.key != key:
        raise ParseError(f"{path}: entry {key!r} reads back as {spec.key!r}; not imported")
    return spec


def _public_payload(
    path: Path, published: dict[Any, Any], raw: bytes, fam: PublicFamily, uri: str, source: str, prec: Precision
) -> dict[str, Any]:
    """A published table as an import payload (its device, ops and rows), each entry checked."""
    provenance = {
        "public_source": fam.citation, "family": fam.name, "file": path.name,
        "sha256": hashlib.sha256(raw).hexdigest(), "statistic": "mean", "units": "ms",
        "imported_at": utc_now(), "latkit_version": __version__,
    }  # fmt: skip
    ops, rows = [], []
    for key, entry in published.items():
        spec = _parse_public_key(path, key, fam.head_act)
        row = _public_row(path, key, entry)
        row.update(
            op_key=key, device_uri=uri, precision=prec, n_outliers=None, samples_ms=[], provenance=provenance,
            source=source, created_at=provenance["imported_at"],
        )  # fmt: skip
        ops.append({"key": key, "op_type": spec.op_type.value, "spec": spec.to_dict()})
        rows.append(row)
    info = {"uri": uri, "kind": "published-table", "runtime": fam.name, "runtime_version": "",
            "threads": 0, "model": fam.device_model, "extra": {"source": fam.citation}}  # fmt: skip
    return {"devices": [{"uri": uri, "info": info}], "ops": ops, "measurements": rows}


def import_public_yaml(
    lut: LUT,
    path: str | Path,
    name: str | None = None,
    device_uri: str | None = None,
    family: str | None = None,
    replace: bool = False,
    *,
    precision: Precision = Precision.FP32,
) -> MergeReport:
    """Import a published latency table (OFA or ProxylessNAS yaml, values in ms).

    Each key is parsed with :func:`~latkit.profiler.ops.parse_key` and stored
    under its own key, as ``latency_ms = mean`` with ``std_ms`` (``std`` or
    ``sqrt(var)``) and ``n_samples = count``. The whole file is checked
    before anything is written; the import is one transaction.

    Args:
        lut: destination.
        path: the yaml table.
        name: source tag (``imported:<name>``); default the file stem.
        device_uri: default ``note10:ofa-lut`` / ``mobile:proxylessnas-lut``.
        family: ``ofa`` or ``proxylessnas``; default read from the file name
            or the key format.
        replace: overwrite existing rows of these keys on that device
            (default: keep them and report the ones that differ as conflicts;
            e.g. OFA's per-resolution tables share their ``Conv_2`` and
            ``Logits`` keys with slightly different values).
        precision: the precision the table's models ran at (the published
            OFA and ProxylessNAS tables are fp32, the default).

    Raises:
        ParseError: not a mapping, an entry without a numeric mean, or a key
            latkit cannot parse (the message names the file and the entry).
        StoreError: the file cannot be read.
    """
    path = Path(path)
    published, raw = _load_yaml(path)
    fam = _detect_family(path, [str(k) for k in published], family)
    uri = device_uri or fam.device_uri
    source = f"imported:{name or path.stem}"
    payload = _public_payload(path, published, raw, fam, uri, source, precision)
    checked = _check_payload(payload, str(path), set())
    report = _absorb(lut, checked, "incoming" if replace else "existing")
    report.sources.append(str(path))
    log.info("imported %d entries of %s into %s (%s)", report.added, path.name, lut.path, uri)
    return report

