"""What a farm run is given, read once for the CLI and the Python API alike: the operators of a
space, the phones' ADB key and the stand-in model file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from latkit.core.errors import UsageError
from latkit.profiler.ops import OpSpec


def space_operators(space: str, resolution: int | None = None, limit: int | None = None) -> list[OpSpec]:
    """The distinct measurable operators of ``space`` at ``resolution`` (the first ``limit`` of them)."""
    from latkit.profiler.spaces import get_space

    specs = list({s.key: s for s in get_space(space).operators(resolution) if s.measurable}.values())
    return specs[:limit] if limit else specs


def key_options(key: str | Path | None, name: str = "--key") -> dict[str, Any]:
    """The phones' options for the ADB private key ``key`` (none: latkit's choice).

    A key the user names is never generated in its place, and one that is no ADB key is
    told here, not later as "no device matches".

    Raises:
        UsageError: ``key`` does not exist, or is no ADB key.
    """
    if not key:
        return {}
    from latkit.devices.adb_transport import load_signer

    key = Path(key)
    if not key.expanduser().exists():
        raise UsageError(f"{name} {key} does not exist; give the key adb uses (~/.android/adbkey), or leave out {name}")
    load_signer(key)
    return {"key_path": str(key)}


def stand_in_factory(model: str | Path | None, name: str = "--stand-in-model") -> Any:
    """The model factory pushing the file ``model`` for every operator (None: export each).

    Raises:
        UsageError: ``model`` is not a file.
    """
    from latkit.profiler.farm.node import StandInFactory

    if model is None:
        return None
    if not Path(model).is_file():
        raise UsageError(f"{name} {model} is not a file")
    return StandInFactory(Path(model).resolve())


def farm_protocol(quick: bool = False, target_ci: float | None = None, device_wait_s: float | None = None) -> Any:
    """The measurement protocol of a farm run: the standard (or ``quick``) one, with its relative CI
    target and the seconds a phone that stops answering is waited for when given."""
    from latkit.profiler.protocol import Preset, ProtocolConfig

    overrides: dict[str, float] = {} if target_ci is None else {"target_rel_ci": target_ci}
    if device_wait_s is not None:
        overrides["outage_wait_s"] = device_wait_s
    return ProtocolConfig.preset(Preset.QUICK if quick else Preset.DEFAULT, **overrides)


__all__ = ["farm_protocol", "key_options", "space_operators", "stand_in_factory"]
