"""One statistic per figure: ``--statistic`` of ``profile``, ``measure`` and ``run`` is one typed value, a LUT
keeps one, and every table and JSON names it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from latkit.cli import main
from latkit.core.errors import UsageError
from latkit.lut.cache import lut_path_for
from latkit.lut.store import LUT, check_statistic
from latkit.pipeline.config import PipelineConfig
from latkit.profiler.protocol import ProtocolConfig, Statistic, parse_statistic
from latkit.profiler.runner import profile_ops
from latkit.profiler.spaces import get_space
from latkit.search.target import parse_target
from scripted import ScriptedDevice

SPECS = [s for s in get_space("proxyless_mobile_w05").operators(32) if s.measurable][:2]


def _lut(path: Path, statistic: Statistic, uri: str = "scripted:host") -> Path:
    """Two operators measured at ``statistic`` on a scripted device called ``uri`` (0.2 and 0.3 ms, every sample)."""
    figures = {SPECS[0].key: 0.2, SPECS[1].key: 0.3}
    with LUT.open(path, create=True) as lut:
        profile_ops(ScriptedDevice(lambda key, n: figures[key], uri), SPECS, lut,
                    statistic.apply(ProtocolConfig.quick()))  # fmt: skip
    return path


def test_a_statistic_is_one_typed_value_parsed_at_the_door() -> None:
    assert parse_statistic(None) is Statistic.P5 and parse_statistic("median") is Statistic.MEDIAN
    assert [s.quantile for s in Statistic] == [0.05, 0.10, 0.25, 0.5]
    assert Statistic.P25.apply(ProtocolConfig.quick()).quantile == 0.25
    with pytest.raises(UsageError, match="--statistic must be one of p5, p10, p25, median"):
        parse_statistic("mean")


def test_a_lut_keeps_one_statistic_and_names_it(tmp_path: Path, capsys) -> None:
    path = _lut(tmp_path / "p5.db", Statistic.P5)
    with LUT.open(path) as lut:
        assert lut.quantiles("scripted:host") == {0.05} and lut.quantiles("cpu:onnxruntime") == set()
        check_statistic(lut, "scripted:host", 0.05)  # the same: fine
        check_statistic(lut, "cpu:onnxruntime", 0.5)  # another device: its own
        with pytest.raises(UsageError, match="holds p5 figures of scripted:host at fp32, and a LUT keeps one"):
            check_statistic(lut, "scripted:host", 0.5)
    assert main(["lut", "show", str(path), "--json", "--rows"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [d["statistic"] for d in doc["summary"]["devices"]] == ["p5"]
    assert main(["lut", "show", str(_lut(tmp_path / "median.db", Statistic.MEDIAN)), "--rows"]) == 0
    shown = capsys.readouterr().out
    assert "statistic" in shown and "median" in shown and "p5" not in shown


def test_profile_refuses_another_statistic_into_a_lut(tmp_path: Path, capsys) -> None:
    path = _lut(tmp_path / "p5.db", Statistic.P5, uri="cpu:onnxruntime")  # as if this CPU measured them at p5
    argv = ["profile", "--space", "proxyless_mobile_w05", "-r", "32", "--lut", str(path), "--quick", "--limit", "1"]
    assert main([*argv, "--statistic", "median"]) == 2
    assert "holds p5 figures of cpu:onnxruntime at fp32, and a LUT keeps one" in capsys.readouterr().err
    with LUT.open(path) as lut:
        assert len(lut.rows("cpu:onnxruntime")) == 2  # nothing measured
    assert main([*argv, "--statistic", "mean"]) == 2 and "--statistic must be one of" in capsys.readouterr().err


def test_run_takes_the_statistic_keeps_old_fingerprints_and_its_own_lut(tmp_path: Path, capsys) -> None:
    base = dict(device="cpu:onnxruntime", space="proxyless_mobile_w05", target=parse_target("60%"), resolution=32)
    p5, median = PipelineConfig(**base), PipelineConfig(**base, statistic=Statistic.MEDIAN)
    assert "statistic" not in p5.to_dict() and median.to_dict()["statistic"] == "median"
    assert p5.fingerprint() != median.fingerprint()
    with pytest.raises(UsageError, match="statistic must be a Statistic"):
        PipelineConfig(**base, statistic="median")
    assert lut_path_for("cpu:onnxruntime", "s", 32, tmp_path).name == "cpu_onnxruntime-s-32.db"
    assert lut_path_for("cpu:onnxruntime", "s", 32, tmp_path, Statistic.MEDIAN).name == "cpu_onnxruntime-s-32-median.db"
    code = main(["run", "--target-ms", "60%", "--statistic", "mean", "--out", str(tmp_path / "run")])
    assert code == 2 and "--statistic must be one of" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_a_calibration_measures_networks_at_the_statistic_of_the_lut(tmp_path: Path) -> None:
    import numpy as np

    from latkit.lut.calibrate import calibrate_device

    space = get_space("proxyless_mobile_w05")
    rng = np.random.default_rng(0)
    nets = [space.network(space.sample(rng), 32) for _ in range(3)]
    ops = {s.key: s for net in nets for s in net.measurable_specs()}
    device = ScriptedDevice(lambda key, n: 0.05 if key in ops else 2.0)  # every operator 0.05 ms, a network 2 ms
    with LUT.open(tmp_path / "median.db", create=True) as lut:
        profile_ops(device, list(ops.values()), lut, Statistic.MEDIAN.apply(ProtocolConfig.quick()))
        assert lut.quantiles("scripted:host") == {0.5}
        calibrate_device(lut, device, nets, ProtocolConfig.quick())  # a p5 protocol asked for
        provenance = lut.calibrations("scripted:host")[-1]["provenance"]
    assert provenance["protocol"]["quantile"] == 0.5  # measured at the LUT's median


def test_measure_refuses_a_lut_of_another_statistic_before_measuring(tmp_path: Path, capsys) -> None:
    import numpy as np

    space = get_space("proxyless_mobile_w05")
    arch = space.sample(np.random.default_rng(0))
    specs = {s.key: s for s in space.network(arch, 32).measurable_specs()}
    with LUT.open(tmp_path / "p5.db", create=True) as lut:  # every operator of the network, at p5
        profile_ops(ScriptedDevice(lambda key, n: 0.05, "cpu:onnxruntime"), list(specs.values()), lut,
                    ProtocolConfig.quick())  # fmt: skip
    argv = ["measure", "--arch", json.dumps(space.arch_to_native(arch)), "--space", "proxyless_mobile_w05", "-r",
            "32", "--lut", str(tmp_path / "p5.db"), "--quick", "--statistic", "median"]  # fmt: skip
    assert main(argv) == 2
    assert "holds p5 figures of cpu:onnxruntime at fp32, and a LUT keeps one statistic: give --statistic p5" in \
        capsys.readouterr().err
