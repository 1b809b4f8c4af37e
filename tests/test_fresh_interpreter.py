"""One call in a new interpreter (latkit.core.fresh): results, latkit errors, a dead child, an unguarded script."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from latkit.core import checks
from latkit.core.errors import LatkitError, UsageError
from latkit.core.fresh import in_fresh_interpreter


def test_the_call_runs_in_another_process_and_returns_its_result(capfd) -> None:
    assert in_fresh_interpreter(os.getpid) != os.getpid()
    # what the call prints goes to stderr and leaves the answer whole
    assert in_fresh_interpreter(print, "printed by the child") is None
    assert "printed by the child" in capfd.readouterr().err


def test_a_latkit_error_comes_back_with_its_type_and_message() -> None:
    with pytest.raises(UsageError, match=r"passes must be in 1\.\.10, not 11"):
        in_fresh_interpreter(checks.integer, "passes", 11, 1, 10)


def test_a_child_that_dies_is_one_error_not_a_wait() -> None:
    with pytest.raises(LatkitError, match=r"timing x in a fresh interpreter ended without an answer \(exit 3\)"):
        in_fresh_interpreter(os._exit, 3, what="timing x")


def test_a_script_without_a_main_guard_is_not_run_again(tmp_path) -> None:
    """multiprocessing's spawn re-ran such a script's top level in its worker, which crashed, for ever."""
    script = tmp_path / "my script.py"
    script.write_text(textwrap.dedent("""
        import os
        from latkit.core.fresh import in_fresh_interpreter
        print("top level ran")
        print("child", in_fresh_interpreter(os.getpid) != os.getpid())
    """))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["top level ran", "child True"]
