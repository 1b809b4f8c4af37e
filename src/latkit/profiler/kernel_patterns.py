"""Grouping a graph into kernels: operator chains, their configurations, and multi-operator patterns.

:func:`group_kernels` walks the graph and fuses each operator with its single
consumer while the runtime's :class:`~latkit.profiler.kernels.FusionRules` say
the pair runs as one kernel.

:func:`kernel_of` turns a chain of operators that run as one kernel (a root
and what it fused) into a :class:`~latkit.profiler.kernels.Kernel` with its
configuration read off the root's shapes and attributes. :func:`find_patterns`
finds the groups no pairwise fusion rule describes: a squeeze-excite block
and a run of layout operators.
"""

from __future__ import annotations

import math
from dataclasses import replace

from latkit.profiler.op_graph import Node, OpGraph
from latkit.profiler.kernels import (
    _ELEMENTWISE,
    _GLOBAL_POOLS,
    _LAYOUT,
    _REMOVED,
    ACTIVATIONS,
    PREFIX_OPS,
    FusionRules,
    Kernel,
    KernelConfig,
    KernelGraph,
    KernelType,
    hwc,
)

_MAX_SE_CHAIN = 8  # pooling, up to two layers with activations and reshapes, the gate


def _act(chain: list[Node]) -> str:
    """The activation a kernel applies: an operator's own (a TFLite fused one) or a fused follower's."""
    for n in chain:
        if n.attrs.get("activation"):
            return str(n.attrs["activation"])
    for n in chain[1:]:
        if n.op_type in ACTIVATIONS:
            return n.op_type.lower()
    return ""


def _conv(graph: OpGraph, chain: list[Node]) -> KernelConfig | None:
    root = chain[0]
    x, w = graph.shape(root.inputs[0]), graph.shape(root.inputs[1]) if len(root.inputs) > 1 else None
    y = graph.shape(root.outputs[0])
    if not x or not w or not y or len(x) != 4:
        return None
    groups = int(root.attrs.get("group", 1))
    k = max(w[2:]) if len(w) >= 4 else 1
    strides = root.attrs.get("strides") or [1]
    dil = max(root.attrs.get("dilations") or [1])
    if groups > 1:
        kind = KernelType.DWCONV if groups >= x[1] else KernelType.GCONV
    else:
        kind = KernelType.POINTWISE if k == 1 else KernelType.CONV
    residual = int(any(n.op_type == "Add" for n in chain[1:]))
    return KernelConfig(kind, h=x[2], w=x[3], cin=x[1], cout=y[1], kernel=(k - 1) * dil + 1,
                        stride=int(max(strides)), groups=groups, extra=residual, act=_act(chain))  # fmt: skip


