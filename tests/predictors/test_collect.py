"""`latkit predictor sample`: sampled architectures measured end to end into the latency CSV the
predictors fit on, resumable, with progress. One run measures for real on ONNX Runtime; the others
replace the measurement (``measure_passes``) with a scripted one to check the bookkeeping cheaply."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from cli_checks import one_error_line, run
from latkit.core.errors import UsageError
from latkit.lut.calibrate import PASSES
from latkit.predictors.collect import arch_text, sample_archs, sample_latencies, sidecar_path
from latkit.predictors.data import read_latency_csv
from latkit.profiler.protocol import ProtocolConfig
from latkit.profiler.spaces import get_space

SPACE = "proxyless_mobile_w05"
RESOLUTION = 32


def _figure(net) -> float:
    """A made-up latency (ms) the network's operators determine (kernel area times expansion)."""
    return 1e-4 * sum((layer.spec.kernel or 1) ** 2 * (layer.spec.expand_ratio or 1)
                      for layer in net.layers if layer.spec.measurable)  # fmt: skip


@pytest.fixture
def scripted(monkeypatch):
    """measure_passes answering two passes of :func:`_figure` (the second 5% slower); the models it was given."""
    seen: list[list[str]] = []

    def fake(device, models, config, on_progress=None, labels=None):
        seen.append([m.key for m in models])
        runs = [[_figure(m.target), 1.05 * _figure(m.target)] for m in models]
        done = 0
        for k in range(PASSES):
            on_progress(done, PASSES * len(models), f"pass {k + 1} of {PASSES}")
            for label in labels:
                done += 1
                on_progress(done, PASSES * len(models), label)
        return runs

    monkeypatch.setattr("latkit.lut.calibrate.measure_passes", fake)
    return seen


