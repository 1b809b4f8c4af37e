"""Run the CLI in-process and check the one-line error standard (shared by the test modules)."""

from __future__ import annotations

from latkit.cli import main


def run(capsys, *argv) -> tuple[int, str, str]:
    """Run ``latkit ARGV``; return (exit code, stdout, stderr)."""
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_error_line(code: int, err: str, *needles: str) -> str:
    """Assert a non-zero exit with exactly one ``error:`` line holding every needle; return it."""
    assert code != 0
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]