def _fc(graph: OpGraph, chain: list[Node]) -> KernelConfig | None:
    root = chain[0]
    a, b = (graph.shape(t) for t in root.inputs[:2])
    if not a or not b:
        return None
    if root.op_type == "Gemm" and len(b) == 2 and not root.attrs.get("transA"):
        # the reduced width from the weights: a TFLite fully connected layer flattens any input
        k, n = (b[1], b[0]) if root.attrs.get("transB") else (b[0], b[1])
        rows = max(1, math.prod(a) // max(k, 1))
        return KernelConfig(KernelType.FC, h=rows, cin=k, cout=n, act=_act(chain),
                            extra=int(any(x.op_type == "Add" for x in chain[1:])))  # fmt: skip
    if root.op_type == "Gemm" or root.inputs[1] in graph.constants:
        k = a[-1] if not (root.op_type == "Gemm" and root.attrs.get("transA")) else a[0]
        n = b[0] if root.op_type == "Gemm" and root.attrs.get("transB") else b[-1]
        rows = max(1, math.prod(a) // max(k, 1))
        return KernelConfig(KernelType.FC, h=rows, cin=k, cout=n, act=_act(chain),
                            extra=int(any(x.op_type == "Add" for x in chain[1:])))  # fmt: skip
    if len(a) < 2 or len(b) < 2:
        return None
    batch = max(1, math.prod(a[:-2]), math.prod(b[:-2]))
    rows, k = (a[-1], a[-2]) if root.attrs.get("adj_x") else (a[-2], a[-1])
    n = b[-2] if root.attrs.get("adj_y") else b[-1]
    return KernelConfig(KernelType.MATMUL, h=rows, w=batch, cin=k, cout=n, act=_act(chain))


def _pool(graph: OpGraph, root: Node) -> KernelConfig | None:
    x = graph.shape(root.inputs[0])
    if not x or len(x) != 4:
        return None
    if root.op_type in _GLOBAL_POOLS or root.op_type == "ReduceMean":
        return KernelConfig(KernelType.POOL, h=x[2], w=x[3], cin=x[1], cout=x[1], variant="global")
    k = max(root.attrs.get("kernel_shape") or [1])
    s = max(root.attrs.get("strides") or [1])
    return KernelConfig(KernelType.POOL, h=x[2], w=x[3], cin=x[1], cout=x[1], kernel=int(k), stride=int(s),
                        variant="max" if root.op_type == "MaxPool" else "avg")  # fmt: skip


def _rowwise(graph: OpGraph, root: Node, kind: KernelType) -> KernelConfig | None:
    x = graph.shape(root.inputs[0])
    if not x:
        return None
    width = x[-1]
    return KernelConfig(kind, h=max(1, math.prod(x) // max(width, 1)), cin=width, cout=width)


def _image_like(graph: OpGraph, chain: list[Node], kind: KernelType, variant: str) -> KernelConfig | None:
    root = chain[0]
    x, y = graph.shape(root.inputs[0]), graph.shape(chain[-1].outputs[0])
    if x is None or y is None:
        return None
    h, w, c = hwc(x)
    _, _, cout = hwc(y)
    extra = 0
    if kind is KernelType.CONCAT:
        extra, c = len([t for t in root.inputs if t]), cout
    elif kind is KernelType.ELEMENTWISE:
        others = [graph.shape(t) for t in root.inputs[1:] if t]
        extra = int(any(o is not None and math.prod(o) < math.prod(x) for o in others))
    elif kind is KernelType.RESIZE:
        scale = max(1, round(hwc(y)[0] / max(h, 1)))
        return KernelConfig(kind, h=h, w=w, cin=c, cout=cout, stride=scale, variant=variant)
    elif kind is KernelType.SHUFFLE:  # moves every element once, whatever shape its output is read as
        cout = c
    return KernelConfig(kind, h=h, w=w, cin=c, cout=max(cout, 1), extra=extra, variant=variant, act=_act(chain))


def _without_prefix(chain: list[Node]) -> list[Node]:
    """``chain`` with its leading prefix operators (a ``Pad``) folded into the operator they feed.

    The operator that follows reads the prefix's input instead (a padded
    convolution's configuration is that of the convolution on the unpadded
    image, whose output size it has).
    """
    k = 0
    while k < len(chain) - 1 and chain[k].op_type in PREFIX_OPS:
        k += 1
    if k == 0:
        return chain
    body = chain[k]
    return [replace(body, inputs=(chain[0].inputs[0], *body.inputs[1:])), *chain[k + 1:]]


_COPY = {"Slice": "slice", "Split": "split", "Expand": "expand", "Tile": "expand", "Gather": "slice"}
_REDUCE = {"ReduceSum": "sum", "ReduceMean": "mean", "ReduceMax": "max", "ReduceMin": "max", "ReduceL2": "sum"}
_MAX_BROADCAST = 4096


def _copy(graph: OpGraph, root: Node) -> KernelConfig | None:
    x, y = graph.shape(root.inputs[0]), graph.shape(root.outputs[0])
    if not x or not y:
        return None
    variant = _COPY[root.op_type]
    h, w, c = hwc(x)
    if variant == "expand":  # described by what it writes; extra: how many times it repeats its input
        h, w, c = hwc(y)
        factor = max(1, math.prod(y) // max(math.prod(x), 1))
        return KernelConfig(KernelType.COPY, h, w, c, c, extra=min(factor, _MAX_BROADCAST), variant=variant)
    outs = [t for t in root.outputs if t]
    if variant == "split":  # described by its mean part: it writes all of its input
        cout = max(1, c // max(len(outs), 1))
    else:
        cout = max(1, math.prod(y) // max(h * w, 1))
    return KernelConfig(KernelType.COPY, h, w, c, cout, extra=len(outs) if variant == "split" else 0,
                        variant=variant)  # fmt: skip


def _reduce(graph: OpGraph, root: Node) -> KernelConfig | None:
    x, y = graph.shape(root.inputs[0]), graph.shape(root.outputs[0])
    if not x or not y:
        return None
    rows = max(1, math.prod(y))
    axes = root.attrs.get("axes")  # None also when given as an input (opset 18): taken as the inner axis
    inner = int(axes is None or (len(x) - 1) in [int(a) % len(x) for a in axes])
    return KernelConfig(KernelType.REDUCE, h=rows, cin=max(1, math.prod(x) // rows), cout=1, extra=inner,
                        variant=_REDUCE[root.op_type])  # fmt: skip


def _norm(graph: OpGraph, root: Node) -> KernelConfig | None:
    x = graph.shape(root.inputs[0])
    if not x or len(x) < 3:
        return None
    groups = int(root.attrs.get("num_groups", x[1])) if root.op_type == "GroupNormalization" else x[1]
    rows = x[0] * max(groups, 1)
    width = max(1, math.prod(x) // rows)
    return KernelConfig(KernelType.NORM, h=rows, cin=width, cout=width,
                        variant="group" if root.op_type == "GroupNormalization" else "instance")  # fmt: skip


def _config(graph: OpGraph, chain: list[Node]) -> tuple[KernelType, KernelConfig | None]:
    chain = _without_prefix(chain)
    op = chain[0].op_type
    if op == "Conv":
        cfg = _conv(graph, chain)
    elif op in ("Gemm", "MatMul"):
        cfg = _fc(graph, chain)
    elif op in ("MaxPool", "AveragePool", *_GLOBAL_POOLS) or (op == "ReduceMean" and _spatial_mean(graph, chain[0])):
        cfg = _pool(graph, chain[0])
    elif op == "Softmax":
        cfg = _rowwise(graph, chain[0], KernelType.SOFTMAX)
    elif op == "LayerNormalization":
        cfg = _rowwise(graph, chain[0], KernelType.LAYERNORM)
    elif op in _ELEMENTWISE:
        cfg = _image_like(graph, chain, KernelType.ELEMENTWISE, _ELEMENTWISE[op])
    elif op == "Concat":
        cfg = _image_like(graph, chain, KernelType.CONCAT, "")
    elif op in ACTIVATIONS:
        cfg = _image_like(graph, chain, KernelType.ACTIVATION, op.lower())
    elif op in _LAYOUT:
        variant = "transpose" if any(n.op_type == "Transpose" for n in chain) else "reshape"
        cfg = _image_like(graph, chain, KernelType.SHUFFLE, variant)
    elif op in _COPY:
        cfg = _copy(graph, chain[0])
    elif op in _REDUCE:
        cfg = _reduce(graph, chain[0])
    elif op in ("InstanceNormalization", "GroupNormalization"):
        cfg = _norm(graph, chain[0])
    elif op in ("Resize", "Upsample"):
        mode = str(chain[0].attrs.get("mode", b"nearest"))
        cfg = _image_like(graph, chain, KernelType.RESIZE, "linear" if "linear" in mode else "nearest")
    else:
        return KernelType.UNKNOWN, None
    return (cfg.type, cfg) if cfg is not None else (KernelType.UNKNOWN, None)


def _spatial_mean(graph: OpGraph, node: Node) -> bool:
    x = graph.shape(node.inputs[0])
    axes = node.attrs.get("axes")
    if axes is None and len(node.inputs) > 1:
        return False  # axes as an input tensor (opset 18): not read here
    return bool(x) and len(x) == 4 and axes is not None and sorted(a % 4 for a in axes) == [2, 3]


def kernel_of(graph: OpGraph, chain: list[Node]) -> Kernel:
    """The kernel running ``chain`` (a root operator and what it fused)."""
    kind, cfg = _config(graph, chain)
    out = graph.shape(chain[-1].outputs[0]) if chain[-1].outputs else None
    elems = math.prod(out) if out else 0
    fallback = ""
    if kind is KernelType.UNKNOWN:
        fallback = "memory-bound estimate: an element-wise kernel of its output size" if out else \
            "no shape known: counted as 0 ms"
    return Kernel(kind, cfg, tuple(n.name for n in chain), tuple(n.op_type for n in chain), int(elems), fallback)


def find_patterns(graph: OpGraph, consumers: dict[str, list[int]], taken: set[str]) -> dict[int, Kernel]:
    """Squeeze-excite blocks and runs of layout operators as kernels, keyed by their first node's index.

    The nodes they take are added to ``taken``.
    """
    found: dict[int, Kernel] = {}
    producers = graph.producers()
    for i, node in enumerate(graph.nodes):
        if node.op_type == "Mul" and node.name not in taken:
            se = _se_block(graph, producers, consumers, node, taken)
            if se is not None:
                first, kernel = se
                found[first] = kernel
                taken.update(kernel.nodes)
    for i, node in enumerate(graph.nodes):
        if node.op_type in _LAYOUT and node.name not in taken:
            chain = [node]
            while len(chain[-1].outputs) == 1 and len(consumers.get(chain[-1].outputs[0], [])) == 1:
                nxt = graph.nodes[consumers[chain[-1].outputs[0]][0]]
                if nxt.op_type not in _LAYOUT or nxt.name in taken:
                    break
                chain.append(nxt)
            taken.update(n.name for n in chain)
            found[i] = kernel_of(graph, chain)
    return found


def _se_block(graph: OpGraph, producers: dict[str, int], consumers: dict[str, list[int]], mul: Node,
              taken: set[str]) -> tuple[int, Kernel] | None:
    """The squeeze-excite block ending at ``mul`` (x * gate(pool(x))), if it is one."""
    for x_name, s_name in ((mul.inputs[0], mul.inputs[1]), (mul.inputs[1], mul.inputs[0])):
        x, s = graph.shape(x_name), graph.shape(s_name)
        if not x or not s or len(x) != 4 or math.prod(s) != x[0] * x[1]:
            continue
        chain: list[Node] = []
        tensor = s_name
        for _ in range(_MAX_SE_CHAIN):
            idx = producers.get(tensor)
            if idx is None or graph.nodes[idx].name in taken or len(consumers.get(tensor, [])) != 1:
                break
            node = graph.nodes[idx]
            chain.insert(0, node)
            data = [t for t in node.inputs if t and t not in graph.constants]
            if node.op_type in _GLOBAL_POOLS or node.op_type == "ReduceMean":
                if data and data[0] == x_name and len(chain) >= 2:
                    return _se_kernel(graph, producers, chain + [mul], x, s_name)
                break
            if len(data) != 1:
                break
            tensor = data[0]
    return None


def _se_kernel(graph: OpGraph, producers: dict[str, int], nodes: list[Node], x: tuple[int, ...],
               gate: str) -> tuple[int, Kernel]:
    mids = [graph.shape(n.outputs[0]) for n in nodes[1:-2] if n.op_type in ("Conv", "Gemm", "MatMul")]
    mid = min((math.prod(m) // max(x[0], 1) for m in mids if m), default=max(x[1] // 4, 1))
    gate_op = graph.nodes[producers[gate]].op_type.lower()
    cfg = KernelConfig(KernelType.SE, h=x[2], w=x[3], cin=x[1], cout=max(mid, 1), variant=gate_op)
    first = min(producers.get(n.outputs[0], 0) for n in nodes)
    kernel = Kernel(KernelType.SE, cfg, tuple(n.name for n in nodes), tuple(n.op_type for n in nodes),
                    int(math.prod(x)))  # fmt: skip
    return first, kernel


def group_kernels(graph: OpGraph, rules: FusionRules) -> KernelGraph:
    """``graph`` grouped into the kernels a runtime with ``rules`` runs (see the module docstring)."""
    consumers = graph.consumers()
    folded = [n.name for n in graph.nodes if n.op_type in _REMOVED or all(o in graph.constants for o in n.outputs)
              or _noop_slice(graph, n)]
    taken = set(folded)
    kernels: dict[int, Kernel] = find_patterns(graph, consumers, taken)
    for i, node in enumerate(graph.nodes):
        if node.name in taken:
            continue
        chain, root = [node], node.op_type
        while True:
            nxt = _single_consumer(graph, consumers, chain[-1], taken)
            if nxt is None or not rules.fuses(root, nxt.op_type) or not _fusable(graph, chain, nxt):
                break
            chain.append(nxt)
            taken.add(nxt.name)
            if root in PREFIX_OPS:  # a pad folded into a convolution: the convolution's rules apply next
                root = nxt.op_type
        taken.add(node.name)
        kernels[i] = kernel_of(graph, chain)
    return KernelGraph(graph.name, tuple(kernels[i] for i in sorted(kernels)), tuple(folded), rules)


def _noop_slice(graph: OpGraph, node: Node) -> bool:
    """A ``Slice`` that keeps its whole input (runtimes drop it: ORT's EliminateSlice, TFLite's converter)."""
    if node.op_type != "Slice" or len(node.outputs) != 1:
        return False
    x, y = graph.shape(node.inputs[0]), graph.shape(node.outputs[0])
    return x is not None and x == y


def _single_consumer(graph: OpGraph, consumers: dict[str, list[int]], node: Node, taken: set[str]) -> Node | None:
    """The one operator reading ``node``'s only output, if it has exactly one and it is free."""
    if len(node.outputs) != 1:
        return None
    readers = consumers.get(node.outputs[0], [])
    if len(readers) != 1:
        return None
    nxt = graph.nodes[readers[0]]
    return None if nxt.name in taken else nxt


def _fusable(graph: OpGraph, chain: list[Node], nxt: Node) -> bool:
    """At most one activation and one residual add per kernel, the add after the convolution; only a zero pad
    is folded into what follows it (a reflect or edge pad runs as its own kernel)."""
    kinds = [n.op_type for n in chain]
    mode = chain[-1].attrs.get("mode", "constant")
    if chain[-1].op_type in PREFIX_OPS and (mode.decode() if isinstance(mode, bytes) else str(mode)) != "constant":
        return False
    if nxt.op_type in ACTIVATIONS and (any(k in ACTIVATIONS for k in kinds) or _act(chain)):
        return False
    if nxt.op_type == "Add":
        if "Add" in kinds or any(k in ACTIVATIONS for k in kinds):
            return False
        other = [t for t in nxt.inputs if t and t != chain[-1].outputs[0]]
        return len(other) == 1 and graph.shape(other[0]) == graph.shape(chain[-1].outputs[0]) or \
            (len(other) == 1 and other[0] in graph.constants)
    return True


__all__ = ["find_patterns", "group_kernels", "kernel_of"]
