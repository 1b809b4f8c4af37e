"""Supernets: one path per mixed layer, binary gates, and the two-path gate gradient."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from latkit.profiler.spaces import get_space
from latkit.profiler.spaces.base import Arch
from latkit.profiler.spaces.proxyless import ProxylessMobileSpace
from latkit.search.supernet import GateSample, Supernet


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
                h = g[0] * layer.option_module(1)(h) + g[1] * layer.option_module(3)(h)
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
