"""Supernets: one path per mixed layer, binary gates, and the two-path gate gradient."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from latkit.profiler.spaces import get_space
from latkit.profiler.spaces.base import Arch
from latkit.profiler.spaces.proxyless import ProxylessMobileSpace
from latkit.search.supernet.supernet import GateSample, Supernet

pytestmark = pytest.mark.slow


# one thread: the test machine's cores are shared, and oversubscribed threads spin
torch.set_num_threads(1)

@pytest.fixture(scope="module")
def net():
    return Supernet(ProxylessMobileSpace(width_mult=0.25), n_classes=10, resolution=32, seed=0)


def _count_calls(net: Supernet) -> tuple[dict[int, list[int]], list]:
    calls: dict[int, list[int]] = {i: [] for i in range(len(net.layers))}
    handles = []
    for i, layer in enumerate(net.layers):
        for j, module in enumerate(layer.candidates.values()):
            handles.append(module.register_forward_hook(lambda m, a, o, i=i, j=j: calls[i].append(j)))
    return calls, handles


def test_forward_runs_exactly_one_path_per_layer(net):
    space = net.space
    x = torch.randn(4, 3, 32, 32)
    calls, handles = _count_calls(net)
    try:
        arch = space.sample(np.random.default_rng(0))
        out = net(x, arch)
    finally:
        for h in handles:
            h.remove()
    assert out.shape == (4, 10)
    assert all(len(v) == 1 for v in calls.values())
    # the path taken is the one the arch names: identity exactly where the arch has "zero"
    native = space.arch_to_native(arch)
    for c, op in enumerate(native):
        layer = net.layers[2 + c]
        picked = list(layer.candidates)[calls[2 + c][0]]
        assert (picked == "identity") == (op == "zero")


def test_extracted_network_matches_supernet_path(net):
    arch = net.space.sample(np.random.default_rng(1))
    x = torch.randn(3, 3, 32, 32)
    net.eval()
    try:
        standalone = net.extract(arch).eval()
        assert torch.allclose(standalone(x), net(x, arch), atol=1e-6)
    finally:
        net.train()


def test_gated_forward_one_active_path_and_two_path_gradient(net):
    """dL/dg of the inactive path equals autograd's gradient of a gate-0 second path."""
    space = net.space
    owners = {c: s.index for c, s in net.layout.single_choice_slots().items()}
    base = Arch(space.name, tuple([1] * 21))
    samples = {c: GateSample(active=1, other=3) for c in range(21)}
    x, y = torch.randn(6, 3, 32, 32), torch.randint(0, 10, (6,))
    net.eval()  # fixed BN statistics, so the two computations see identical functions
    calls, handles = _count_calls(net)
    try:
        loss = torch.nn.functional.cross_entropy(net.forward_gated(x, base, owners, samples), y)
        # forward: the active path of every layer, plus the second sampled path of
        # every gated layer (run without autograd: only its output is kept)
        assert all(len(calls[i]) == (2 if i in owners.values() else 1) for i in calls)
        assert sum(len(v) for v in calls.values()) == len(calls) + 21
        loss.backward()
        assert all(len(calls[i]) == (2 if i in owners.values() else 1) for i in calls)  # nothing reran
        # reference for one layer: out = g1 * op1(x) + g3 * op3(x), g = (1, 0), plain autograd
        c = 5
        layer_idx = owners[c]
        g = torch.tensor([1.0, 0.0], requires_grad=True)
        h = x
        for i, layer in enumerate(net.layers):
            if i == layer_idx:
                h = g[0] * layer.run_option(1, h) + g[1] * layer.run_option(3, h)
            else:
                h = layer(h, base.indices)
        torch.nn.functional.cross_entropy(h, y).backward()
        assert samples[c].other_grad == pytest.approx(float(g.grad[1]), rel=1e-4, abs=1e-7)
        assert samples[c].active_grad == pytest.approx(float(g.grad[0]), rel=1e-4, abs=1e-7)
    finally:
        for hd in handles:
            hd.remove()
        net.zero_grad(set_to_none=True)
        net.train()


def test_fbnet_supernet_forward():
    space = get_space("fbnet")
    net = Supernet(space, n_classes=5, seed=0)
    arch = space.sample(np.random.default_rng(0))
    assert net(torch.randn(2, 3, 32, 32), arch).shape == (2, 5)
    # one module per distinct op: a skip in a shape-changing slot is a real 1x1 conv
    assert len(net.layers) == 25 and len(net.layers[1].candidates) == 9


def _shared_layer(net: Supernet):
    """A mixed layer with shared candidates, its master and a smaller kernel's candidate."""
    layer = next(layer for layer in net.layers if len(layer.shares) >= 5)
    master = next(iter(layer.shares.values())).master
    big_k = layer.candidates[master].depthwise[0].kernel_size[0]
    small = next(m for m in layer.shares if layer.candidates[m].depthwise[0].kernel_size[0] < big_k)
    return layer, master, small


