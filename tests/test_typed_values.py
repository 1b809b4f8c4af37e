"""One typed value per concept, parsed once at the front door.

Text such as ``"int8"`` or ``"60%"`` enters latkit at the front door (``latkit.cli``,
``latkit.api``) and in the readers of saved files; it becomes a
:class:`~latkit.devices.precision.Precision` (or a ``Target``, an ``InputLayout``)
there, and every layer below takes the typed value. Every module of ``src/latkit`` is
parsed (not imported) and checked:

* no annotation past the front door unions ``str`` with ``Precision``
  (``str | Precision``, ``Precision | str | None``, ``Union[str, Precision]``...):
  such a parameter parses again what the door already parsed;
* the word ``"fp32"`` is a string constant only in ``latkit/devices/precision.py``;
  elsewhere it is ``Precision.FP32`` (``Precision.FP32.value`` where text is stored);
* no parameter named ``target_ms`` past the front door is annotated to take text
  (a ``"60%"`` target is parsed into a ``Target`` at the door).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "latkit"
FRONT_DOOR = ("cli/", "api.py", "api_tools.py", "api_kernels.py", "api_farm.py")
PRECISION_MODULE = "devices/precision.py"


def _sources() -> dict[str, str]:
    return {path.relative_to(SRC).as_posix(): path.read_text(encoding="utf-8") for path in sorted(SRC.rglob("*.py"))}


SOURCES = _sources()


def _past_the_door(rel: str) -> bool:
    return not rel.startswith(FRONT_DOOR)


def _annotations(tree: ast.AST) -> Iterator[tuple[str, int, ast.expr]]:
    """``(name, line, annotation)`` of every annotated parameter, return value and annotated assignment."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            a = node.args
            for arg in [*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg]:
                if arg is not None and arg.annotation is not None:
                    yield arg.arg, arg.lineno, arg.annotation
            if node.returns is not None:
                yield f"{node.name} ->", node.lineno, node.returns
        elif isinstance(node, ast.AnnAssign):
            target = node.target.id if isinstance(node.target, ast.Name) else ast.unparse(node.target)
            yield target, node.lineno, node.annotation


def _union_members(annotation: ast.expr) -> set[str]:
    """The type names an annotation unions (``a | b``, ``Union[a, b]``, ``Optional[a]``); one name otherwise."""
    if isinstance(annotation, ast.Constant) and isinstance(annotation.value, str):  # a quoted annotation
        return _union_members(ast.parse(annotation.value, mode="eval").body)
    if isinstance(annotation, ast.BinOp) and isinstance(annotation.op, ast.BitOr):
        return _union_members(annotation.left) | _union_members(annotation.right)
    if isinstance(annotation, ast.Subscript):
        head = annotation.value
        name = head.attr if isinstance(head, ast.Attribute) else getattr(head, "id", "")
        if name in ("Union", "Optional"):
            inner = annotation.slice
            parts = inner.elts if isinstance(inner, ast.Tuple) else [inner]
            return set().union(*(_union_members(p) for p in parts))
    if isinstance(annotation, ast.Name):
        return {annotation.id}
    if isinstance(annotation, ast.Attribute):
        return {annotation.attr}
    if isinstance(annotation, ast.Constant) and annotation.value is None:
        return {"None"}
    return {ast.unparse(annotation)}


def str_precision_unions(source: str) -> list[str]:
    """``name (line N): annotation`` of each annotation in ``source`` that unions ``str`` with ``Precision``."""
    return [f"{name} (line {line}): {ast.unparse(ann)}" for name, line, ann in _annotations(ast.parse(source))
            if {"str", "Precision"} <= _union_members(ann)]  # fmt: skip


def fp32_constants(source: str) -> list[int]:
    """The lines of ``source`` holding the string constant ``"fp32"``."""
    return [n.lineno for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Constant) and n.value == "fp32"]


