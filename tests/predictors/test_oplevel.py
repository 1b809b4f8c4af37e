"""Op-level features, regressors, LUT filling, adaptive sampling and the LUT-sum estimator."""

from __future__ import annotations

import glob
from pathlib import Path

import numpy as np
import pytest

from latkit.devices.precision import Precision
from latkit.lut.calibration import Calibration, save_calibration
from latkit.lut.estimate import estimate
from latkit.lut.io import import_public_yaml
from latkit.lut.store import LUT
from latkit.predictors.base import load, save
from latkit.predictors.features import FEATURE_NAMES, feature_matrix, op_counts, op_mem_bytes
from latkit.predictors.lutsum import LutSumPredictor, random_index_matrix
from latkit.predictors.oplevel import (
    GBROpPredictor,
    XGBOpPredictor,
    _export_trees,
    eval_trees,
    MIN_PREDICTED_MS,
    fill_lut,
    fit_on_lut,
    heldout_accuracy,
    measured_ops,
)
from latkit.predictors.sampling import choose_informative, strata_of
from latkit.profiler.build import build_op, count_params, flops
from latkit.profiler.ops import Act, OpSpec, OpType
from latkit.profiler.spaces import get_space
from latkit.profiler.spaces.base import Arch
from latkit.profiler.spaces.netconfig import network_from_netconfig

DATA = (Path(__file__).resolve().parents[2] / "data" / "luts")
OFA_TABLES = sorted(glob.glob(str(DATA / "ofa_note10_*_lookup_table.yaml")))
PROXYLESS_TABLE = DATA / "proxylessnas_mobile_trim.yaml"
pytestmark = pytest.mark.skipif(not OFA_TABLES, reason="public OFA Note10 tables not present")