def _rows(path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_sample_writes_the_csv_and_resumes(ort_device, scripted, tmp_path) -> None:
    space, out = get_space(SPACE), tmp_path / "lat.csv"
    events: list[tuple[int, int, str]] = []
    rep = sample_latencies(ort_device, space, 3, out, resolution=RESOLUTION, batch=2,
                           on_progress=lambda d, t, m: events.append((d, t, m)))  # fmt: skip
    archs = sample_archs(space, 3, 0)
    assert len(set(archs)) == 3 and rep.n == 3 and rep.reused == 0 and len(rep.measured) == 3
    assert [len(keys) for keys in scripted] == [2, 1]  # batches of 2
    data = read_latency_csv(out)  # what the predictors read
    assert data.devices == ("cpu:onnxruntime",) and len(data) == 3
    for arch, value in zip(archs, data.column("cpu:onnxruntime")):  # each network's lowest pass
        net = space.network(arch, RESOLUTION)
        from latkit.profiler.spaces.base import with_classes

        assert value == pytest.approx(_figure(with_classes(net, 10)))
    assert [space.parse_arch(a) for a in data.archs] == archs
    # progress: the plan and total first, one running count over the batches, ending where it said
    assert events[0][:2] == (0, PASSES * 3) and events[0][2].startswith("3 of 3 architecture(s) to measure")
    assert [d for d, _, _ in events] == sorted(d for d, _, _ in events)
    assert {t for _, t, _ in events} == {PASSES * 3} and events[-1][:2] == (PASSES * 3, PASSES * 3)
    doc = json.loads(sidecar_path(out).read_text())
    entry = doc["columns"]["cpu:onnxruntime"]
    assert doc["schema"] == "latkit.latency_sample" and entry["settings"]["resolution"] == RESOLUTION
    assert entry["device"]["uri"] == "cpu:onnxruntime" and entry["protocol"]["quantile"] == ProtocolConfig().quantile
    assert len(entry["archs"]) == 3 and all(len(v["passes_ms"]) == PASSES for v in entry["archs"].values())
    # a rerun with a larger n measures only the two new architectures; the first three keep their figures
    scripted.clear()
    again = sample_latencies(ort_device, space, 5, out, resolution=RESOLUTION, batch=2)
    assert again.reused == 3 and len(again.measured) == 2 and sum(len(k) for k in scripted) == 2
    grown = read_latency_csv(out)
    assert grown.archs[:3] == data.archs and np.array_equal(grown.latency_ms[:3], data.latency_ms)
    assert [space.parse_arch(a) for a in grown.archs] == sample_archs(space, 5, 0)
    with pytest.raises(UsageError, match=r"other settings \(resolution: 32 -> 64\)"):
        sample_latencies(ort_device, space, 5, out, resolution=64)
    # another column of the same file may hold other settings (a second device, another classifier)
    sample_latencies(ort_device, space, 2, out, resolution=RESOLUTION, classes=0, column="own-head")
    both = read_latency_csv(out)
    assert both.devices == ("cpu:onnxruntime", "own-head") and len(both) == 5
    assert set(json.loads(sidecar_path(out).read_text())["columns"]) == {"cpu:onnxruntime", "own-head"}


def test_sample_extends_a_csv_keeping_its_rows_and_columns(ort_device, scripted, tmp_path) -> None:
    space = get_space(SPACE)
    pool = sample_archs(space, 6, 7)
    texts = [arch_text(space, a) for a in pool]
    ref = tmp_path / "ref.csv"
    ref.write_text("arch_index,arch,phone\n" + "".join(f"{i},{t},{1 + i}.5\n" for i, t in enumerate(texts)))
    rep = sample_latencies(ort_device, space, 4, ref, resolution=RESOLUTION, pool=pool[:5], column="mine")
    rows = _rows(ref)
    assert [r["phone"] for r in rows] == [f"{1 + i}.5" for i in range(6)]  # kept as written
    assert [r["arch_index"] for r in rows] == [str(i) for i in range(6)] and len(rows) == 6  # no row added
    mine = {space.parse_arch(r["arch"]): r["mine"] for r in rows}
    drawn = {space.parse_arch(t) for t in rep.measured}
    assert len(drawn) == 4 and drawn <= set(pool[:5])
    assert all((mine[a] != "") == (a in drawn) for a in pool)  # only the drawn rows got a figure
    assert read_latency_csv(ref).devices == ("phone", "mine")


def test_fit_and_eval_read_the_file(ort_device, scripted, tmp_path, capsys) -> None:
    space = get_space(SPACE)
    pool = sample_archs(space, 12, 3)
    ref = tmp_path / "ref.csv"
    nets = [space.network(a, RESOLUTION) for a in pool]
    ref.write_text("arch,phone,gpu\n" + "".join(f"{arch_text(space, a)},{3 * _figure(n):.6f},{_figure(n) / 2 + 0.01:.6f}\n"
                                                for a, n in zip(pool, nets)))  # fmt: skip
    out = tmp_path / "mine.csv"
    code, _, err = run(capsys, "predictor", "sample", "--space", SPACE, "-n", 12, "--from-csv", ref, "--out", out,
                       "--resolution", RESOLUTION, "--quick")  # fmt: skip
    assert code == 0, err
    assert "sampling: started, 24 item(s): 12 of 12 architecture(s) to measure" in err
    assert "sampling: finished 24/24 in " in err
    code, out_text, err = run(capsys, "predictor", "eval", "--csv", ref, "--target-csv", out, "--target",
                              "cpu:onnxruntime", "--space", SPACE, "--k", 4, "--seeds", 1, "--json")  # fmt: skip
    assert code == 0, err
    summary = json.loads(out_text)
    assert summary["method"]["spearman"] > 0.9  # a column the known devices predict: the rows matched up
    code, _, err = run(capsys, "predictor", "fit", "--csv", out, "--space", SPACE, "--target", "cpu:onnxruntime",
                       "--predictor", "ridge", "--out", tmp_path / "pred")  # fmt: skip
    assert code == 0 and "saved" in err, err


def test_sample_refuses_a_space_without_networks_and_a_bad_count(capsys, tmp_path) -> None:
    code, _, err = run(capsys, "predictor", "sample", "--space", "nasbench201", "-n", 2, "--out", tmp_path / "x.csv")
    one_error_line(code, err, "nasbench201")
    assert not (tmp_path / "x.csv").exists()
    code, _, err = run(capsys, "predictor", "sample", "--space", SPACE, "-n", 0, "--out", tmp_path / "x.csv")
    assert code != 0 and "-n" in err


@pytest.mark.slow  # exports and measures two networks (a few seconds)
def test_sample_measures_for_real_on_onnxruntime(capsys, tmp_path) -> None:
    out = tmp_path / "real.csv"
    code, text, err = run(capsys, "predictor", "sample", "--space", SPACE, "-n", 2, "--resolution", RESOLUTION,
                          "--quick", "--out", out, "--json")  # fmt: skip
    assert code == 0, err
    doc = json.loads(text)
    assert doc["n"] == 2 and len(doc["measured"]) == 2 and doc["column"] == "cpu:onnxruntime"
    data = read_latency_csv(out)
    assert len(data) == 2 and all(0 < v < 100 for v in data.column("cpu:onnxruntime"))
    code, text, _ = run(capsys, "predictor", "sample", "--space", SPACE, "-n", 2, "--resolution", RESOLUTION,
                        "--quick", "--out", out, "--json")  # fmt: skip
    assert code == 0 and json.loads(text)["measured"] == [] and json.loads(text)["reused"] == 2
    assert np.array_equal(read_latency_csv(out).latency_ms, data.latency_ms)
