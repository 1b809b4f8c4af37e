"""Peak memory of a ProxylessNAS search step vs training the final single network.

How it is measured, and why: the torch profiler with ``profile_memory=True``
records every allocation and free of torch's CPU allocator during one step; the
running sum of those events, in time order, gives the step's peak of *dynamic*
memory (activations kept for backward, gradients, temporaries). Python's
tracemalloc cannot see torch's allocator, and process RSS deltas are blurred by
the allocator's caching and by the other processes sharing this machine. To the
dynamic peak the *static* memory is added: parameters, buffers and optimiser
state, summed from the tensors themselves (the supernet keeps every
candidate's weights, which ProxylessNAS's memory claim does not cover).

The search alternates a weight step (a path sampled per mixed layer; its
gradients are freed when the step ends) and an architecture step (binary gates,
two sampled paths per layer, the second run without autograd so only its output
is kept, no weight gradients); each is profiled alone and the larger peak counts. The reference step = one SGD step of the same
sub-network as a standalone network (extracted copy), same batch and
resolution; a few random sub-networks are compared. Goal: search
dynamic peak <= 1.5x the reference.

    python benchmarks/search_memory.py [--width 0.5] [--resolution 64] [--batch 32]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from latkit.profiler.spaces.proxyless import ProxylessMobileSpace
from latkit.search.supernet.data import SearchData
from latkit.lut.tables import TableLatencyModel
from latkit.search.supernet.proxyless_grad import ProxylessConfig, ProxylessGradSearch
from latkit.search.supernet.supernet import Supernet
from latkit.search.supernet.train import weight_optimizer


def dynamic_peak_bytes(step: Callable[[], None]) -> int:
    """Peak of allocated-minus-freed bytes of torch's CPU allocator during ``step``."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    events = sorted(
        (e for e in prof.events() if e.cpu_memory_usage != 0), key=lambda e: e.time_range.start
    )
    cur = peak = 0
    for e in events:
        cur += e.cpu_memory_usage
        peak = max(peak, cur)
    return peak


def tensor_bytes(tensors) -> int:  # noqa: ANN001
    return sum(t.numel() * t.element_size() for t in tensors)


def static_bytes(module: torch.nn.Module, opt: torch.optim.Optimizer) -> int:
    """Parameters, buffers and optimiser state."""
    state = [v for s in opt.state.values() for v in s.values() if isinstance(v, torch.Tensor)]
    return tensor_bytes(module.parameters()) + tensor_bytes(module.buffers()) + tensor_bytes(state)


class _FlatLatency:
    """A stand-in latency model (every op 1 ms): memory does not depend on latencies."""

    def __new__(cls, space, resolution):  # noqa: ANN001, D102
        from latkit.lut.tables import Term
        from latkit.lut.tables import build_layout

        layout = build_layout(space, resolution)
        terms = [Term(s.deps, np.ones([layout.n_options[c] for c in s.deps])) for s in layout.slots if s.deps]
        return TableLatencyModel(space, 1.0, terms, {"kind": "flat"}, layout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=float, default=0.5)
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--archs", type=int, default=3, help="sub-networks compared")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    space = ProxylessMobileSpace(width_mult=args.width)
    r, b = args.resolution, args.batch
    x, y = torch.randn(b, 3, r, r), torch.randint(0, 10, (b,))
    data = SearchData(x, y, x.clone(), y.clone(), 10)
    model = _FlatLatency(space, r)
    net = Supernet(space, 10, r, seed=0, layout=model.layout)
    search = ProxylessGradSearch(net, model, data, target_ms=1e6, config=ProxylessConfig(batch_size=b))

    search.weight_step(x, y)  # optimiser state and allocator warm-up
    search.arch_step(x, y)
    stat_search = static_bytes(net, search.weight_opt)
    rng = np.random.default_rng(0)
    rows = []
    for _ in range(args.archs):  # the same sub-network in all three steps
        arch = space.sample(rng)
        dyn_weight = dynamic_peak_bytes(lambda: search.weight_step(x, y, arch))
        # weight gradients still held when the architecture step starts (it frees them first)
        held = tensor_bytes(p.grad for p in net.parameters() if p.grad is not None)
        dyn_arch = held + dynamic_peak_bytes(lambda: search.arch_step(x, y, arch))
        single = net.extract(arch).train()
        opt = weight_optimizer(single.parameters())

        def single_step() -> None:
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(single(x), y).backward()
            opt.step()

        single_step()
        dyn_single = dynamic_peak_bytes(single_step)
        rows.append((dyn_weight, dyn_arch, dyn_single, static_bytes(single, opt)))
    mib = 2**20
    print(f"proxyless_mobile width {args.width}, {r}x{r}, batch {b}, {args.archs} random sub-networks; "
          "dynamic peaks (activations, grads, temporaries) in MiB:")
    ratios = []
    for w, a, one, _ in rows:
        ratios.append(max(w, a) / one)
        print(f"  weight step {w / mib:7.1f}  arch step {a / mib:7.1f}  single network {one / mib:7.1f}"
              f"  ratio {ratios[-1]:.2f}x")
    print(f"search / single dynamic peak: mean {np.mean(ratios):.2f}x, max {max(ratios):.2f}x (goal <= 1.5x)")
    stat_single = np.mean([row[3] for row in rows])
    print(f"static (params, buffers, optimiser state): supernet {stat_search / mib:.1f} MiB, "
          f"single network {stat_single / mib:.1f} MiB (mean)")
    tot = [(max(w, a) + stat_search) / (one + st) for w, a, one, st in rows]
    print(f"total (dynamic + static) ratio: mean {np.mean(tot):.2f}x, max {max(tot):.2f}x")


if __name__ == "__main__":
    main()
