"""Render a run's report.html in headless Chromium and save a full-page PNG to look at.

    python eval/report_screenshot.py RUN_DIR [--out RUN_DIR/report.png] [--height 4600]

Rewrites the report first (`llm-unlearn report RUN_DIR`), times it, then takes the screenshot
with Debian's `chromium` (apt-get install chromium). Prints and saves the timing as JSON beside
the PNG.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import time
from pathlib import Path

from llm_unlearn.audit.write import write_report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--height", type=int, default=4600)
    args = parser.parse_args()
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        raise SystemExit("no chromium on PATH: apt-get install chromium")
    start = time.perf_counter()
    write_report(args.run_dir)
    seconds = round(time.perf_counter() - start, 2)
    out = args.out or args.run_dir / "report.png"
    page = (args.run_dir / "report.html").resolve().as_uri()
    subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         f"--window-size=1280,{args.height}", f"--screenshot={out}", page],
        check=True, capture_output=True,
    )  # fmt: skip
    figures = {"report_seconds": seconds, "screenshot": str(out)}
    out.with_suffix(".json").write_text(json.dumps(figures, indent=1) + "\n")
    print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
