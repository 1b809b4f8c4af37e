"""The Python API (latkit/api.py): the verbs called as a notebook would, on real components."""

from __future__ import annotations

import csv
import inspect
import json
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

import latkit

pytestmark = pytest.mark.slow

SPACE = "proxyless_mobile_w05"
FBNET_CSV = Path(__file__).resolve().parents[1] / "data" / "fbnet_latency_ms.csv"
VERBS = ("open_device", "profile", "open_lut", "estimate", "sample_latencies", "fit_predictor", "load_predictor",
         "predict", "search_arch", "train", "export", "measure", "measure_layers", "inspect", "run", "calibrate",
         "show_lut", "export_lut", "import_lut", "merge_luts", "evaluate_predictor", "design_predictor",
         "loopback_phone", "build_kernel_predictors", "detect_fusion", "calibrate_kernels", "transfer_kernels",
         "farm_devices", "farm_profile")


def _small_arch() -> str:
    from latkit.profiler.spaces import get_space

    ops = ["zero" if "zero" in c.options else "3x3_MBConv3" for c in get_space(SPACE).choices()]
    return json.dumps(ops)


def test_import_latkit_loads_neither_torch_nor_the_verbs_modules() -> None:
    code = ("import sys, latkit; latkit.__version__; "
            "print(sorted(m for m in ('torch', 'onnxruntime', 'latkit.api', 'xgboost') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120,
                         cwd=tempfile.gettempdir())  # outside the checkout (its bare source folder)
    assert out.stdout.strip() == "[]"
    # a verb's first use loads latkit.api, still without torch
    code = "import sys, latkit; latkit.open_lut; print('latkit.api' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120,
                         cwd=tempfile.gettempdir())  # outside the checkout (its bare source folder)
    assert out.stdout.split() == ["True", "False"]


@pytest.mark.parametrize("verb", VERBS)
def test_every_verb_is_exposed_typed_and_documented(verb: str) -> None:
    fn = getattr(latkit, verb)
    assert callable(fn) and verb in latkit.__all__ and verb in dir(latkit)
    assert fn.__doc__ and len(fn.__doc__.split()) >= 8
    sig = inspect.signature(fn)
    assert sig.return_annotation is not inspect.Signature.empty
    assert all(p.annotation is not inspect.Parameter.empty for p in sig.parameters.values())


def test_unknown_attribute_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_verb"):
        latkit.no_such_verb  # noqa: B018


def test_profile_then_estimate_sums_the_lut_rows(tmp_path: Path) -> None:
    db, arch = tmp_path / "ops.db", _small_arch()
    dev = latkit.open_device("cpu:onnxruntime", threads=1)
    try:
        report = latkit.profile(dev, SPACE, db, arch=arch, resolution=32, quick=True)
    finally:
        dev.close()
    assert report.ok and not report.failed and len(report.measured) == 10
    assert report.measured[0] == "Conv-input:32x32x3-output:16x16x16"
    # a second run measures nothing: every operator is in the LUT already
    again = latkit.profile("cpu:onnxruntime", SPACE, db, arch=arch, resolution=32, quick=True)
    assert again.measured == [] and len(again.skipped) == 10

    est = latkit.estimate(db, arch, space=SPACE, resolution=32)
    with sqlite3.connect(db) as con:
        rows = dict(con.execute("SELECT op_key, latency_ms FROM measurements"))
    keys = [layer.name for layer in est.layers if layer.latency_ms > 0]
    assert len(rows) == 10 and est.n_measurable == 10 and len(keys) == 10
    assert est.lut_sum_ms == pytest.approx(sum(rows.values()), rel=1e-9)
    assert est.total_ms == est.lut_sum_ms and not est.calibrated and est.device == "cpu:onnxruntime"
    assert 0.01 < est.total_ms < 50
    with latkit.open_lut(db, readonly=True) as table:  # an open LUT gives the same figure
        assert latkit.estimate(table, arch, space=SPACE, resolution=32).total_ms == est.total_ms


