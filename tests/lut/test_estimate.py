"""Network estimates from a LUT, checked against the published tables themselves."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from latkit.core.errors import MissingOpsError, UnknownNameError, UsageError
from latkit.lut.calibration import Calibration, save_calibration
from latkit.lut.estimate import estimate
from latkit.lut.io import import_public_yaml
from latkit.lut.store import LUT


def _space(name):
    try:
        from latkit.profiler.spaces import get_space

        return get_space(name)
    except (ImportError, UnknownNameError) as exc:
        pytest.skip(f"search space {name} is not available yet ({exc})")


def _ofa_archs(rng, n=4, r=224):
    """Largest, smallest and a few random OFA archs, in OFA's native form."""
    archs = [{"ks": [7] * 20, "e": [6] * 20, "d": [4] * 5, "r": r},
             {"ks": [3] * 20, "e": [3] * 20, "d": [2] * 5, "r": r}]  # fmt: skip
    for _ in range(n):
        archs.append({"ks": rng.choice([3, 5, 7], 20).tolist(), "e": rng.choice([3, 4, 6], 20).tolist(),
                      "d": rng.choice([2, 3, 4], 5).tolist(), "r": r})  # fmt: skip
    return archs


def test_ofa_estimate_is_the_sum_of_the_published_table(tmp_path, ofa224):
    space = _space("ofa_mbv3")
    table = yaml.safe_load(ofa224.read_text())
    with LUT.open(tmp_path / "ofa.db", create=True) as lut:
        import_public_yaml(lut, ofa224)
        for native in _ofa_archs(np.random.default_rng(0)):
            net = space.network(space.arch_from_native(native))
            est = estimate(lut, net)
            # independent sum: the yaml's means, looked up by each layer's key, stem to logits
            keys = [layer.spec.key for layer in net.layers if layer.spec.measurable]
            expected = sum(table[k]["mean"] for k in keys)
            assert est.lut_sum_ms == pytest.approx(expected, rel=1e-12)
            assert est.total_ms == est.lut_sum_ms and not est.calibrated
            assert est.device == "note10:ofa-lut"
            # stem, first block, Conv_1, AvgPool2D, Conv_2 and Logits, plus one per active block
            assert est.n_measurable == len(keys) == 6 + sum(native["d"])
            assert keys[0].startswith("Conv-input:224x224x3") and keys[-1].startswith("Logits-")
            assert [l.name for l in est.layers] == [l.name for l in net.layers]
            assert sum(l.share_pct for l in est.layers) == pytest.approx(100.0)
            free = [l for l, layer in zip(est.layers, net.layers) if not layer.spec.measurable]
            assert len(free) == 20 - sum(native["d"]) and all(l.latency_ms == 0.0 for l in free)


def test_largest_ofa_network_is_slower_than_smallest(tmp_path, ofa224):
    space = _space("ofa_mbv3")
    with LUT.open(tmp_path / "ofa.db", create=True) as lut:
        import_public_yaml(lut, ofa224)
        big, small = (estimate(lut, space.network(space.arch_from_native(a))).total_ms
                      for a in _ofa_archs(np.random.default_rng(0), n=0))  # fmt: skip
    assert big > 2 * small


def test_proxylessnas_estimate_is_the_sum_of_the_published_table(tmp_path, proxyless_yaml):
    space = _space("proxyless_mobile")
    table = yaml.safe_load(proxyless_yaml.read_text())
    rng = np.random.default_rng(1)
    with LUT.open(tmp_path / "p.db", create=True) as lut:
        import_public_yaml(lut, proxyless_yaml)
        for _ in range(5):
            net = space.network(space.sample(rng), 224)
            expected = sum(table[l.spec.key]["mean"] for l in net.layers if l.spec.measurable)
            assert estimate(lut, net).total_ms == pytest.approx(expected, rel=1e-12)


def test_missing_ops_are_listed_never_defaulted(tmp_path, ofa224):
    space = _space("ofa_mbv3")
    net = space.network(space.arch_from_native({"ks": [3] * 20, "e": [3] * 20, "d": [2] * 5, "r": 160}))
    with LUT.open(tmp_path / "ofa.db", create=True) as lut:
        import_public_yaml(lut, ofa224)  # the 224 table: a 160 network's ops are (mostly) absent
        with pytest.raises(MissingOpsError) as err:
            estimate(lut, net)
    table = yaml.safe_load(ofa224.read_text())
    keys = list(dict.fromkeys(l.spec.key for l in net.layers if l.spec.measurable))
    assert err.value.missing == [k for k in keys if k not in table]
    # only the pooled head (Conv_2, Logits) is resolution-independent
    assert len(err.value.missing) == len(keys) - 2
    assert "latkit profile" in str(err.value)


def test_calibration_is_applied_when_asked(tmp_path, ofa224):
    space = _space("ofa_mbv3")
    net = space.network(space.arch_from_native(_ofa_archs(np.random.default_rng(0), n=0)[0]))
    cal = Calibration(a=0.9, b=0.05, c=1.5, method="lstsq3", n_points=4, rmse_ms=0.1, max_rel_err=0.01)
    with LUT.open(tmp_path / "ofa.db", create=True) as lut:
        import_public_yaml(lut, ofa224)
        raw = estimate(lut, net, calibration=True)
        assert not raw.calibrated  # no calibration stored yet: the plain sum
        save_calibration(lut, "note10:ofa-lut", cal)
        est = estimate(lut, net)
        off = estimate(lut, net, calibration=False)
    assert est.calibrated and est.calibration == cal.to_dict()
    assert est.total_ms == pytest.approx(0.9 * raw.lut_sum_ms + 0.05 * raw.n_measurable + 1.5)
    assert off.total_ms == raw.lut_sum_ms and not off.calibrated
    d = est.to_dict()
    assert d["layers"][0]["name"] == "first_conv" and d["calibrated"] is True


def test_device_must_be_named_when_the_lut_has_several(tmp_path, ofa224, proxyless_yaml):
    space = _space("ofa_mbv3")
    net = space.network(space.arch_from_native(_ofa_archs(np.random.default_rng(0), n=0)[1]))
    with LUT.open(tmp_path / "two.db", create=True) as lut:
        import_public_yaml(lut, ofa224)
        import_public_yaml(lut, proxyless_yaml)
        with pytest.raises(UsageError, match="2 devices"):
            estimate(lut, net)
        assert estimate(lut, net, device="note10:ofa-lut").total_ms > 0
