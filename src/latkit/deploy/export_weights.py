"""Weights of a standalone network: the safetensors mapping (the classifier resized to fit).

The tensors of a deployable network are the ``state_dict()`` of
``latkit.profiler.build.build_network(network)``; see :mod:`latkit.deploy.export`
for the naming. :func:`save_weights` writes them with metadata (schema
``latkit.weights``); :func:`standalone_module` builds the module and loads them,
resizing the classifier to the class count the weights were trained for. A
search checkpoint is read too: :func:`supernet_path_state` takes the supernet
weights of the architecture's path and renames them to the standalone naming.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn

from latkit.core.files import atomic_path, check_input_file, one_line
from latkit._version import __version__
from latkit.core.errors import StoreError
from latkit.profiler.build import build_network
from latkit.profiler.export import network_key
from latkit.profiler.ops import OpType
from latkit.profiler.spaces.base import Network, classes_of, with_classes

WEIGHTS_SCHEMA = "latkit.weights"
WEIGHTS_SCHEMA_VERSION = 1
TRAINED_FILE = "weights.safetensors"  # what latkit train writes
CHECKPOINT_FILE = "checkpoint.safetensors"  # what latkit search writes (latkit.search.supernet.checkpoint.TENSORS_FILE)
SUPERNET_PREFIX = "net.layers."


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

    check_input_file(path, "weights file")
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
    except (OSError, SafetensorError) as exc:
        raise StoreError(f"cannot read weights {path}: {one_line(exc)}; give a .safetensors file") from exc


def weights_file(weights: str | Path) -> Path:
    """The safetensors file ``weights`` names: the file itself, or the one in a run folder.

    A folder written by ``latkit train`` holds ``weights.safetensors``; one
    written by ``latkit search`` holds the search checkpoint.

    Raises:
        StoreError: a folder with neither file in it.
    """
    path = Path(weights).expanduser()
    if not path.is_dir():
        return check_input_file(path, "weights file")  # a FIFO or device would block or never end
    for name in (TRAINED_FILE, CHECKPOINT_FILE):
        if (path / name).is_file():
            return path / name
    raise StoreError(f"{path} holds neither {TRAINED_FILE} (from latkit train) nor {CHECKPOINT_FILE} "
                     "(from latkit search); give one of those files")


def is_search_checkpoint(keys: Iterable[str]) -> bool:
    """Whether tensors named ``keys`` are a search checkpoint's (supernet weights, architecture parameters)."""
    return any(k.startswith(SUPERNET_PREFIX) or k.startswith("alpha.") for k in keys)


def weights_source(weights: str | Path) -> str:
    """``search-checkpoint`` or ``file`` (standalone weights), from the tensor names only.

    Raises:
        StoreError: not a safetensors file.
    """
    from safetensors import SafetensorError, safe_open

    path = weights_file(weights)
    try:
        with safe_open(str(path), framework="pt") as f:
            return "search-checkpoint" if is_search_checkpoint(f.keys()) else "file"
    except (OSError, SafetensorError) as exc:
        raise StoreError(f"cannot read weights {path}: {one_line(exc)}; give a .safetensors file") from exc


def supernet_path_state(tensors: dict[str, torch.Tensor], network: Network) -> dict[str, torch.Tensor]:
    """The supernet weights of the path ``network`` takes, in the standalone naming.

    Supernet tensors are ``net.layers.{i}.candidates.{module_id}.{rest}`` (module
    ids from the space's layer specs, see :func:`latkit.search.supernet.supernet.module_id`);
    the standalone names are ``{i}_{layer}.{rest}``. Architecture parameters,
    optimiser moments and the other candidates are dropped.

    Raises:
        StoreError: the checkpoint holds no supernet, or none of the operator a
            layer of ``network`` needs (a checkpoint of another space, width or search).
    """
    from latkit.search.supernet.supernet import IDENTITY, module_id

    by_layer: dict[int, dict[str, dict[str, torch.Tensor]]] = {}
    for key, value in tensors.items():
        if not key.startswith(SUPERNET_PREFIX) or ".candidates." not in key:
            continue
        index, _, rest = key[len(SUPERNET_PREFIX):].partition(".candidates.")
        mid, _, name = rest.partition(".")
        if not (index.isascii() and index.isdigit() and len(index) < 6):
            raise StoreError(f"the search checkpoint holds a tensor {key[:120]!r} that names no layer number; "
                             "it was not written by latkit search: give the checkpoint.safetensors it wrote")
        by_layer.setdefault(int(index), {}).setdefault(mid, {})[name] = value
    if not by_layer:
        raise StoreError("the search checkpoint holds no supernet weights (a search that trained each "
                         "architecture on its own); train the architecture with latkit train and export that")
    if max(by_layer) >= len(network.layers):
        raise StoreError(f"the search checkpoint's supernet has {max(by_layer) + 1}+ layers, the architecture "
                         f"{len(network.layers)}; export with the checkpoint of the search that wrote --arch")
    out: dict[str, torch.Tensor] = {}
    for i, layer in enumerate(network.layers):
        mid = module_id(layer.spec)
        if mid == IDENTITY:
            continue
        found = by_layer.get(i, {}).get(mid)
        if found is None and layer.spec.op_type is OpType.LOGITS and len(by_layer.get(i, {})) == 1:
            found = next(iter(by_layer[i].values()))  # the ids name the space's class count, not the dataset's
        if found is None:
            raise StoreError(f"the search checkpoint has no weights for layer {i} ({layer.name}, "
                             f"{layer.spec.op_type.value} {mid}): it was written by a search of another space, "
                             "width or resolution; export with the checkpoint of the search that wrote --arch")
        prefix = f"{i}_{layer.name}".replace(".", "_") + "."
        out.update({prefix + name: value for name, value in found.items()})
    return out


def standalone_tensors(network: Network, weights: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of ``network`` in the standalone naming, from a weights file or a search checkpoint."""
    tensors, _ = read_weights(weights_file(weights))
    tensors = supernet_path_state(tensors, network) if is_search_checkpoint(tensors) else tensors
    _check_finite(tensors, weights)
    return tensors


def _check_finite(tensors: dict[str, torch.Tensor], weights: str | Path) -> None:
    """Refuse weights holding NaN or infinity: the training diverged, and no exporter can fix that.

    Raises:
        StoreError: naming the first tensors that hold them.
    """
    bad = [k for k, t in tensors.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise StoreError(f"weights {weights} hold NaN or infinite values (in {', '.join(bad[:3])}"
                         f"{' ...' if len(bad) > 3 else ''}): the training diverged; train again (a lower learning "
                         "rate, fewer epochs) or give other weights")


def standalone_module(network: Network, weights: str | Path | None = None) -> tuple[nn.Module, Network]:
    """The network as a plain eval-mode module, with ``weights`` loaded if given.

    ``weights`` is a safetensors file in the standalone naming (``latkit
    train``'s), a search checkpoint (``latkit search``'s: the supernet
    weights of this architecture's path are taken), or a folder holding one.

    Returns:
        The module and the network it implements (its classifier resized to
        the class count of the weights, if they differ from the space's).

    Raises:
        StoreError: the weights do not fit the architecture (lists what differs).
    """
    if weights is None:
        return build_network(network), network
    tensors = standalone_tensors(network, weights)
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


__all__ = ["is_search_checkpoint", "read_weights", "save_weights", "standalone_module",
           "standalone_tensors", "supernet_path_state", "weights_file", "weights_source"]
