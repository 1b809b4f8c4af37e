"""Run a model converter or quantizer quietly: its output goes to the log, not the terminal.

The converters latkit drives (litert-torch, ai-edge-quantizer) draw progress
bars, log from C++ straight to the file descriptors and raise warnings; a CLI
run would drown in them. :func:`quiet_converter` catches all of it and logs it
at DEBUG, or at WARNING when the conversion fails, where it explains the error.
Both :mod:`latkit.profiler.export` and :mod:`latkit.profiler.quantize` (and the
deployable export) convert, so it lives below both.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator

from latkit.devices.base import captured_output

log = logging.getLogger(__name__)


@contextlib.contextmanager
def quiet_converter(what: str = "converter") -> Iterator[None]:
    """Silence a converter (progress bars, C++ logs, warnings) while it runs.

    What it printed is logged at DEBUG, or at WARNING if the conversion fails.
    """
    saved_env = {k: os.environ.get(k) for k in ("LITERT_TORCH_SHOW_PROGRESS", "TF_CPP_MIN_LOG_LEVEL")}
    os.environ["LITERT_TORCH_SHOW_PROGRESS"] = "n"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    failed, out = False, None
    try:
        with captured_output() as out, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    except BaseException:
        failed = True
        raise
    finally:
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if out is not None and out.text:
            level = logging.WARNING if failed else logging.DEBUG
            log.log(level, "%s output:\n%s", what, out.text[-4000:])
