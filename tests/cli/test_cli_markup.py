"""User text with square brackets reaches the terminal literally, never as rich markup."""

from __future__ import annotations

from latkit.cli import common, main
from latkit.core.errors import MissingExtraError


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_error_line_with_closing_tag_in_path(capsys, tmp_path):
    path = tmp_path / "a[/x]b.db"
    code, _, err = run(capsys, "lut", "show", str(path))
    assert code != 0
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    assert "Traceback" not in err and "MarkupError" not in err
    assert str(path) in lines[0]


def test_install_hint_keeps_its_brackets(capsys):
    common.error(str(MissingExtraError("android devices", "android")))
    err = capsys.readouterr().err
    assert "pip install 'latkit[android]'" in err
    assert "latkit[android];" in err


def test_table_and_header_show_bracketed_path(capsys, tmp_path):
    from latkit.lut.store import LUT

    path = tmp_path / "lut[bold]x[/bold].db"
    with LUT.open(path, create=True):
        pass
    code, out, err = run(capsys, "lut", "show", str(path))
    assert code == 0, err
    assert str(path) in out.replace("\n", "")


def test_progress_note_is_not_markup(capsys):
    from latkit.cli.progress import track

    with track("step [/]", 2) as advance:
        advance("key [/red] done")
        advance("[bold]x")
    err = capsys.readouterr().err
    assert "key [/red] done" in err or "[bold]x" in err


def test_the_run_figures_line_names_the_judged_figure_when_it_differs(capsys):
    """A run whose host check judged it on another figure than the measure stage's says so, instead of
    printing a "measured" figure that the verdict above it does not quote."""
    from types import SimpleNamespace

    from latkit.cli.deploy import figures_line
    from latkit.profiler.protocol import Statistic

    base = dict(predicted_ms=0.497, measured_ms=0.708, statistic=Statistic.P5, precision="fp32", target_ms=0.5)
    device = "adb+tcp://127.0.0.1:6555[/x]"
    line = figures_line(SimpleNamespace(**base, judged_ms=0.493), device)
    common.out.print(line)
    printed = " ".join(capsys.readouterr().out.split())
    assert printed == ("predicted 0.497 ms, measured 0.708 ms (p5) on adb+tcp://127.0.0.1:6555[/x] at fp32, "
                       "judged on 0.493 ms after the host check, target 0.500 ms")
    for judged in (None, 0.7081):  # no host check, or the measured figure itself
        assert "judged" not in figures_line(SimpleNamespace(**base, judged_ms=judged), device)
