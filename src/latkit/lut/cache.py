"""Where LUTs live: the per-device LUT cache that `latkit run` fills and `latkit search` reads.

One LUT per device, space and resolution, named after all three, in
``$LATKIT_LUT_DIR`` (default ``~/.cache/latkit/luts``; the folder itself is
defined with the other cache areas in :mod:`latkit.core.cache`).
"""

from __future__ import annotations

import re
from pathlib import Path

from latkit.profiler.protocol import Statistic


def default_lut_dir() -> Path:
    """Where per-device LUTs are cached: ``$LATKIT_LUT_DIR`` or ``~/.cache/latkit/luts``."""
    from latkit.core.cache import luts_dir

    return luts_dir()


def lut_path_for(device_uri: str, space: str, resolution: int, lut_dir: Path | None = None,
                 statistic: Statistic = Statistic.P5) -> Path:  # fmt: skip
    """The cached LUT of a device, space and resolution (and statistic: a LUT keeps one; p5's file has no tag)."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", device_uri).strip("_")
    tag = "" if statistic == Statistic.P5 else f"-{statistic.value}"
    return (lut_dir or default_lut_dir()) / f"{slug}-{space}-{resolution}{tag}.db"


__all__ = ["default_lut_dir", "lut_path_for"]