def text_target_ms(source: str) -> list[str]:
    """Parameters named ``target_ms`` in ``source`` annotated to take text (``str``, ``Any`` or none)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for arg in [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs]:
            if arg.arg == "target_ms" and (arg.annotation is None
                                           or _union_members(arg.annotation) & {"str", "Any", "object"}):
                found.append(f"{node.name} (line {arg.lineno})")
    return found


PLANTED = '''
from typing import Optional, Union

def run(device: str, target_ms: float | str, precision: str | Precision = "fp32") -> Precision | str:
    return precision

class Config:
    precision: Optional[Union[str, Precision]] = None
    quoted: "Precision | str | None" = None
    fine: Precision = Precision.FP32
    layout: str = "nhwc"

def typed(p: Precision | None, target_ms: float) -> str:
    return "fp32 " + p.value
'''


def test_the_checks_catch_planted_examples() -> None:
    unions = str_precision_unions(PLANTED)
    assert [u.split(" ")[0] for u in unions] == ["precision", "run", "precision", "quoted"], unions
    assert fp32_constants(PLANTED) == [4]  # the default; "fp32 " and Precision.FP32 are not the constant
    assert text_target_ms(PLANTED) == ["run (line 4)"]


def test_the_front_door_is_where_text_is_parsed() -> None:
    assert "cli/search.py" in SOURCES and "api.py" in SOURCES and PRECISION_MODULE in SOURCES
    assert not _past_the_door("cli/deploy.py") and not _past_the_door("api.py")
    assert _past_the_door("pipeline/runner.py") and _past_the_door("devices/precision.py")


@pytest.mark.parametrize("rel", [r for r in SOURCES if _past_the_door(r)])
def test_no_str_or_precision_past_the_door(rel: str) -> None:
    assert str_precision_unions(SOURCES[rel]) == [], (
        f"{rel}: parse the precision at the front door and take a Precision here"
    )


@pytest.mark.parametrize("rel", [r for r in SOURCES if _past_the_door(r)])
def test_no_target_ms_takes_text_past_the_door(rel: str) -> None:
    assert text_target_ms(SOURCES[rel]) == [], f"{rel}: a text target is parsed into a Target at the front door"


def test_fp32_is_spelled_once() -> None:
    found = {rel: fp32_constants(src) for rel, src in SOURCES.items() if rel != PRECISION_MODULE}
    assert {rel: lines for rel, lines in found.items() if lines} == {}, "use Precision.FP32 (.value for stored text)"
    assert fp32_constants(SOURCES[PRECISION_MODULE]), "the Precision module spells the word"


# ---------------------------------------------------------------- the stored forms keep their text


def test_a_pipeline_config_is_stored_as_before() -> None:
    """``pipeline.json`` keeps its keys and text, so a run folder of an earlier version resumes."""
    from latkit.deploy.layout import InputLayout
    from latkit.devices.precision import Precision
    from latkit.pipeline.config import PipelineConfig
    from latkit.search.target import Target

    ms = PipelineConfig(device="cpu:onnxruntime", space="proxyless_mobile_w05", target=Target(ms=0.5))
    share = PipelineConfig(device="cpu:litert", space="proxyless_mobile_w05", target=Target(fraction=0.6),
                           precision=Precision.INT8, layout=InputLayout.NCHW, formats=("tflite",))  # fmt: skip
    assert list(ms.to_dict()) == [
        "device", "space", "target_ms", "data", "resolution", "threads", "search_epochs", "warmup_epochs",
        "train_epochs", "max_steps_per_epoch", "calibration_networks", "eval_samples", "formats", "profile_quick",
        "profile_sample", "max_retries", "seed", "precision", "layout", "target_share", "tolerance",
    ]  # fmt: skip
    stored = share.to_dict()
    assert (stored["target_ms"], stored["target_share"], stored["precision"], stored["layout"]) == (
        None, 0.6, "int8", "nchw")
    assert type(stored["precision"]) is str and type(stored["layout"]) is str
    # the fingerprints latkit wrote before the typed config (a different hash would refuse to resume)
    assert (ms.fingerprint(), share.fingerprint()) == ("6091d0bd471da7af", "d2421f03d4f98a3a")


def test_the_pipeline_config_takes_typed_values_only() -> None:
    from latkit.core.errors import UsageError
    from latkit.pipeline.config import PipelineConfig
    from latkit.search.target import Target

    with pytest.raises(UsageError, match="precision must be a Precision, got 'int8'"):
        PipelineConfig(device="cpu:onnxruntime", space="proxyless_mobile_w05", target=Target(ms=0.5),
                       precision="int8")  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="target must be a Target, got '60%'"):
        PipelineConfig(device="cpu:onnxruntime", space="proxyless_mobile_w05", target="60%")  # type: ignore[arg-type]


def test_an_exported_file_is_recorded_in_its_text_and_read_back_typed(tmp_path: Path) -> None:
    from latkit.core.errors import UsageError
    from latkit.deploy.exported_file import ExportedFile
    from latkit.deploy.layout import InputLayout, parse_layout
    from latkit.devices.precision import Precision
    from latkit.pipeline.stages import exported_file

    f = ExportedFile(tmp_path / "m_int8.tflite", tmp_path / "m_int8.tflite.json", "tflite", Precision.INT8,
                     InputLayout.NHWC, (1, 32, 32, 3), {"passed": True})  # fmt: skip
    doc = f.to_dict()
    assert (doc["variant"], doc["layout"]) == ("int8", "NHWC")  # export.json's keys and text, as before
    back = exported_file({"files": [doc]}, "tflite", Precision.INT8)
    assert back == f and back.precision is Precision.INT8 and back.layout is InputLayout.NHWC
    assert parse_layout("NCHW") is InputLayout.NCHW and parse_layout(" nhwc ") is InputLayout.NHWC
    with pytest.raises(UsageError, match="unknown layout 'hwc'"):
        parse_layout("hwc")
