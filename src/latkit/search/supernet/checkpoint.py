"""Pickle-free, resumable search checkpoints: safetensors for tensors, JSON for state.

A checkpoint is two files in the run's directory, each written to a temporary
name and moved into place (a killed run never leaves half a file); both carry
the same random id, so a run killed between the two moves leaves a pair that
:func:`load_checkpoint` refuses instead of mixing two epochs:

* ``checkpoint.safetensors``: every tensor (supernet weights and BN statistics,
  architecture parameters, optimiser moments, torch generator state);
* ``checkpoint.json``: schema ``latkit.search.checkpoint``, versions, and the
  rest of the state (epoch, numpy generator state, optimiser hyper-parameters,
  the trajectory so far, the run's arguments).
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import TypedDict

import torch

from latkit.core.files import atomic_path, one_line, read_json, write_json
from latkit._version import __version__
from latkit.core.errors import StoreError, UsageError

SCHEMA = "latkit.search.checkpoint"
SCHEMA_VERSION = 2  # 2: supernet candidates share weights (the optimiser holds the shared tensors only)
TENSORS_FILE = "checkpoint.safetensors"
STATE_FILE = "checkpoint.json"


class OptimizerState(TypedDict):
    """An optimiser's JSON half (its tensors are in the safetensors file)."""

    param_groups: list[dict[str, object]]  # torch's own, hyper-parameters by name
    plain: dict[str, dict[str, object]]  # per parameter index: the non-tensor state


class CheckpointState(TypedDict, total=False):
    """``checkpoint.json``: the envelope, and the JSON state of the search that wrote it.

    Every search writes ``algorithm``, ``epoch`` and ``trajectory``; a uniformly
    trained supernet adds ``weight_opt`` and ``numpy_rng``; proxyless-grad adds
    the rest (:meth:`~latkit.search.supernet.proxyless_grad.ProxylessGradSearch.state`).
    """

    schema: str
    schema_version: int
    latkit_version: str
    checkpoint_id: str  # the same id as the safetensors file's metadata
    algorithm: str
    epoch: int
    trajectory: list[dict[str, object]]  # the search's trajectory rows so far
    numpy_rng: dict[str, object]  # numpy's bit-generator state
    weight_opt: OptimizerState
    arch_opt: OptimizerState
    arch_steps: int
    latency_weight: float
    history: list[dict[str, object]]  # proxyless-grad's EpochInfo per epoch
    config: dict[str, object]  # the ProxylessConfig's fields
    target_ms: float


def optimizer_state(opt: torch.optim.Optimizer, prefix: str) -> tuple[dict[str, torch.Tensor], OptimizerState]:
    """Split an optimiser's state dict into named tensors and JSON-ready values."""
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    plain: dict[str, dict[str, object]] = {}
    for idx, entries in sd["state"].items():
        for name, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{prefix}.{idx}.{name}"] = value.detach().clone().contiguous()
            else:
                plain.setdefault(str(idx), {})[name] = value
    return tensors, {"param_groups": sd["param_groups"], "plain": plain}


def restore_optimizer(
    opt: torch.optim.Optimizer, prefix: str, tensors: dict[str, torch.Tensor], saved: OptimizerState
) -> None:
    """Inverse of :func:`optimizer_state`."""
    state: dict[int, dict[str, object]] = {}
    for key, value in tensors.items():
        if key.startswith(prefix + "."):
            idx, name = key[len(prefix) + 1 :].split(".", 1)
            state.setdefault(int(idx), {})[name] = value
    for idx, entries in saved["plain"].items():
        state.setdefault(int(idx), {}).update(entries)
    opt.load_state_dict({"state": state, "param_groups": saved["param_groups"]})


def save_checkpoint(directory: str | Path, tensors: dict[str, torch.Tensor], state: CheckpointState) -> Path:
    """Write ``tensors`` and ``state`` atomically into ``directory``; return it."""
    from safetensors.torch import save_file

    out = Path(directory)
    ident = uuid.uuid4().hex
    with atomic_path(out / TENSORS_FILE, "search checkpoint") as tmp:
        save_file({k: v.detach().contiguous() for k, v in tensors.items()}, str(tmp),
                  metadata={"checkpoint_id": ident})
    body: CheckpointState = {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, "latkit_version": __version__,
            "checkpoint_id": ident, **state}  # fmt: skip
    write_json(out / STATE_FILE, body, "search checkpoint", indent=1, nan_to_null=True)
    return out


def has_checkpoint(directory: str | Path) -> bool:
    """Whether ``directory`` holds a complete checkpoint."""
    d = Path(directory)
    return (d / TENSORS_FILE).is_file() and (d / STATE_FILE).is_file()


def check_resumable(directory: str | Path, algorithm: str | None = None) -> CheckpointState:
    """Before an explicit resume: the checkpoint in ``directory`` is there, whole, and of ``algorithm``.

    (:func:`~latkit.search.run.run_search` itself starts fresh when there is no
    checkpoint, which ``latkit run`` relies on; a user's ``--resume`` must not.)

    Returns:
        The checkpoint's JSON state.

    Raises:
        UsageError: nothing to resume, or a checkpoint of another algorithm.
        StoreError: half a checkpoint, or an unreadable one.
    """
    d = Path(directory)
    present = [name for name in (TENSORS_FILE, STATE_FILE) if (d / name).is_file()]
    if not present:
        raise UsageError(f"nothing to resume: {d} holds no search checkpoint; drop --resume to start "
                         "a fresh search there")
    if len(present) == 1:
        raise StoreError(f"the search checkpoint in {d} is incomplete (only {present[0]}); delete it and "
                         "start the search without --resume")
    _, state = load_checkpoint(d)
    saved = state.get("algorithm")
    if algorithm is not None and saved != algorithm:
        raise UsageError(f"the checkpoint in {d} is of a {saved} search, not {algorithm}; resume with "
                         f"--algorithm {saved}, or drop --resume and use another --out folder")
    return state


def load_checkpoint(directory: str | Path) -> tuple[dict[str, torch.Tensor], CheckpointState]:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Raises:
        StoreError: missing, unreadable, or of another schema version.
    """
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    d = Path(directory)
    if not has_checkpoint(d):
        raise StoreError(f"no search checkpoint in {d}; start the search without --resume")
    try:
        state = read_json(d / STATE_FILE, "search checkpoint")
        with safe_open(str(d / TENSORS_FILE), framework="pt") as fh:
            ident = (fh.metadata() or {}).get("checkpoint_id")
        tensors = load_file(str(d / TENSORS_FILE))
    except (OSError, StoreError, SafetensorError) as exc:
        raise StoreError(f"cannot read the search checkpoint in {d}: {one_line(exc)}; "
                         "delete it and restart") from exc
    if not isinstance(state, dict) or state.get("schema") != SCHEMA or state.get("schema_version") != SCHEMA_VERSION:
        raise StoreError(
            f"{d / STATE_FILE} is not a version-{SCHEMA_VERSION} latkit search checkpoint; "
            "delete it and restart the search"
        )
    if state.get("checkpoint_id") != ident:
        raise StoreError(f"the search checkpoint in {d} is two halves of different epochs (a run stopped "
                         "while saving); delete checkpoint.* and restart the search")
    return tensors, state
