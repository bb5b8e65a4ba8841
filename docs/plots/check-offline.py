"""Checks that `dvc plots show`'s page draws its curves offline: renders it in headless
Chromium with every host unresolvable, screenshots it, and counts the pixels of the curves'
colour (DVC draws the workspace's lines in #945dd6; the PNG plots have none of it). Run in a
reproduced project (after `make run`); needs Chromium (Debian: apt-get install chromium).
Prints a line per page; exits 1 if the committed template's page lacks curves.

    python docs/plots/check-offline.py [--chromium /usr/bin/chromium] [--out /tmp/plots-check]

For contrast it renders DVC's own page (vega from a CDN) the same way: there the curves are
missing, which is what the committed template (.dvc/plots-offline.html) fixes.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

WORKSPACE_LINE = (0x94, 0x5D, 0xD6)  # DVC's colour for the workspace's curves
MIN_PIXELS = 1000  # the four curve plots drew 4,378 such pixels; the page without vega 0


def render(html: Path, png: Path, chromium: str) -> None:
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={tempfile.mkdtemp()}", "--host-resolver-rules=MAP * ~NOTFOUND",
                    "--window-size=1400,4000", "--virtual-time-budget=15000", f"--screenshot={png}",
                    html.resolve().as_uri()], check=True, capture_output=True, timeout=120)


def line_pixels(png: Path) -> int:
    pixels = np.asarray(Image.open(png).convert("RGB")).astype(int)
    return int((np.abs(pixels - WORKSPACE_LINE).sum(-1) < 60).sum())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--out", type=Path, default=Path(tempfile.mkdtemp(prefix="plots-check-")))
    args = parser.parse_args()
    from dvc_render.html import PAGE_HTML  # DVC's own page: its scripts come from a CDN
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "dvc-page.html").write_text(PAGE_HTML)
    pages = {"committed template": [], "DVC's CDN page": ["--html-template", str(args.out / "dvc-page.html")]}
    ok = True
    for name, extra in pages.items():
        out = args.out / ("committed" if name.startswith("committed") else "dvc-cdn")
        subprocess.run(["dvc", "plots", "show", "-o", str(out), *extra], check=True, capture_output=True)
        html = out / "index.html"
        png = out / "screenshot.png"
        render(html, png, args.chromium)
        count = line_pixels(png)
        drawn = count >= MIN_PIXELS
        src = html.read_text().count("<script src=")
        print(f"{name}: {src} remote scripts, {count} curve pixels -> {'curves drawn' if drawn else 'NO CURVES'} "
              f"({png})")
        ok &= drawn or name != "committed template"
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
