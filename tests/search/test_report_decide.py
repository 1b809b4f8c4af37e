"""The run report gives what a user needs to decide: Pareto front, baseline, statistics, device, command.

The summary below is a trimmed copy of a real ``latkit run`` (cpu:onnxruntime,
proxyless_mobile_w05 at 32 px, int8); the plots are real matplotlib files.
"""

from __future__ import annotations

import base64
import re
import shlex

import pytest

from latkit.devices.precision import Precision
from latkit.profiler.spaces.base import get_space
from latkit.pipeline.pareto import baseline_entry, network_size, pareto_front
from latkit.pipeline.config import PipelineConfig
from latkit.pipeline.report import render_markdown, reproduce_command, write_report
from latkit.search.target import Target

pytest.importorskip("matplotlib")

SPACE = "proxyless_mobile_w05"
CALIB = {"calibration": {"a": 0.6695, "b": -0.00501, "c": -0.01603, "method": "lstsq3", "n_points": 5,
                         "rmse_ms": 0.0149, "max_rel_err": 0.0738},
         "lut_sums_ms": [0.3072, 0.7386, 0.7892, 0.9518, 0.7329], "n_ops": [10, 22, 23, 25, 25],
         "e2e_ms": [0.1353, 0.3975, 0.3846, 0.4901, 0.3424]}  # fmt: skip
SAMPLES = [{"latency_ms": 0.333, "accuracy": 15.96}, {"latency_ms": 0.342, "accuracy": 17.63},
           {"latency_ms": 0.367, "accuracy": 23.01}, {"latency_ms": 0.371, "accuracy": 19.5},
           {"latency_ms": 0.402, "accuracy": 61.2}, {"latency_ms": 0.455, "accuracy": 58.0},
           {"latency_ms": 0.478, "accuracy": 77.4}]  # fmt: skip


def _layer(name: str, op_type: str, ms: float, source: str) -> dict:
    return {"name": name, "key": f"{op_type}-{name}", "op_type": op_type, "latency_ms": ms, "share_pct": 0.0,
            "source": source}  # fmt: skip


def _summary() -> dict:
    sp = get_space(SPACE)
    largest = ["7x7_MBConv6"] * len(sp.choices())  # the slowest network (no layer skipped)
    chosen = [c.options[2] for c in sp.choices()]
    network = lambda native: sp.network(sp.arch_from_native(native), 32)  # noqa: E731
    config = PipelineConfig(device="cpu:onnxruntime", space=SPACE, target=Target(ms=0.5), resolution=32,
                            precision=Precision.INT8).to_dict()  # fmt: skip
    return {
        "device": "cpu:onnxruntime", "space": SPACE, "resolution": 32, "target_ms": 0.5, "tolerance": 0.1,
        "verdict": "HIT: 0.472 ms measured for a 0.5 ms target", "arch": chosen, "precision": "int8",
        "accuracy": 93.1, "files": [], "calibration": CALIB["calibration"], "data": "digits (10 classes)",
        "attempts": [{"name": "first", "search_target_ms": 0.5, "predicted_ms": 0.4905, "measured_ms": 0.472}],
        "best_attempt": "first",
        "layers": [_layer("first_conv", "stem", 0.067, "measured"), _layer("blocks.0", "mbconv", 0.075, "measured"),
                   _layer("blocks.1", "mbconv", 0.052, "predicted:xgboost"), _layer("blocks.2", "skip", 0.0, "")],
        "points": [{"predicted_ms": 0.135, "measured_ms": 0.1353, "kind": "calibration", "label": ""},
                   {"predicted_ms": 0.4905, "measured_ms": 0.472, "kind": "final", "label": "first"}],
        "history": [{"epoch": e, "expected_latency_ms": 0.6 - 0.02 * e, "derived_latency_ms": 0.55 - 0.01 * e,
                     "loss": 1.0 - 0.4 * e} for e in range(1, 6)],
        "samples": SAMPLES, "chosen": {"latency_ms": 0.4905, "accuracy": 80.52},
        "baseline": baseline_entry(SPACE, largest, network(largest), CALIB["lut_sums_ms"], CALIB["e2e_ms"], 0.5116),
        "chosen_size": network_size(network(chosen)),
        "measurement": {"latency_ms": 0.472, "statistic": "p5", "ci_low_ms": 0.468, "ci_high_ms": 0.477,
                        "median_ms": 0.481, "p90_ms": 0.503, "n_samples": 120,
                        "provenance": {"device": {"uri": "cpu:onnxruntime", "model": "AMD EPYC 7B13",
                                                  "runtime": "onnxruntime", "runtime_version": "1.20.1",
                                                  "threads": 1, "extra": {"provider": "CPUExecutionProvider"}}}},
        "device_state": {"snapshot": {"zones_c": {"cpu": 41.5, "bogus": -273.0}, "max_freq_khz": {"0": 2400000}},
                         "baseline": {"temp_c": 38.0}},
        "command": reproduce_command(config, "/tmp/run", "/tmp/lut.db"),
    }  # fmt: skip


