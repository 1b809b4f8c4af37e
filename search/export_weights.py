"""Weights of a standalone network: class-count resizing and the safetensors mapping.

The tensors of a deployable network are the ``state_dict()`` of
``latkit.profiler.build.build_network(network)``; see :mod:`latkit.search.export`
for the naming. :func:`save_weights` writes them with metadata (schema
``latkit.weights``); :func:`standalone_module` builds the module and loads them,
resizing the classifier to the class count the weights were trained for.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from torch import nn

from latkit._files import atomic_path, one_line
from latkit._version import __version__
from latkit.errors import StoreError, UsageError
from latkit.profiler.build import build_network
from latkit.profiler.export import network_key
from latkit.profiler.ops import OpType
from latkit.profiler.spaces.base import Layer, Network

WEIGHTS_SCHEMA = "latkit.weights"
WEIGHTS_SCHEMA_VERSION = 1


def with_classes(network: Network, classes: int) -> Network:
    """``network`` with its classifier resized to ``classes`` outputs.

    Raises:
        UsageError: ``classes`` < 1 or the last layer is not a classifier.
    """
    if classes < 1:
        raise UsageError(f"classes must be >= 1, got {classes}")
    last = network.layers[-1]
    if last.spec.op_type is not OpType.LOGITS:
        raise UsageError(f"network {network.name!r} does not end in a classifier")
    if last.spec.output_shape[2] == classes:
        return network
    spec = dataclasses.replace(last.spec, output_shape=(1, 1, classes))
    meta = {**network.meta, "classes": classes}
    return dataclasses.replace(network, layers=network.layers[:-1] + (Layer(last.name, spec),), meta=meta)


def classes_of(network: Network) -> int:
    """The classifier's output count."""
    return int(network.layers[-1].spec.output_shape[2])


def _classifier_key(network: Network) -> str:
    i = len(network.layers) - 1
    return f"{i}_{network.layers[-1].name}".replace(".", "_") + ".linear.weight"


def save_weights(
    module: nn.Module, path: str | Path, network: Network, extra: dict[str, str] | None = None
) -> Path:
    """Write ``module``'s state dict (the standalone naming) as safetensors with metadata.

    Args:
        module: the module built by ``build_network(network)`` (trained).
        path: the ``.safetensors`` file to write (atomically).
        network: the network it was built from (its key goes into the metadata).
        extra: more string metadata (e.g. the dataset, epochs).
    """
    from safetensors.torch import save_file

    tensors = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
    meta = {
        "schema": WEIGHTS_SCHEMA, "schema_version": str(WEIGHTS_SCHEMA_VERSION),
        "latkit_version": __version__, "network_key": network_key(network),
        "classes": str(classes_of(network)), "naming": "build_network state_dict",
        **{k: str(v) for k, v in (extra or {}).items()},
    }  # fmt: skip
    out = Path(path)
    with atomic_path(out, "weights file") as tmp:  # a killed run never leaves half a weights file
        save_file(tensors, str(tmp), metadata=meta)
    return out


def read_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors and metadata of a safetensors file.

    Raises:
        StoreError: the file is missing or not a safetensors file.
    """
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
    except (OSError, SafetensorError) as exc:
        raise StoreError(f"cannot read weights {path}: {one_line(exc)}; give a .safetensors file") from exc


def standalone_module(network: Network, weights: str | Path | None = None) -> tuple[nn.Module, Network]:
    """The network as a plain eval-mode module, with ``weights`` loaded if given.

    Returns:
        The module and the network it implements (its classifier resized to
        the class count of the weights, if they differ from the space's).

    Raises:
        StoreError: the weights do not fit the architecture (lists what differs).
    """
    if weights is None:
        return build_network(network), network
    tensors, _ = read_weights(weights)
    head = tensors.get(_classifier_key(network))
    if head is not None and head.dim() == 2 and head.shape[0] != classes_of(network):
        network = with_classes(network, int(head.shape[0]))
    module = build_network(network)
    own = module.state_dict()
    missing = [k for k in own if k not in tensors and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in tensors if k not in own]
    wrong = [k for k in own if k in tensors and tuple(tensors[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        detail = "; ".join(
            f"{what}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
            for what, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
            if keys
        )
        raise StoreError(
            f"weights {weights} do not fit this architecture ({detail}); export with the "
            "weights trained for it (names follow build_network's state_dict)"
        )
    module.load_state_dict({k: v for k, v in tensors.items()}, strict=False)
    return module.eval(), network


__all__ = ["classes_of", "read_weights", "save_weights", "standalone_module", "with_classes"]
