"""ProxylessNAS gradient search: losses, gate updates, target projection, resume, run_search."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from g2_helpers import make_lut
from latkit.profiler.spaces.base import Arch
from latkit.profiler.spaces.proxyless import ProxylessMobileSpace
from latkit.core.errors import UsageError
from latkit.search.framework.base import SearchError, reward
from latkit.search.supernet.checkpoint import has_checkpoint, load_checkpoint, save_checkpoint
from latkit.search.supernet.data import SearchData, load_digits
from latkit.lut.tables import TableLatencyModel
from latkit.search.target import project_to_target
from latkit.search.supernet.proxyless_grad import ProxylessConfig, ProxylessGradSearch, latency_loss
from latkit.search.run import SearchConfig, run_search
from latkit.search.supernet.supernet import Supernet

pytestmark = pytest.mark.slow

# one thread: the test machine's cores are shared, and oversubscribed threads spin
torch.set_num_threads(1)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    space = ProxylessMobileSpace(width_mult=0.25)
    lut = make_lut(tmp_path_factory.mktemp("lut") / "p.db", space, 32)
    model = TableLatencyModel.from_lut(space, lut, resolution=32)
    full = load_digits(32, seed=0)
    data = SearchData(full.x_train[:96], full.y_train[:96], full.x_valid[:64], full.y_valid[:64],
                      full.n_classes, full.provenance)  # fmt: skip
    return space, model, data


def _search(setup, target_frac=0.4, **cfg):
    space, model, data = setup
    lo, hi = model.min_latency_ms(), model.max_latency()[0]
    config = ProxylessConfig(batch_size=32, warmup_epochs=0, adapt_every=1, **cfg)
    net = Supernet(space, data.n_classes, 32, seed=0)
    return ProxylessGradSearch(net, model, data, lo + target_frac * (hi - lo), config, seed=0)


def test_loss_forms():
    ce, e = torch.tensor(2.0), torch.tensor(0.5, dtype=torch.float64)
    mul = latency_loss(ce, e, 0.4, ProxylessConfig(loss_form="mul", alpha=0.2), 0.3)
    assert float(mul) == pytest.approx(2.0 * 0.2 * (math.log(500) / math.log(400)) ** 0.3)
    add = latency_loss(ce, e, 0.4, ProxylessConfig(loss_form="add"), 1.5)
    assert float(add) == pytest.approx(2.0 + 1.5 * 0.5)
    # MnasNet reward used by the RL search: hard form only penalises above T
    assert reward(80.0, 0.5, 0.4, -0.07) == pytest.approx(80.0 * 1.25**-0.07)
    assert reward(80.0, 0.3, 0.4, -0.07) == 80.0


def test_arch_step_moves_only_sampled_pairs_by_ce_and_all_by_latency(setup):
    s = _search(setup, hard_target=False, lam=0.0)  # latency term off: only the two-path update
    x, y = s.data.x_valid[:32], s.data.y_valid[:32]
    before = [a.detach().clone() for a in s.alphas]
    probs_before = [torch.softmax(b, 0) for b in before]
    s.arch_step(x, y)
    for c, (b, a) in enumerate(zip(before, s.alphas)):
        changed = (a.detach() - b).abs() > 1e-12
        assert int(changed.sum()) in (0, 2)  # only the two sampled options of each choice move
        p_after = torch.softmax(a.detach(), 0)
        unchanged = ~changed
        # ProxylessNAS rescaling: unsampled options keep their probabilities
        assert torch.allclose(p_after[unchanged], probs_before[c][unchanged], atol=1e-9)


def test_latency_term_pushes_expected_latency_down(setup):
    s = _search(setup, hard_target=False, loss_form="add", lam=50.0, arch_lr=0.2)
    x, y = s.data.x_valid[:32], s.data.y_valid[:32]
    e0 = float(s.lat.expected_latency(s.probs()).detach())
    for _ in range(5):
        s.arch_step(x, y)
    assert float(s.lat.expected_latency(s.probs()).detach()) < e0


def test_projection_meets_target(setup):
    space, model, _ = setup
    lo, hi = model.min_latency_ms(), model.max_latency()[0]
    logp = [np.log(np.random.default_rng(c).dirichlet(np.ones(n))) for c, n in enumerate(model.n_options)]
    slow = Arch(space.name, tuple(int(np.argmax(v)) for v in logp))
    for frac in (0.05, 0.3, 0.7):
        target = lo + frac * (hi - lo)
        arch = project_to_target(slow, logp, model, target, model.min_latency()[1])
        assert model.latency_ms(arch) <= target
        if frac > 0.1:  # spending the budget: slowed into [0.9 T, T]
            filled = project_to_target(arch, logp, model, target, None, lower_ms=0.9 * target)
            assert 0.9 * target <= model.latency_ms(filled) <= target
    # an architecture already within the target and at the argmax is returned unchanged
    assert project_to_target(slow, logp, model, hi + 1.0) == slow


def test_unreachable_target_raises_with_min(setup):
    with pytest.raises(SearchError, match="smallest latency reachable is"):
        _search(setup, target_frac=-0.1)


def test_resume_round_trip(setup, tmp_path):
    straight = _search(setup, max_steps_per_epoch=2)
    straight.run_epoch()
    straight.run_epoch()
    first = _search(setup, max_steps_per_epoch=2)
    first.run_epoch()
    tensors, state = first.state()
    save_checkpoint(tmp_path, tensors, json.loads(json.dumps(state)))
    assert has_checkpoint(tmp_path)
    resumed = _search(setup, max_steps_per_epoch=2)
    resumed.load_state(*load_checkpoint(tmp_path))
    assert resumed.epoch == 1
    resumed.run_epoch()
    for a, b in zip(straight.alphas, resumed.alphas):
        assert torch.equal(a.detach(), b.detach())
    sd_a, sd_b = straight.net.state_dict(), resumed.net.state_dict()
    assert all(torch.equal(sd_a[k], sd_b[k]) for k in sd_a)
    assert straight.latency_weight == resumed.latency_weight


def test_run_search_writes_artifacts_and_meets_target(setup, tmp_path):
    space, model, data = setup
    lo, hi = model.min_latency_ms(), model.max_latency()[0]
    target = lo + 0.35 * (hi - lo)
    seen = []
    cfg = ProxylessConfig(batch_size=32, max_steps_per_epoch=2, warmup_epochs=1)
    out = run_search(space, model, SearchConfig(target, epochs=2, seed=0, proxyless=cfg, eval_samples=1), data,
                     tmp_path, on_progress=seen.append)  # fmt: skip
    assert out.latency_ms <= target and [p.epoch for p in seen] == [1, 2]
    doc = json.loads((tmp_path / "arch.json").read_text())
    assert doc["schema"] == "latkit.arch" and doc["space"] == space.name
    assert space.parse_arch(json.dumps(doc)) == out.arch
    assert doc["latency_ms"] == pytest.approx(model.latency_ms(out.arch)) and doc["latency_ms"] <= target
    assert doc["latency_model"]["kind"] == "lut" and 0 <= doc["accuracy"]["top1_pct"] <= 100
    # the searched network is grown towards the target as `latkit run` does: to 98% of it, or until no
    # single choice changed to another option stays within it
    fill = doc["search"]["fill"]
    searched = space.parse_arch(json.dumps({**doc, "arch": fill["searched_arch"]}))
    assert fill["searched_latency_ms"] == pytest.approx(model.latency_ms(searched))
    assert fill["searched_latency_ms"] <= out.latency_ms
    assert fill["changed_choices"] == sum(a != b for a, b in zip(searched.indices, out.arch.indices))
    neighbours = [Arch(space.name, out.arch.indices[:c] + (o,) + out.arch.indices[c + 1:])
                  for c, choice in enumerate(space.choices()) for o in range(len(choice.options))]
    assert out.latency_ms >= 0.98 * target or all(model.latency_ms(a) > target or model.latency_ms(a) <= out.latency_ms
                                                  for a in neighbours)
    rows = json.loads((tmp_path / "trajectory.json").read_text())["rows"]
    assert [r["kind"] for r in rows] == ["derived", "sampled"] * 2
    assert (tmp_path / "trajectory.csv").read_text().count("\n") == 5
    assert (tmp_path / "expected_latency.png").stat().st_size > 1000
    assert (tmp_path / "accuracy_latency.png").stat().st_size > 1000
    # resume with more epochs continues from epoch 2
    seen.clear()
    run_search(space, model, SearchConfig(target, epochs=3, seed=0, proxyless=cfg, eval_samples=1, resume=True,
                                          plots=False), data, tmp_path, on_progress=seen.append)  # fmt: skip
    assert [p.epoch for p in seen] == [3]
    assert load_checkpoint(tmp_path)[1]["epoch"] == 3


@pytest.mark.parametrize("algorithm", ["reinforce", "ppo"])
def test_query_search_on_supernet(setup, tmp_path, algorithm):
    space, model, data = setup
    lo, hi = model.min_latency_ms(), model.max_latency()[0]
    target = lo + 0.5 * (hi - lo)
    out = run_search(space, model, SearchConfig(target, algorithm, epochs=1, seed=0, queries=4, plots=False), data,
                     tmp_path)  # fmt: skip
    rows = json.loads((tmp_path / "trajectory.json").read_text())["rows"]
    assert len(rows) == 4 and all(r["kind"] == "query" for r in rows)
    assert out.latency_ms <= target
    assert out.accuracy == pytest.approx(max(r["accuracy"] for r in rows if r["feasible"]))


def test_registered_in_framework(setup):
    from latkit.search.framework.base import run_algorithm
    from latkit.search.supernet.train import SupernetAccuracy

    s = _search(setup, max_steps_per_epoch=2)
    result = run_algorithm("proxyless-grad", s.space, SupernetAccuracy(s.net, s.data, bn_batches=1),
                              s.lat, s.target_ms, 5, np.random.default_rng(0), search=s, epochs=1)  # fmt: skip
    assert result.queries_used in (1, 2) and result.best_latency_ms <= s.target_ms
    assert result.extra["final_arch"] == s.space.arch_to_native(s.final_arch())


def test_search_on_gcn_smoothed_supernet_accuracy(setup, tmp_path):
    from latkit.search.supernet.accuracy_gcn import SmoothedAccuracy

    space, model, data = setup
    lo, hi = model.min_latency_ms(), model.max_latency()[0]
    cfg = SearchConfig(lo + 0.5 * (hi - lo), "random", epochs=1, seed=0, queries=4, plots=False, smooth_samples=12)
    out = run_search(space, model, cfg, data, tmp_path)
    rows = json.loads((tmp_path / "trajectory.json").read_text())["rows"]
    assert [r["kind"] for r in rows] == ["supernet-sample"] * 12 + ["query"] * 4
    smoothed = SmoothedAccuracy.load(tmp_path / "accuracy_gcn")
    assert smoothed.provenance["n_fit"] == 12 and smoothed.provenance["estimates"]["kind"] == "supernet"
    for r in rows[12:]:  # the search saw the GCN's answers, not the supernet's
        arch = space.arch_from_native(r["arch"])
        assert r["accuracy"] == pytest.approx(smoothed.accuracy(arch), abs=1e-4)
    assert out.latency_ms <= lo + 0.5 * (hi - lo)
    with pytest.raises(UsageError, match="query-based"):
        SearchConfig(hi, "proxyless-grad", epochs=1, smooth_samples=12)


def test_query_search_resumes_mid_way_without_measuring_again(setup, tmp_path, monkeypatch):
    from latkit.search.supernet.train import SupernetAccuracy

    space, model, data = setup
    lo, hi = model.min_latency_ms(), model.max_latency()[0]
    target = lo + 0.5 * (hi - lo)
    cfg = SearchConfig(target, "evolution", epochs=1, seed=3, queries=6, plots=False)
    first = run_search(space, model, cfg, data, tmp_path)
    rows = json.loads((tmp_path / "trajectory.json").read_text())["rows"]
    doc = json.loads((tmp_path / "queries.json").read_text())
    assert doc["supernet_epoch"] == 1 and len(doc["queries"]) == 6
    # stopped after 2 measurements: the resumed run measures only the 4 others
    doc["queries"] = doc["queries"][:2]
    (tmp_path / "queries.json").write_text(json.dumps(doc))
    measured = []
    real = SupernetAccuracy.accuracy
    monkeypatch.setattr(SupernetAccuracy, "accuracy", lambda self, a: measured.append(a) or real(self, a))
    again = run_search(space, model, replace(cfg, resume=True), data, tmp_path)
    assert len(measured) == 4 and again.arch == first.arch
    assert json.loads((tmp_path / "trajectory.json").read_text())["rows"] == rows
    # more supernet epochs: the recorded accuracies are stale and measured again
    measured.clear()
    run_search(space, model, replace(cfg, epochs=2, resume=True), data, tmp_path)
    assert len(measured) >= 6