def test_candidates_run_on_slices_of_the_largest_candidate():
    net = Supernet(ProxylessMobileSpace(width_mult=0.25), n_classes=10, resolution=32, seed=0)
    layer, master, small = _shared_layer(net)
    # every weighted candidate of a proxyless MBConv layer fits inside the k7_e6 one
    weighted = [m for m, c in layer.candidates.items() if any(True for _ in c.parameters())]
    assert set(layer.shares) == set(weighted) - {master}
    big, sub = layer.candidates[master], layer.candidates[small]
    x = torch.randn(2, sub.depthwise[0].in_channels if sub.expand is None else sub.expand[0].in_channels, 8, 8)
    net.eval()
    try:
        out = layer.run(small, x)
        out.square().sum().backward()
        # the small candidate trains the master's leading channels and centred kernel window only
        g = big.depthwise[0].weight.grad
        k, k_big = sub.depthwise[0].kernel_size[0], big.depthwise[0].kernel_size[0]
        mid, off = sub.depthwise[0].weight.shape[0], (k_big - k) // 2
        window = torch.zeros_like(g, dtype=torch.bool)
        window[:mid, :, off:off + k, off:off + k] = True
        assert g[window].abs().sum() > 0 and g[~window].abs().sum() == 0
        stale = [p for n, p in sub.named_parameters() if n in layer.shares[small].slices]
        assert stale and all(p.grad is None and not p.requires_grad for p in stale)
        # the candidate's own copy is refreshed on sync, and then gives the same output
        with torch.no_grad():
            big.depthwise[0].weight.mul_(1.5)
        assert not torch.allclose(sub(x), layer.run(small, x))
        layer.sync()
        assert torch.allclose(sub(x), layer.run(small, x), atol=1e-6)
        assert torch.equal(sub.depthwise[0].weight, big.depthwise[0].weight[:mid, :, off:off + k, off:off + k])
    finally:
        net.zero_grad(set_to_none=True)
        net.train()


def test_saved_and_extracted_weights_follow_the_shared_tensors():
    net = Supernet(ProxylessMobileSpace(width_mult=0.25), n_classes=10, resolution=32, seed=0)
    layer, master, small = _shared_layer(net)
    i = list(net.layers).index(layer)
    with torch.no_grad():
        layer.candidates[master].project[0].weight.add_(1.0)
    saved = net.state_dict()[f"layers.{i}.candidates.{small}.project.0.weight"]
    big = layer.candidates[master].project[0].weight
    assert torch.equal(saved, big[: saved.shape[0], : saved.shape[1]])
    # the optimiser holds only the trained tensors
    from latkit.search.supernet.train import weight_optimizer

    opt = weight_optimizer(net.parameters())
    held = {id(p) for g in opt.param_groups for p in g["params"]}
    assert id(big) in held and id(layer.candidates[small].project[0].weight) not in held
    unshared = Supernet(ProxylessMobileSpace(width_mult=0.25), n_classes=10, resolution=32, seed=0, share_weights=False)
    assert all(not layer.shares for layer in unshared.layers) and all(p.requires_grad for p in unshared.parameters())
    assert sum(p.numel() for p in held_params(opt)) < sum(p.numel() for p in unshared.parameters()) / 2


def held_params(opt: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [p for g in opt.param_groups for p in g["params"]]


def test_uniform_single_path_training_learns_with_shared_weights():
    """The defect shared weights fix: with a private copy per candidate, loss stays at chance."""
    from latkit.search.supernet.data import load_digits
    from latkit.search.supernet.train import weight_optimizer

    space = ProxylessMobileSpace(width_mult=0.25)
    data = load_digits(32, seed=0)
    losses = {}
    for share in (True, False):
        net = Supernet(space, data.n_classes, resolution=32, seed=0, share_weights=share)
        opt = weight_optimizer(net.parameters())
        rng = np.random.default_rng(0)
        for epoch in range(EPOCHS):
            last = []
            for x, y in data.batches("train", 64, rng):
                opt.zero_grad(set_to_none=True)
                loss = torch.nn.functional.cross_entropy(net(x, space.sample(rng)), y)
                loss.backward()
                opt.step()
                last.append(float(loss.detach()))
        losses[share] = float(np.mean(last))
    assert losses[True] < 1.5 < 2.0 < losses[False]


EPOCHS = 6


def test_knowledge_pool_weights_start_a_similar_architecture_ahead():
    """FNAS's block-level weight sharing: inherited layers are the donor's, and train faster."""
    from latkit.search.supernet.data import load_digits
    from latkit.search.supernet.train import TrainedAccuracy, inherit_layers

    space = ProxylessMobileSpace(width_mult=0.25)
    data = load_digits(32, seed=0)
    a = space.sample(np.random.default_rng(0))
    changed = (3, 10)
    b = Arch(a.space, tuple((v + 1) % len(space.choices()[c].options) if c in changed else v
                            for c, v in enumerate(a.indices)))
    pooled = TrainedAccuracy(space, data, resolution=32, steps=60, inherit=True)
    pooled.accuracy(a)
    # the donor's tensors land exactly in the layers built alike, the changed blocks stay fresh
    donor = pooled.pool.donor(b)[0]
    module, ids = pooled.build(b)
    fresh = {k: v.clone() for k, v in module.state_dict().items()}
    n = inherit_layers(module, ids, donor.payload)
    names = list(ids)
    differ = {names[2 + c] for c in changed}  # layers 0-1 are the stem and first block
    weighted = {name for name in names if any(k.startswith(name + ".") for k in fresh)}
    assert n == len(weighted - differ)
    state = module.state_dict()
    for k, v in state.items():
        layer = k.split(".")[0]
        assert torch.equal(v, donor.payload["state"][k] if layer not in differ else fresh[k])
    pooled.steps = 15
    warm = pooled.accuracy(b)
    cold = TrainedAccuracy(space, data, resolution=32, steps=15, inherit=False).accuracy(b)
    assert pooled.history[-1]["inherited_layers"] == n
    assert warm > cold + 30  # measured: 72.7% vs 8.9% held-out