def test_pareto_front_keeps_only_points_nothing_beats() -> None:
    front = pareto_front([*SAMPLES, {"latency_ms": 0.4905, "accuracy": 80.52}])
    assert [p["latency_ms"] for p in front] == [0.333, 0.342, 0.367, 0.402, 0.478, 0.4905]
    assert all(a["accuracy"] < b["accuracy"] for a, b in zip(front, front[1:]))
    assert pareto_front([{"latency_ms": 1.0, "accuracy": None}]) == []


def test_baseline_is_the_slowest_calibration_network_with_its_size() -> None:
    s = _summary()
    base, chosen = s["baseline"], s["chosen_size"]
    assert base["measured_ms"] == pytest.approx(0.4901)  # e2e of the largest LUT sum (0.9518)
    assert base["name"] == f"{SPACE} all-largest"
    # the all-7x7_MBConv6 network is bigger than a mixed 5x5 one in both parameters and MACs
    assert base["params"] > chosen["params"] > 10_000
    assert base["macs"] > chosen["macs"] > 100_000


def test_report_text_has_front_baseline_statistics_device_and_command() -> None:
    text = render_markdown(_summary(), {})
    assert "## Pareto front (search proxy)" in text and "**proxy** accuracy" in text
    front_rows = [ln for ln in text.splitlines() if re.fullmatch(r"\| 0\.\d{3} \| \d+\.\d \| .*\|", ln)]
    assert len(front_rows) == 6 and "**chosen**" in front_rows[-1]
    assert f"| baseline: {SPACE} all-largest | 0.512 | 0.490 | calibration" in text
    assert "Speed-up over the baseline (measured): **1.04x**" in text
    assert "95% CI [0.468, 0.477] ms" in text and "p90 0.503 ms" in text and "120 samples" in text
    assert "- CPU / device model: `AMD EPYC 7B13`" in text and "- runtime version: `1.20.1`" in text
    assert "hottest zone 41.5 °C (baseline 38.0 °C), max clock caps 2400 MHz" in text
    cmd = next(ln for ln in text.splitlines() if ln.startswith("`latkit run"))
    assert shlex.split(cmd.strip("`")) == ["latkit", "run", "--device", "cpu:onnxruntime", "--space", SPACE,
                                           "--target-ms", "0.5", "--resolution", "32", "--precision", "int8",
                                           "--lut", "/tmp/lut.db", "--out", "/tmp/run"]  # fmt: skip


def test_reproduce_command_keeps_a_relative_target_and_non_defaults() -> None:
    config = PipelineConfig(device="cpu:litert", space=SPACE, target=Target(fraction=0.6), tolerance=0.2,
                            max_steps_per_epoch=5, profile_quick=True).to_dict()  # fmt: skip
    args = shlex.split(reproduce_command(config, "out dir"))
    assert args[args.index("--target-ms") + 1] == "60%"
    assert args[args.index("--tolerance") + 1] == "0.2" and args[args.index("--max-steps") + 1] == "5"
    assert "--quick" in args and args[-2:] == ["--out", "out dir"] and "--seed" not in args


def test_report_html_is_self_contained_with_every_plot_inlined(tmp_path) -> None:
    write_report(tmp_path, _summary())
    page = (tmp_path / "report.html").read_text()
    sources = re.findall(r'<img src="([^"]*)"', page)
    assert len(sources) == 4  # layers, predicted vs measured, trajectory, accuracy vs latency
    for src in sources:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert "src=\"http" not in page and ".png\"" not in page
    assert (tmp_path / "report.md").read_text().count(".png)") == 4  # the markdown still links the files


def test_plots_carry_legends_and_op_types(tmp_path) -> None:
    from latkit.pipeline.report import plot_accuracy_latency, plot_layers, plot_trajectory

    plt = pytest.importorskip("matplotlib.pyplot")
    s = _summary()
    figures: list = []
    real_close = plt.close
    plt.close = lambda fig=None: figures.append(fig)  # keep the figures to read their artists back
    try:
        plot_layers(s["layers"], tmp_path / "layers.png")
        plot_trajectory(s["history"], 0.5, tmp_path / "trajectory.png")
        plot_accuracy_latency(s["samples"], s["chosen"], 0.5, tmp_path / "acc.png", s["baseline"])
    finally:
        plt.close = real_close
    layers, trajectory, acc = (f.axes for f in figures)
    assert [t.get_text() for t in layers[0].get_yticklabels()] == [
        "first_conv (stem)", "blocks.0 (mbconv)", "blocks.1 (mbconv)"]  # fmt: skip
    assert [t.get_text() for t in layers[0].get_legend().get_texts()] == [
        "operator measured alone on the device (LUT)", "predicted / imported (not measured here)"]  # fmt: skip
    labels = [t.get_text() for t in trajectory[0].get_legend().get_texts()]
    assert "search loss (right axis)" in labels and len(labels) == 5  # every curve, the loss included
    acc_labels = [t.get_text() for t in acc[0].get_legend().get_texts()]
    assert any(t.startswith("Pareto front (6") for t in acc_labels) and "chosen" in acc_labels
    assert any(t.startswith(f"baseline {SPACE} all-largest") for t in acc_labels)
    assert "proxy" in acc[0].get_ylabel() and "predicted" in acc[0].get_xlabel()
    for f in figures:
        real_close(f)