def test_profile_limit_and_unknown_space(tmp_path: Path) -> None:
    report = latkit.profile("cpu:onnxruntime", SPACE, tmp_path / "l.db", resolution=32, limit=2, quick=True,
                            passes=2)
    assert len(report.measured) == 2
    with latkit.open_lut(tmp_path / "l.db", readonly=True) as table:
        assert table.summary()["total"] == 2
        assert all(len(r["provenance"]["passes_ms"]) == 2 for r in table.rows())  # two passes, the lowest kept
    with pytest.raises(latkit.LatkitError, match="no_such_space"):
        latkit.profile("cpu:onnxruntime", "no_such_space", tmp_path / "x.db")


def _fbnet_csv(path: Path, rows: int = 300) -> Path:
    with FBNET_CSV.open() as src, path.open("w", newline="") as dst:
        reader, writer = csv.DictReader(src), csv.writer(dst)
        writer.writerow(["arch_index", "arch", "pixel3"])
        for i, row in zip(range(rows), reader):
            writer.writerow([row["arch_index"], row["arch"], row["pixel3"]])
    return path


def test_fit_load_and_predict(tmp_path: Path) -> None:
    data = _fbnet_csv(tmp_path / "fb.csv")
    with data.open() as fh:
        table = list(csv.DictReader(fh))
    model = latkit.fit_predictor(data, "fbnet", "pixel3", tmp_path / "p", predictor="xgboost",
                                 params={"n_estimators": 50}, k=250)
    archs = [r["arch"] for r in table[260:280]]
    measured = np.array([float(r["pixel3"]) for r in table[260:280]])
    got = latkit.predict(tmp_path / "p", archs)
    assert isinstance(got, list) and len(got) == 20 and all(isinstance(v, float) for v in got)
    assert np.median(np.abs(np.array(got) / measured - 1)) < 0.2
    from latkit.predictors.data import encode_archs

    loaded = latkit.load_predictor(tmp_path / "p")
    np.testing.assert_allclose(loaded.predict(encode_archs("fbnet", archs)), got, rtol=1e-6)
    np.testing.assert_allclose(model.predict(encode_archs("fbnet", archs)), got, rtol=1e-6)


def test_measure_a_model_file(tmp_path: Path) -> None:
    from latkit.profiler.export import BuiltModel
    from latkit.profiler.spaces.load import load_network
    from latkit.profiler.spaces import get_space

    network, _ = load_network(get_space(SPACE), _small_arch(), 32)
    from latkit.devices.base import ModelFormat

    onnx = BuiltModel(network).file(ModelFormat.ONNX)
    m = latkit.measure("cpu:onnxruntime", onnx, quick=True)
    assert 0.01 < m.latency_ms < 100 and m.n_samples >= 12
    with pytest.raises(latkit.LatkitError):
        latkit.measure("cpu:onnxruntime", tmp_path / "missing.onnx", quick=True)


def test_train_then_export_onnx(tmp_path: Path) -> None:
    arch = _small_arch()
    trained = latkit.train(arch, "digits", tmp_path / "t", space=SPACE, resolution=32, epochs=1, max_steps=3,
                           init="scratch")
    assert trained.steps == 3 and trained.classes == 10 and trained.resolution == 32
    assert 0.0 <= trained.accuracy_pct <= 100.0
    assert Path(trained.weights_path).stat().st_size > 10_000
    report = latkit.export(arch, tmp_path / "t", "onnx", tmp_path / "e", space=SPACE, resolution=32)
    files = [Path(f.path) for f in report.files]
    assert [f.suffix for f in files] == [".onnx"] and files[0].stat().st_size > 10_000
    m = latkit.measure("cpu:onnxruntime", files[0], quick=True)
    assert 0.01 < m.latency_ms < 100
