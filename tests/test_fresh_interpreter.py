"""One call in a new interpreter (latkit.core.fresh): results, latkit errors, a dead child, an unguarded script."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from latkit.core.errors import LatkitError, UnknownNameError, UsageError
from latkit.core.fresh import in_fresh_interpreter

_SERVE = "from latkit.core.fresh import serve; "


def test_the_call_runs_in_another_process_and_returns_its_json_answer(capfd) -> None:
    assert in_fresh_interpreter(_SERVE + "import os; serve(lambda r: os.getpid())", {}) != os.getpid()
    # what the call prints goes to stderr and leaves the answer whole
    echo = {"path": "a 'b' \"c\" ü $(x).onnx", "ms": [0.25, 1e-9], "none": None}
    assert in_fresh_interpreter(_SERVE + "serve(lambda r: (print('printed by the child'), r)[1])", echo) == echo
    assert "printed by the child" in capfd.readouterr().err


def test_a_latkit_error_comes_back_with_its_type_and_message() -> None:
    child = _SERVE + "from latkit.core import checks; serve(lambda r: checks.integer(r['name'], r['value'], 1, 10))"
    with pytest.raises(UsageError, match=r"passes must be in 1\.\.10, not 11"):
        in_fresh_interpreter(child, {"name": "passes", "value": 11})


def test_an_error_built_from_other_arguments_keeps_its_message() -> None:
    child = _SERVE + ("from latkit.core.errors import UnknownNameError as E; "
                      "serve(lambda r: (_ for _ in ()).throw(E('space', 'x', ['a'])))")
    with pytest.raises(LatkitError) as info:
        in_fresh_interpreter(child, {})
    assert str(info.value) == str(UnknownNameError("space", "x", ["a"]))


def test_a_child_that_dies_is_one_error_not_a_wait() -> None:
    with pytest.raises(LatkitError, match=r"timing x in a fresh interpreter ended without an answer \(exit 3\)"):
        in_fresh_interpreter(_SERVE + "import os; serve(lambda r: os._exit(3))", {}, what="timing x")


def test_a_script_without_a_main_guard_is_not_run_again(tmp_path) -> None:
    """multiprocessing's spawn re-ran such a script's top level in its worker, which crashed, for ever."""
    script = tmp_path / "my script.py"
    script.write_text(textwrap.dedent("""
        import os
        from latkit.core.fresh import in_fresh_interpreter
        print("top level ran")
        child = "from latkit.core.fresh import serve; import os; serve(lambda r: os.getpid())"
        print("child", in_fresh_interpreter(child, {}) != os.getpid())
    """))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["top level ran", "child True"]
