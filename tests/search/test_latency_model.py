"""Search latency models: LUT tables equal the LUT estimate; E[LAT] and its gradient."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from g2_helpers import make_lut
from latkit.lut.calibration import fit_calibration, save_calibration
from latkit.core.errors import MissingOpsError
from latkit.lut.estimate import estimate
from latkit.profiler.spaces import get_space
from latkit.profiler.spaces.ofa_mbv3 import OfaMbv3Space
from latkit.profiler.spaces.proxyless import ProxylessMobileSpace
from latkit.search.framework.base import SearchError
from latkit.lut.tables import TableLatencyModel
from latkit.search.framework.latency import PredictorLatencyModel
from latkit.lut.tables import build_layout
from latkit.search.run import SearchConfig, run_search

pytestmark = pytest.mark.slow


# one thread: the test machine's cores are shared, and oversubscribed threads spin
torch.set_num_threads(1)

@pytest.fixture(scope="module")
def proxyless(tmp_path_factory):
    space = ProxylessMobileSpace(width_mult=0.25)
    lut = make_lut(tmp_path_factory.mktemp("lut") / "p.db", space, 32)
    return space, lut, TableLatencyModel.from_lut(space, lut, resolution=32)


SPACES = {
    "proxyless": lambda: (ProxylessMobileSpace(width_mult=0.25), 32),
    "fbnet": lambda: (get_space("fbnet"), None),
    "ofa": lambda: (OfaMbv3Space(resolutions=(128, 160)), None),
}


@pytest.mark.parametrize("name", sorted(SPACES))
def test_latency_equals_lut_estimate(name, tmp_path):
    space, res = SPACES[name]()
    if name == "ofa":  # both resolutions in one LUT: r is a choice of the architecture
        lut = make_lut(tmp_path / "x.db", space, 128)
        for spec in space.operators(160):
            if spec.key not in lut.lookup([spec.key], strict=False):
                from g2_helpers import DEVICE, _measurement, op_latency_ms

                lut.add(spec, _measurement(spec, op_latency_ms(spec)), DEVICE)
    else:
        lut = make_lut(tmp_path / "x.db", space, res)
    model = TableLatencyModel.from_lut(space, lut, resolution=res)
    rng = np.random.default_rng(1)
    for _ in range(25):
        arch = space.sample(rng)
        want = estimate(lut, space.network(arch, res), calibration=False).total_ms
        assert model.latency_ms(arch) == pytest.approx(want, rel=1e-12)
    lo, lo_arch = model.min_latency()
    hi, hi_arch = model.max_latency()
    assert model.latency_ms(lo_arch) == pytest.approx(lo) and model.latency_ms(hi_arch) == pytest.approx(hi)
    samples = [model.latency_ms(space.sample(rng)) for _ in range(200)]
    assert lo <= min(samples) and hi >= max(samples) and lo < hi


def test_layout_dependencies():
    ofa = build_layout(OfaMbv3Space(resolutions=(128,)))
    # stage 1, blocks 0..3 are layers 2..5: kernel i, expand 20+i, and depth d0 (40) from block 2 on
    assert [s.deps for s in ofa.slots[2:6]] == [(0, 20), (1, 21), (2, 22, 40), (3, 23, 40)]
    prox = build_layout(ProxylessMobileSpace(width_mult=0.25), 32)
    owners = prox.single_choice_slots()
    assert sorted(owners) == list(range(21)) and owners[0].index == 2
    with pytest.raises(Exception, match="several choices"):
        ofa.single_choice_slots()


def test_calibrated_model_equals_calibrated_estimate(proxyless):
    space, lut, _ = proxyless
    uri = lut.resolve_device(None)
    cal = fit_calibration([1.0, 2.0, 3.5, 5.0], [10, 20, 25, 40], [1.3, 2.1, 3.6, 5.9])
    save_calibration(lut, uri, cal)
    model = TableLatencyModel.from_lut(space, lut, resolution=32, calibrated=True)
    rng = np.random.default_rng(3)
    for _ in range(10):
        arch = space.sample(rng)
        est = estimate(lut, space.network(arch, 32), calibration=True)
        assert est.calibrated and model.latency_ms(arch) == pytest.approx(est.total_ms, rel=1e-12)
    assert model.provenance["kind"] == "lut-calibrated"


@pytest.mark.parametrize("ofa", [False, True])
def test_expected_latency_value_and_gradient(ofa, proxyless, tmp_path):
    if ofa:
        space = OfaMbv3Space(resolutions=(128,))
        model = TableLatencyModel.from_lut(space, make_lut(tmp_path / "o.db", space, 128))
    else:
        space, _, model = proxyless
    n = model.n_options
    # a one-hot distribution gives exactly the architecture's latency
    arch = space.sample(np.random.default_rng(0))
    onehot = [torch.nn.functional.one_hot(torch.tensor(i), k).double() for i, k in zip(arch.indices, n)]
    assert float(model.expected_latency(onehot)) == pytest.approx(model.latency_ms(arch), rel=1e-12)
    # gradient w.r.t. logits: autograd vs central finite differences
    gen = torch.Generator().manual_seed(0)
    logits = [torch.randn(k, dtype=torch.float64, generator=gen, requires_grad=True) for k in n]
    e = model.expected_latency([torch.softmax(t, 0) for t in logits])
    e.backward()
    eps = 1e-6
    for c in (0, len(n) // 2, len(n) - 2):
        for o in range(n[c]):
            vals = []
            for sign in (1, -1):
                shifted = [t.detach().clone() for t in logits]
                shifted[c][o] += sign * eps
                vals.append(float(model.expected_latency([torch.softmax(t, 0) for t in shifted])))
            fd = (vals[0] - vals[1]) / (2 * eps)
            assert float(logits[c].grad[o]) == pytest.approx(fd, rel=1e-5, abs=1e-9)
    # E[LAT] of a random distribution matches a Monte-Carlo mean
    probs = [torch.softmax(t.detach(), 0) for t in logits]
    rng = np.random.default_rng(5)
    mc = np.mean([
        model.latency_ms(type(arch)(space.name, tuple(int(rng.choice(k, p=p.numpy())) for k, p in zip(n, probs))))
        for _ in range(800)
    ])  # fmt: skip
    assert float(model.expected_latency(probs)) == pytest.approx(mc, rel=0.03)


def test_unreachable_target_names_min(proxyless, tmp_path):
    space, _, model = proxyless
    lo = model.min_latency_ms()
    with pytest.raises(SearchError, match=f"smallest latency reachable is {lo:.4g} ms"):
        run_search(space, model, SearchConfig(lo * 0.9, "proxyless-grad", epochs=1), "digits", tmp_path)


def test_fastest_full_skips_no_layer_and_is_the_fastest_such(proxyless):
    space, lut, model = proxyless
    full = model.fastest_full()
    native = space.arch_to_native(full)
    assert "zero" not in native
    n_full = estimate(lut, space.network(full, 32)).n_measurable
    rng = np.random.default_rng(0)
    dense = [a for a in (space.sample(rng) for _ in range(400)) if "zero" not in space.arch_to_native(a)]
    assert len(dense) > 10
    for arch in dense:  # as many operators as any architecture without a skip, and no slower
        assert estimate(lut, space.network(arch, 32)).n_measurable <= n_full
        assert model.latency_ms(arch) >= model.latency_ms(full) - 1e-12
    # the fastest architecture skips layers: the two are the corners a calibration needs
    fastest = model.min_latency()[1]
    assert estimate(lut, space.network(fastest, 32)).n_measurable < n_full
    assert model.latency_ms(fastest) < model.latency_ms(full)


def test_predictor_model_scores_and_estimates(proxyless):
    from sklearn.linear_model import LinearRegression

    space, _, table = proxyless
    rng = np.random.default_rng(0)
    archs = [space.sample(rng) for _ in range(300)]
    x = np.stack([space.encode(a) for a in archs])
    reg = LinearRegression().fit(x, [table.latency_ms(a) for a in archs])
    model = PredictorLatencyModel(space, reg, mc_samples=64, seed=1)
    test = [space.sample(rng) for _ in range(20)]
    err = [abs(model.latency_ms(a) - table.latency_ms(a)) / table.latency_ms(a) for a in test]
    assert max(err) < 1e-6  # the table model is additive in the one-hot features
    logits = [torch.zeros(k, dtype=torch.float64, requires_grad=True) for k in table.n_options]
    e = model.expected_latency([torch.softmax(t, 0) for t in logits])
    exact = float(table.expected_latency([torch.softmax(t.detach(), 0) for t in logits]))
    assert float(e) == pytest.approx(exact, rel=0.05)
    e.backward()
    assert all(t.grad is not None and torch.isfinite(t.grad).all() for t in logits)
    assert model.min_latency()[0] == pytest.approx(table.min_latency_ms(), rel=1e-6)


def test_tables_for_another_class_count_equal_the_estimate_of_that_network(tmp_path):
    from g2_helpers import DEVICE, _measurement, op_latency_ms
    from latkit.profiler.spaces.base import with_classes

    space = ProxylessMobileSpace(width_mult=0.25)
    lut = make_lut(tmp_path / "c.db", space, 32)
    rng = np.random.default_rng(4)
    head = with_classes(space.network(space.sample(rng), 32), 10).layers[-1].spec
    lut.add(head, _measurement(head, op_latency_ms(head)), DEVICE)
    model = TableLatencyModel.from_lut(space, lut, resolution=32, classes=10)
    wide = TableLatencyModel.from_lut(space, lut, resolution=32)
    for _ in range(10):
        arch = space.sample(rng)
        want = estimate(lut, with_classes(space.network(arch, 32), 10), calibration=False).total_ms
        assert model.latency_ms(arch) == pytest.approx(want, rel=1e-12)
        assert model.latency_ms(arch) != pytest.approx(wide.latency_ms(arch), rel=1e-9)
    assert model.provenance["classes"] == 10
    with pytest.raises(MissingOpsError, match="no 11-class classifier.*--classes 11"):
        TableLatencyModel.from_lut(space, lut, resolution=32, classes=11)
