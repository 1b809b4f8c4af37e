"""Build operators and networks as torch modules, from their specs.

Every :class:`~latkit.profiler.ops.OpType` maps to one small module whose output
shape is the spec's ``output_shape`` (the module works in NCHW, specs say
``(H, W, C)``). Batch norm stays a real layer here; runtimes that fold it into
the convolution do so on export. Weights are drawn from a seeded generator, so
building the same spec twice gives the same outputs, and building never
touches torch's global random state.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import torch
from torch import nn

from latkit.core.errors import UsageError
from latkit.profiler.ops import Act, OpSpec, OpType
from latkit.profiler.spaces._util import make_divisible

if TYPE_CHECKING:  # only for annotations: building needs no search space
    from latkit.profiler.spaces.base import Network

DEFAULT_SEED = 0


def activation(act: Act | str) -> nn.Module:
    """The module for an activation (``nn.Identity`` for ``none``)."""
    act = Act(act)
    if act is Act.RELU:
        return nn.ReLU(inplace=False)
    if act is Act.RELU6:
        return nn.ReLU6(inplace=False)
    if act is Act.H_SWISH:
        return nn.Hardswish()  # x * relu6(x + 3) / 6
    return nn.Identity()


def _conv_bn_act(cin: int, cout: int, kernel: int, stride: int, groups: int, act: Act) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, padding=kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        activation(act),
    )


class ChannelShuffle(nn.Module):
    """Interleave the channels of ``groups`` groups (ShuffleNet / FBNet ``_g2``)."""

    def __init__(self, groups: int) -> None:
        super().__init__()
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        n, c, h, w = x.shape
        x = x.reshape(n, self.groups, c // self.groups, h, w).transpose(1, 2)
        return x.reshape(n, c, h, w)


class SqueezeExcite(nn.Module):
    """OFA's squeeze-excite: pool, 1x1 reduce, ReLU, 1x1 expand, h-sigmoid, scale."""

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        mid = make_divisible(channels // reduction, 8)
        self.reduce = nn.Conv2d(channels, mid, 1, bias=True)
        self.relu = nn.ReLU(inplace=False)
        self.expand = nn.Conv2d(mid, channels, 1, bias=True)
        self.gate = nn.Hardsigmoid()  # relu6(x + 3) / 6

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        y = x.mean(dim=(2, 3), keepdim=True)
        return x * self.gate(self.expand(self.relu(self.reduce(y))))


class MBConv(nn.Module):
    """Inverted residual block: [expand 1x1] -> depthwise kxk -> [SE] -> project 1x1."""

    def __init__(self, spec: OpSpec) -> None:
        super().__init__()
        cin, cout, mid, g = spec.input_shape[2], spec.output_shape[2], spec.mid_channels, spec.groups
        if g > 1 and (cin % g or mid % g or cout % g):
            raise UsageError(f"{spec.key}: channels {cin}/{mid}/{cout} not divisible by groups {g}")
        # MobileNetV2 / ProxylessNAS first blocks have no expansion conv; FBNet's keep
        # it (the spec says which, see OpSpec.expand_conv)
        has_expand = spec.expand_conv
        if not has_expand and mid != cin:
            raise UsageError(f"{spec.key}: no expansion conv but mid {mid} != input {cin}")
        self.expand = _conv_bn_act(cin, mid, 1, 1, g, spec.act) if has_expand else None
        self.shuffle = ChannelShuffle(g) if g > 1 else None
        self.depthwise = _conv_bn_act(mid, mid, spec.kernel, spec.stride, mid, spec.act)
        self.se = SqueezeExcite(mid) if spec.se else None
        self.project = _conv_bn_act(mid, cout, 1, 1, g, Act.NONE)
        self.residual = spec.idskip

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        y = x
        if self.expand is not None:
            y = self.expand(y)
        if self.shuffle is not None:
            y = self.shuffle(y)
        y = self.depthwise(y)
        if self.se is not None:
            y = self.se(y)
        y = self.project(y)
        return x + y if self.residual else y


class GlobalPool(nn.Module):
    """Global average pooling that keeps the 1x1 spatial dims (NCHW -> N,C,1,1)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return x.mean(dim=(2, 3), keepdim=True)


class Logits(nn.Module):
    """Classifier: global pooling when the input is larger than 1x1, flatten, linear."""

    def __init__(self, channels: int, classes: int, pool: bool) -> None:
        super().__init__()
        self.pool = pool
        self.linear = nn.Linear(channels, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        if self.pool:
            x = x.mean(dim=(2, 3))
        return self.linear(torch.flatten(x, 1))


def _conv_out(size: int, kernel: int, stride: int) -> int:
    return (size + 2 * (kernel // 2) - kernel) // stride + 1


def expected_output_shape(spec: OpSpec) -> tuple[int, int, int]:
    """The ``(H, W, C)`` the built module produces for ``spec``."""
    h, w, c = spec.input_shape
    cout = spec.output_shape[2]
    t = spec.op_type
    if t in (OpType.STEM, OpType.MBCONV):
        return (_conv_out(h, spec.kernel, spec.stride), _conv_out(w, spec.kernel, spec.stride), cout)
    if t is OpType.HEAD_CONV:  # 1x1, strided where FBNet's shape-changing skips are
        return (_conv_out(h, 1, spec.stride), _conv_out(w, 1, spec.stride), cout)
    if t is OpType.POOL:
        return (1, 1, c)
    if t in (OpType.POOLED_CONV, OpType.LOGITS):
        return (1, 1, cout)
    return (h, w, c)  # SKIP, ZERO


def _module_for(spec: OpSpec) -> nn.Module:
    t = spec.op_type
    cin, cout = spec.input_shape[2], spec.output_shape[2]
    if t is OpType.STEM:
        return _conv_bn_act(cin, cout, spec.kernel, spec.stride, 1, spec.act)
    if t is OpType.MBCONV:
        return MBConv(spec)
    if t is OpType.HEAD_CONV:
        return _conv_bn_act(cin, cout, 1, spec.stride, 1, spec.act)
    if t is OpType.POOL:
        return GlobalPool()
    if t is OpType.POOLED_CONV:
        # OFA's feature-mix layer: a bias-free 1x1 conv and its activation, no BN
        return nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), activation(spec.act))
    if t is OpType.LOGITS:
        return Logits(cin, cout, pool=spec.input_shape[0] * spec.input_shape[1] > 1)
    return nn.Identity()  # SKIP and ZERO pass their input through


def _randomise_bn(module: nn.Module, gen: torch.Generator) -> None:
    # Fresh BN layers are identities; random statistics make exported graphs
    # (where runtimes fold BN into the conv) check the folding too.
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            with torch.no_grad():
                m.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(n, generator=gen) * 0.1)
                m.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)


def _seeded(build: Callable[[], nn.Module], seed: int) -> nn.Module:
    # fork_rng keeps the caller's global random state untouched
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = build()
    _randomise_bn(module, torch.Generator().manual_seed(seed + 1))
    return module.eval()


def _check_spec(spec: OpSpec) -> None:
    want = expected_output_shape(spec)
    if tuple(spec.output_shape) != want:
        raise UsageError(
            f"op {spec.key}: output shape {spec.output_shape} does not follow from its input "
            f"(a {spec.op_type.value} gives {want}); fix the spec"
        )


def build_op(spec: OpSpec, seed: int = DEFAULT_SEED) -> nn.Module:
    """The torch module of one operator, in eval mode, with seeded weights.

    Args:
        spec: The operator.
        seed: Seed of the weights; the same seed gives the same module.

    Raises:
        UsageError: the spec's output shape does not follow from its input, or
            its channels do not divide into its groups.
    """
    _check_spec(spec)
    return _seeded(lambda: _module_for(spec), seed)


def _check_chain(network: Network) -> None:
    specs = network.specs
    if not specs:
        raise UsageError(f"network {network.name!r} has no layers")
    if tuple(specs[0].input_shape) != tuple(network.input_shape):
        raise UsageError(
            f"network {network.name!r}: first op takes {specs[0].input_shape}, "
            f"the network input is {network.input_shape}"
        )
    for layer, prev in zip(network.layers[1:], network.layers):
        if tuple(layer.spec.input_shape) != tuple(prev.spec.output_shape):
            raise UsageError(
                f"network {network.name!r}: layer {layer.name} takes {layer.spec.input_shape} "
                f"but {prev.name} gives {prev.spec.output_shape}"
            )


def build_network(network: Network, seed: int = DEFAULT_SEED) -> nn.Module:
    """The whole network as one ``nn.Sequential`` (NCHW in, ``(N, classes)`` out).

    Layers are named after the network's layers (dots replaced), in eval mode.

    Raises:
        UsageError: consecutive layers' shapes do not chain, or a spec is invalid.
    """
    _check_chain(network)
    for spec in network.specs:
        _check_spec(spec)

    def build() -> nn.Sequential:
        seq = nn.Sequential()
        for i, layer in enumerate(network.layers):
            name = f"{i}_{layer.name}".replace(".", "_")
            seq.add_module(name, _module_for(layer.spec))
        return seq

    return _seeded(build, seed)


def count_params(module: nn.Module, *, include_buffers: bool = False) -> int:
    """Number of learnable parameters (plus buffers, e.g. BN statistics, if asked)."""
    n = sum(p.numel() for p in module.parameters())
    if include_buffers:
        n += sum(b.numel() for b in module.buffers() if b.dtype.is_floating_point)
    return n


def input_tensor(shape_hwc: Iterable[int], seed: int = DEFAULT_SEED) -> torch.Tensor:
    """A seeded random NCHW input (batch 1) for an ``(H, W, C)`` shape."""
    h, w, c = (int(v) for v in shape_hwc)
    return torch.randn(1, c, h, w, generator=torch.Generator().manual_seed(seed))


def flops(spec: OpSpec) -> int:
    """Multiply-accumulates of ``spec``'s convolutions and linear layers (a rough size)."""
    h, w, cin = spec.input_shape
    oh, ow, cout = expected_output_shape(spec)
    t = spec.op_type
    if t is OpType.STEM:
        return oh * ow * cout * cin * spec.kernel**2
    if t is OpType.HEAD_CONV:
        return oh * ow * cin * cout
    if t in (OpType.POOLED_CONV, OpType.LOGITS):
        return cin * cout
    if t is not OpType.MBCONV:
        return 0
    mid, g = spec.mid_channels, spec.groups
    expand = h * w * cin * mid // g if spec.expand_conv else 0
    se = 2 * mid * make_divisible(mid // 4, 8) if spec.se else 0
    return expand + oh * ow * mid * spec.kernel**2 + se + oh * ow * mid * cout // g


__all__ = [
    "ChannelShuffle",
    "MBConv",
    "SqueezeExcite",
    "activation",
    "build_network",
    "build_op",
    "count_params",
    "expected_output_shape",
    "flops",
    "input_tensor",
    "make_divisible",
]