@pytest.fixture(scope="module")
def ofa_lut(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """All five OFA Note10 tables imported, each under its own device URI."""
    path = tmp_path_factory.mktemp("ofa") / "ofa.db"
    with LUT.open(path, create=True) as lut:
        for table in OFA_TABLES:
            res = Path(table).name.split("_")[2]
            import_public_yaml(lut, table, device_uri=f"note10:r{res}")
    return path


@pytest.fixture(scope="module")
def ofa_ops(ofa_lut: Path) -> tuple[list[OpSpec], np.ndarray, np.ndarray]:
    """Every (op, latency, resolution) of the five tables."""
    specs, lat, res = [], [], []
    with LUT.open(ofa_lut) as lut:
        for d in lut.devices():
            s, v = measured_ops(lut, d["uri"])
            specs += s
            lat.append(v)
            res += [int(d["uri"].split(":r")[1])] * len(s)
    return specs, np.concatenate(lat), np.asarray(res)


# ---------------------------------------------------------------- features


def test_features_match_the_built_torch_modules(ofa_ops) -> None:
    specs = ofa_ops[0][:96] + get_space("proxyless_mobile").operators(64)[:40]
    specs.append(OpSpec(OpType.MBCONV, (8, 8, 16), (8, 8, 32), kernel=3, mid_channels=64,
                        expand_ratio=4, groups=2, act=Act.RELU))  # fmt: skip
    types = {s.op_type for s in specs}
    assert {OpType.STEM, OpType.MBCONV, OpType.HEAD_CONV, OpType.POOL, OpType.LOGITS} <= types
    assert any(s.se for s in specs) and any(s.groups > 1 for s in specs)
    for s in specs:
        c = op_counts(s)
        assert c.params == count_params(build_op(s)), s.key
        assert c.macs == flops(s), s.key


def test_memory_traffic_counts_intermediate_maps() -> None:
    s = OpSpec(OpType.MBCONV, (8, 8, 16), (4, 4, 24), kernel=3, stride=2, expand_ratio=6,
               mid_channels=96, act=Act.RELU6)  # fmt: skip
    values = 8 * 8 * 16 + 4 * 4 * 24 + op_counts(s).params + 8 * 8 * 96 + 4 * 4 * 96
    assert op_mem_bytes(s) == 4 * values
    x = feature_matrix([s])
    assert x.shape == (1, len(FEATURE_NAMES))
    assert x[0, FEATURE_NAMES.index("act_relu6")] == 1.0
    assert x[0, FEATURE_NAMES.index("type_mbconv")] == 1.0


# ---------------------------------------------------------------- regressors


def test_heldout_accuracy_on_the_ofa_note10_tables(ofa_ops) -> None:
    specs, lat, res = ofa_ops
    mask = np.zeros(len(specs), dtype=bool)
    mask[np.random.default_rng(0).permutation(len(specs))[: len(specs) // 5]] = True
    for pred in (XGBOpPredictor(), GBROpPredictor()):
        fig = heldout_accuracy(specs, lat, pred, mask)
        assert fig["within_10pct"] >= 0.92, (pred, fig)  # measured 0.99 for both
    # an unseen resolution inside the trained range (192 from 160/176/208/224)
    fig = heldout_accuracy(specs, lat, XGBOpPredictor(), res == 192)
    assert fig["within_10pct"] >= 0.92, fig  # measured 1.00


def test_gbr_tree_arrays_reproduce_scikit_learn() -> None:
    from sklearn.ensemble import GradientBoostingRegressor

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(200, 5)), rng.normal(size=200)
    gbr = GradientBoostingRegressor(n_estimators=20, max_depth=3, init="zero").fit(x, y)
    trees = _export_trees([row[0] for row in gbr.estimators_])
    trees["value"] = trees["value"] * gbr.learning_rate
    np.testing.assert_allclose(eval_trees(trees, 3, x), gbr.predict(x), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("cls", [XGBOpPredictor, GBROpPredictor])
def test_save_load_round_trip(cls, ofa_ops, tmp_path: Path) -> None:
    specs, lat, _ = ofa_ops
    pred = cls(n_estimators=50).fit(specs[:300], lat[:300])
    save(pred, tmp_path / "p")
    again = load(tmp_path / "p")
    assert type(again) is cls and again.n_train_ == 300
    np.testing.assert_allclose(again.predict(specs[300:]), pred.predict(specs[300:]), rtol=1e-6)
    assert not list(tmp_path.rglob("*.pkl"))


# ---------------------------------------------------------------- fill_lut


def test_fill_lut_never_overwrites_measured_rows(tmp_path: Path) -> None:
    path = tmp_path / "lut.db"
    with LUT.open(path, create=True) as lut:
        import_public_yaml(lut, OFA_TABLES[0], device_uri="note10:x")
        before = {r["op_key"]: r for r in lut.rows("note10:x")}
        pred = fit_on_lut(lut, "note10:x", XGBOpPredictor(n_estimators=60))
        assert pred.n_train_ == len(before)
        wanted = [OpSpec.from_dict(o["spec"]) for o in lut.ops()]
        for table in OFA_TABLES[1:3]:  # two more resolutions: most of their ops are new
            with LUT.open(tmp_path / f"{Path(table).stem}.db", create=True) as other:
                import_public_yaml(other, table, device_uri="d")
                wanted += measured_ops(other, "d")[0]
        new_keys = {s.key for s in wanted} - set(before)
        n = fill_lut(lut, wanted, "note10:x", pred)
        assert n == len(new_keys) > 50
        after = {r["op_key"]: r for r in lut.rows("note10:x")}
        for key, row in before.items():  # measured rows untouched
            assert after[key]["latency_ms"] == row["latency_ms"]
            assert after[key]["source"] == row["source"]
        for key in new_keys:
            assert after[key]["source"] == "predicted:oplevel_xgb"
            assert after[key]["provenance"]["n_train"] == len(before)
            assert after[key]["provenance"]["predictor"] == "oplevel_xgb"
        # measured_ops ignores predictions; a refill replaces only predicted rows
        assert len(measured_ops(lut, "note10:x")[0]) == len(before)
        assert fill_lut(lut, wanted, "note10:x", pred) == len(new_keys)
        assert len(lut.rows("note10:x")) == len(before) + len(new_keys)
        # predicted ops are still to be measured, and a measurement replaces them
        assert lut.done_keys("note10:x") == set(before)
        key = sorted(new_keys)[0]
        spec = lut.spec(key)
        real = lut.measurement(key, "note10:x")
        real.latency_ms = 1.2345
        lut.add(spec, real, {"uri": "note10:x"})
        row = {r["op_key"]: r for r in lut.rows("note10:x")}[key]
        assert row["source"] == "measured" and row["latency_ms"] == 1.2345
        assert key in lut.done_keys("note10:x")


class _Undershooting(XGBOpPredictor):
    """A fitted XGBoost predictor whose output is shifted down, as a poor fit can be."""

    def predict(self, ops):
        return super().predict(ops) - 1.0


def test_fill_lut_raises_undershooting_predictions_to_a_positive_floor(tmp_path: Path) -> None:
    with LUT.open(tmp_path / "lut.db", create=True) as lut:
        import_public_yaml(lut, OFA_TABLES[0], device_uri="d")
        ops = [OpSpec.from_dict(o["spec"]) for o in lut.ops()]
        pred = fit_on_lut(lut, "d", _Undershooting(n_estimators=20))
        with LUT.open(tmp_path / "other.db", create=True) as other:
            raw = pred.predict(ops)
            assert (raw <= 0).sum() > 0  # the shift pushes some ops below zero
            assert fill_lut(other, ops, "d", pred) == len(ops)
            rows = other.rows("d")
            got = np.array([r["latency_ms"] for r in rows])
            assert got.min() == pytest.approx(MIN_PREDICTED_MS)
            assert (got > 0).all()
            assert rows[0]["provenance"]["clamped_to_min_ms"]["rows"] == int((raw < MIN_PREDICTED_MS).sum())


# ---------------------------------------------------------------- sampling


def test_choose_informative_covers_the_strata() -> None:
    space = get_space("proxyless_mobile")
    ops = space.operators(128) + space.operators(224)
    n = 30
    picked = choose_informative(ops, n, rng=0)
    assert len(picked) == n and len({s.key for s in picked}) == n
    all_strata = set().union(*strata_of(feature_matrix(ops)))
    got = set().union(*strata_of(feature_matrix(picked)))
    assert all_strata <= got  # every kernel, expand, stride, size, op type measured once
    macs = [op_counts(s).macs for s in ops]
    assert max(macs) in [op_counts(s).macs for s in picked]
    # ops already measured are never chosen again
    more = choose_informative(ops, 10, measured=picked, rng=0)
    assert len(more) == 10 and not {s.key for s in more} & {s.key for s in picked}


def test_uncertainty_rounds_beat_random_choice(ofa_ops) -> None:
    specs, lat, _ = ofa_ops
    truth = {s.key: v for s, v in zip(specs, lat)}
    chosen = choose_informative(specs, 40, rng=0)
    while len(chosen) < 80:
        batch = choose_informative(specs, 20, {s.key: truth[s.key] for s in chosen}, rng=1)
        assert not {s.key for s in batch} & {s.key for s in chosen}
        chosen += batch

    def score(train: list[OpSpec]) -> float:
        keys = {s.key for s in train}
        test = list({s.key: s for s in specs if s.key not in keys}.values())
        pred = XGBOpPredictor(n_estimators=150).fit(train, [truth[s.key] for s in train])
        t = np.array([truth[s.key] for s in test])
        return float(np.mean(np.abs(pred.predict(test) / t - 1) <= 0.1))

    uniq = list({s.key: s for s in specs}.values())
    rand = [score([uniq[i] for i in np.random.default_rng(s).permutation(len(uniq))[:80]])
            for s in range(2)]  # fmt: skip
    adaptive = score(chosen)
    assert adaptive >= 0.93 and adaptive >= max(rand) + 0.02  # measured 0.96 vs 0.91, 0.89


# ---------------------------------------------------------------- LUT sum


@pytest.fixture(scope="module")
def proxyless_lut(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("px") / "px.db"
    with LUT.open(path, create=True) as lut:
        import_public_yaml(lut, PROXYLESS_TABLE)
    return path


def test_lutsum_equals_the_lut_estimate(proxyless_lut: Path, tmp_path: Path) -> None:
    space = get_space("proxyless_mobile")
    idx = random_index_matrix(space, 200, 0)
    nets = [space.network(Arch(space.name, tuple(r))) for r in idx]
    pred = LutSumPredictor(lut_path=str(proxyless_lut), space="proxyless_mobile").fit()
    with LUT.open(proxyless_lut) as lut:
        want = np.array([estimate(lut, n).total_ms for n in nets])
    np.testing.assert_allclose(pred.predict(nets), want, rtol=1e-12)
    np.testing.assert_allclose(pred.predict(idx), want, rtol=1e-12)  # vectorised path
    save(pred, tmp_path / "ls")
    np.testing.assert_allclose(load(tmp_path / "ls").predict(idx), want, rtol=1e-12)


def test_lutsum_calibration_fit_and_stored(proxyless_lut: Path, tmp_path: Path) -> None:
    space = get_space("proxyless_mobile")
    idx = random_index_matrix(space, 30, 1)
    pred = LutSumPredictor(lut_path=str(proxyless_lut), space="proxyless_mobile")
    sums = pred.fit().lut_sums(idx)
    counts = np.array([len([s for s in space.network(Arch(space.name, tuple(r))).specs
                            if s.measurable]) for r in idx])  # fmt: skip
    e2e = 0.8 * sums + 0.05 * counts + 1.5  # a device with a per-op and a per-run cost
    pred.fit(idx, e2e)
    assert pred.calibration_["method"] == "lstsq3"
    np.testing.assert_allclose(pred.predict(idx), e2e, rtol=1e-9)
    # a calibration stored in the LUT is what estimate() and a y-less fit both apply
    copy = tmp_path / "cal.db"
    copy.write_bytes(proxyless_lut.read_bytes())
    with LUT.open(copy) as lut:
        uri = lut.resolve_device(None)
        save_calibration(lut, uri, Calibration(1.1, 0.02, 0.3, "lstsq3", 3, 0.0, 0.0))
        nets = [space.network(Arch(space.name, tuple(r))) for r in idx[:10]]
        want = [estimate(lut, n).total_ms for n in nets]
    stored = LutSumPredictor(lut_path=str(copy), space="proxyless_mobile").fit()
    np.testing.assert_allclose(stored.predict(idx[:10]), want, rtol=1e-12)


# ---------------------------------------------------------------- sampled profiling


def test_profile_sampled_measures_n_and_predicts_the_rest(tmp_path: Path) -> None:
    from latkit.devices import open_device
    from latkit.predictors.sampling import profile_sampled
    from latkit.profiler.protocol import ProtocolConfig

    space = get_space("proxyless_mobile")
    ops = space.operators(32)
    device = open_device("cpu:onnxruntime")
    config = ProtocolConfig.quick(min_samples=5, max_samples=10, max_seconds_per_op=0.2)
    seen: list[tuple[int, int]] = []
    with LUT.open(tmp_path / "s.db", create=True) as lut:
        rep = profile_sampled(
            device, ops, lut, config, n=10, rng=0, rounds=2,
            on_progress=lambda i, total, key, m: seen.append((i, total)),
        )  # fmt: skip
        assert rep.ok and rep.rounds == 2 and len(set(rep.measured)) == 10
        assert rep.n_train == 10 and rep.n_predicted == len(ops) - 10
        assert seen[-1] == (10, 10)
        rows = {r["op_key"]: r for r in lut.rows(device.uri)}
        assert set(rows) == {s.key for s in ops}
        assert {k for k, r in rows.items() if r["source"] == "measured"} == set(rep.measured)
        assert all(r["latency_ms"] > 0 for r in rows.values())
        # the LUT now estimates any network of the space, predicted rows included
        net = space.network(space.sample(np.random.default_rng(0)), 32)
        assert estimate(lut, net).total_ms > 0


def test_lutsum_names_missing_ops_and_is_registered(ofa_lut: Path, proxyless_lut: Path) -> None:
    from latkit.core.errors import MissingOpsError
    from latkit.predictors.base import list_predictors
    from latkit.predictors.lutsum import lutsum_throughput

    assert {"oplevel_xgb", "oplevel_gbr", "lutsum"} <= set(list_predictors())
    space = get_space("proxyless_mobile")
    wrong = LutSumPredictor(lut_path=str(ofa_lut), device="note10:r224", space=space.name).fit()
    with pytest.raises(MissingOpsError) as err:
        wrong.predict(random_index_matrix(space, 5, 0))
    assert "expanded_conv-input:" in str(err.value)
    ok = LutSumPredictor(lut_path=str(proxyless_lut), space=space.name).fit()
    fig = lutsum_throughput(ok, n_archs=20_000, batch=5_000)
    assert fig["n_archs"] == 20_000 and fig["archs_per_s"] > 0


@pytest.mark.parametrize("cls", [XGBOpPredictor, GBROpPredictor])
def test_few_training_ops_do_not_extrapolate_wildly(cls, ofa_ops) -> None:
    # `profile --sample 12` fits on a dozen ops; the fill must stay physical
    specs, lat, _ = ofa_ops
    rng = np.random.default_rng(0)
    train = rng.choice(len(specs), 12, replace=False)
    pred = cls(random_state=0).fit([specs[i] for i in train], lat[train]).predict(specs)
    assert np.all(pred > lat.min() / 10) and np.all(pred < lat.max() * 10)
    rel = np.abs(pred - lat) / lat
    assert np.median(rel) < 0.5


def test_estimate_tells_predicted_rows_from_measured_ones(tmp_path: Path) -> None:
    with LUT.open(tmp_path / "lut.db", create=True) as lut:
        import_public_yaml(lut, PROXYLESS_TABLE)
        uri = lut.resolve_device(None)
        pred = fit_on_lut(lut, uri, XGBOpPredictor(n_estimators=40))
        # the stage-1 ops of the published net (32 channels) are not in the table: predict them
        net = network_from_netconfig(DATA / "proxyless_mobile.config")
        assert fill_lut(lut, net.specs, uri, pred) == 3
        est = estimate(lut, net, calibration=False)
    sources = {layer.key: layer.source for layer in est.layers}
    predicted = [k for k, s in sources.items() if s.startswith("predicted:")]
    assert len(predicted) == 3 and all("32" in k for k in predicted)
    assert all(s.startswith("imported:") for k, s in sources.items()
               if s and k not in predicted)


def test_op_level_fill_reads_and_writes_one_precision(tmp_path: Path) -> None:
    from latkit.core.errors import UsageError

    with LUT.open(tmp_path / "lut.db", create=True) as lut:
        import_public_yaml(lut, OFA_TABLES[0], device_uri="note10:x")  # fp32 rows
        n_fp32 = len(lut.rows("note10:x", precision=Precision.FP32))
        with pytest.raises(UsageError, match="0 measured int8 op"):
            fit_on_lut(lut, "note10:x", XGBOpPredictor(n_estimators=20), precision=Precision.INT8)
        import_public_yaml(lut, OFA_TABLES[0], device_uri="note10:x", precision=Precision.INT8)
        specs, lat = measured_ops(lut, "note10:x", precision=Precision.INT8)
        assert len(specs) == n_fp32
        # an int8 measurement changes the int8 rows only; the fp32 predictor does not see it
        drop = specs[0].key
        with lut.transaction() as conn:
            conn.execute("DELETE FROM measurements WHERE op_key = ? AND precision = 'int8'", (drop,))
        pred = fit_on_lut(lut, "note10:x", XGBOpPredictor(n_estimators=20), precision=Precision.INT8)
        assert pred.n_train_ == n_fp32 - 1
        assert fill_lut(lut, [specs[0]], "note10:x", pred, precision=Precision.INT8) == 1
        int8 = {r["op_key"]: r for r in lut.rows("note10:x", precision=Precision.INT8)}
        assert int8[drop]["source"] == "predicted:oplevel_xgb" and int8[drop]["precision"] == "int8"
        fp32 = {r["op_key"]: r for r in lut.rows("note10:x", precision=Precision.FP32)}
        assert len(fp32) == n_fp32 and fp32[drop]["source"] != "predicted:oplevel_xgb"
