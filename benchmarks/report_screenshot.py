"""Proof that a run's ``report.html`` stands alone: every image embedded, the page renders.

Checks the page for any resource it would have to fetch (an ``img``, ``script``,
``link`` or CSS ``url()`` that is not a ``data:`` URI), then renders it with
headless Chromium (``apt-get install chromium``) into a PNG screenshot from a
copy in an empty folder, so a page that still leaned on the PNG files beside it
would show broken images. Prints the figures and exits 1 when a check fails.

    python benchmarks/report_screenshot.py latkit-run/report.html --out report.png
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

RESOURCE = re.compile(r"""(?:<(?:img|script|iframe|source)[^>]*\ssrc|<link[^>]*\shref)\s*=\s*["']([^"']*)["']"""
                      r"""|url\(\s*["']?([^)"']*)""", re.IGNORECASE)  # fmt: skip
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome")


def external_resources(page: str) -> list[str]:
    """The resources ``page`` would load from anywhere but itself (``data:`` URIs are inline)."""
    found = [a or b for a, b in RESOURCE.findall(page)]
    return [src for src in found if not src.startswith("data:")]


def embedded_images(page: str) -> int:
    """How many ``<img>`` tags carry their picture as a base64 ``data:`` URI."""
    return len(re.findall(r"""<img[^>]*\ssrc\s*=\s*["']data:image/[a-z+]+;base64,""", page, re.IGNORECASE))


def find_browser() -> str | None:
    """The path of a Chromium-family browser on PATH, or None."""
    return next((p for p in map(shutil.which, BROWSERS) if p), None)


def screenshot(html_path: Path, png_path: Path, browser: str, width: int = 1200, height: int = 4000,
               timeout_s: float = 120.0) -> Path:  # fmt: skip
    """Render ``html_path`` alone (copied into an empty folder) with headless Chromium into ``png_path``."""
    with tempfile.TemporaryDirectory(prefix="latkit-shot-") as tmp:
        alone = Path(tmp) / "report.html"
        shutil.copyfile(html_path, alone)
        png_path = png_path.resolve()
        png_path.unlink(missing_ok=True)
        cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               "--disable-background-networking", "--no-first-run", f"--user-data-dir={tmp}/profile",
               f"--window-size={width},{height}", f"--screenshot={png_path}", alone.as_uri()]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
        if not png_path.is_file():
            raise RuntimeError(f"{browser} wrote no screenshot (exit {done.returncode}): {done.stderr[-500:]}")
    return png_path


def check(html_path: Path, png_path: Path, browser: str | None = None) -> dict[str, object]:
    """Every figure of the proof: external resources, embedded images, the screenshot's size and colours."""
    page = html_path.read_text(encoding="utf-8")
    figures: dict[str, object] = {"external": external_resources(page), "embedded_images": embedded_images(page)}
    browser = browser or find_browser()
    if browser is None:
        figures["screenshot"] = None
        return figures
    shot = screenshot(html_path, png_path, browser)
    import matplotlib.image as mpimg  # latkit's plotting dependency; reads PNG without a browser
    import numpy as np

    pixels = mpimg.imread(shot)[:, :, :3]
    # the report's plots draw in #4477aa (bars, points): no such pixel means no plot rendered
    blue = np.abs(pixels - np.array([0x44, 0x77, 0xAA]) / 255).max(axis=2) < 0.04
    figures.update(screenshot=str(shot), size=f"{pixels.shape[1]}x{pixels.shape[0]}",
                   plot_pixels=int(blue.sum()))
    return figures


def main(argv: list[str] | None = None) -> int:
    """Command line: check and screenshot one report."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("html", type=Path, help="a run's report.html")
    ap.add_argument("--out", type=Path, default=Path("report-screenshot.png"), help="screenshot file")
    ap.add_argument("--min-images", type=int, default=1, help="fail with fewer embedded images")
    args = ap.parse_args(argv)
    figures = check(args.html, args.out)
    for key, value in figures.items():
        print(f"{key}: {value}")
    ok = not figures["external"] and figures["embedded_images"] >= args.min_images
    if figures["screenshot"] is None:
        print("no Chromium on PATH: the page was checked, not rendered (apt-get install chromium)")
    print("OK" if ok else "FAILED: the page is not self-contained")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
