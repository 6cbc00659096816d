"""Time the demo cold (no cached models) and warm (cached target/retrain), the demo with the
quantization-only columns it had before the release gate's routes (`--set` below), and the test suite.

    python eval/demo_benchmark.py [--skip-tests] [--skip-cold | --quick-only] [--out FILE.json]

Each demo run goes to a fresh output folder; the cold runs share a fresh model cache: first the quick
demo (`demo --quick`: it trains the retrain model and its own target), then the demo, which reuses
that retrain model. `--quick-only` times the quick demo alone, cold, and writes
`demo_quick_benchmark.json` with its report and verdict (`demo_quick_report.md`,
`demo_quick_verdict.json`, the docs' quick-demo table) beside the JSON. The ratio
`warm_over_quantization_only` compares the demo's default battery (formats, casts and the attack
routes) with the same demo audited under `fp, rtn-w8, rtn-w4-g32` alone, both warm, in this one run;
`demo_wmdp_warm_s` times the offline WMDP demo (`recipes/demo_wmdp.yaml`), whose verdict.json and
cells (`demo_wmdp_cells.json`: its results.jsonl without the per-question rows) are written beside
the JSON for the README's WMDP table.
Prints and saves JSON with the wall-clock seconds, the machine's core count and load average, and
the demo's audit table (the run's report.md and verdict.json are copied beside the JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: the demo's columns before the release gate's routes: the baseline of the time ratio
QUANTIZATION_ONLY = "[fp, rtn-w8, rtn-w4-g32]"


def timed(cmd: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, env=env, check=True)
    return round(time.perf_counter() - start, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "eval" / "results" / "demo_benchmark.json")
    parser.add_argument("--skip-tests", action="store_true")
    cold = parser.add_mutually_exclusive_group()
    cold.add_argument("--skip-cold", action="store_true", help="time the warm runs only")
    cold.add_argument("--quick-only", action="store_true", help="time the quick demo alone, cold")
    parser.add_argument("--keep", type=Path, help="run in this folder and keep its run folders")
    args = parser.parse_args()

    work = args.keep or Path(tempfile.mkdtemp(prefix="llm_unlearn_bench_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        benchmark(args, work)
    finally:
        if args.keep is None:
            shutil.rmtree(work)


def benchmark(args: argparse.Namespace, work: Path) -> None:
    """Run and time the demos in `work` and write the figures and result files."""
    env = {**os.environ, "LLM_UNLEARN_CACHE": str(work / "cache")}
    demo = [sys.executable, "-m", "llm_unlearn", "demo"]
    figures: dict[str, object] = {"cores": os.cpu_count(), "python": platform.python_version()}
    figures["load_average_before"] = os.getloadavg()
    if args.skip_cold:
        env.pop("LLM_UNLEARN_CACHE")  # the usual model cache, warmed by an earlier demo
    else:
        figures["demo_quick_cold_s"] = timed([*demo, "--quick", "--set", f"output.dir={work / 'quick'}"], env)
        copy_quick_run(work / "quick", args.out.parent)
        if args.quick_only:
            figures["load_average_after"] = os.getloadavg()
            save(figures, args.out.with_name("demo_quick_benchmark.json"))
            return
        figures["demo_cold_after_quick_s"] = timed([*demo, "--set", f"output.dir={work / 'cold'}"], env)
    only = [*demo, "--set", f"output.dir={work / 'quant'}", "--set", f"quantize={QUANTIZATION_ONLY}"]
    figures["demo_warm_quantization_only_s"] = timed([*only, "--set", "relearn=[]"], env)
    figures["demo_warm_s"] = timed([*demo, "--set", f"output.dir={work / 'warm'}"], env)
    figures["warm_over_quantization_only"] = round(
        figures["demo_warm_s"] / figures["demo_warm_quantization_only_s"], 2
    )
    wmdp = [sys.executable, "-m", "llm_unlearn", "run", "recipes/demo_wmdp.yaml"]
    figures["demo_wmdp_warm_s"] = timed([*wmdp, "--set", f"output.dir={work / 'wmdp'}"], env)
    figures["load_average_after"] = os.getloadavg()
    if not args.skip_tests:
        tests = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
        figures["tests_s"] = timed(tests, dict(os.environ))

    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = args.out.with_name("demo_report.md")
    shutil.copy(work / "warm" / "report.md", report)
    shutil.copy(work / "warm" / "verdict.json", args.out.with_name("demo_verdict.json"))
    shutil.copy(work / "wmdp" / "verdict.json", args.out.with_name("demo_wmdp_verdict.json"))
    keep = ("model", "target", "quantizer", "metric", "agg_value", "ci")  # not the per-question rows
    rows = [json.loads(line) for line in (work / "wmdp" / "results.jsonl").read_text().splitlines()]
    cells = [{k: row[k] for k in keep} for row in rows]
    args.out.with_name("demo_wmdp_cells.json").write_text(json.dumps(cells, indent=1) + "\n")
    figures["report"] = str(report.relative_to(ROOT))
    save(figures, args.out)


def copy_quick_run(run: Path, results: Path) -> None:
    """The quick demo's report and verdict, for the docs' quick-demo table (docs/results/demo.md)."""
    results.mkdir(parents=True, exist_ok=True)
    shutil.copy(run / "report.md", results / "demo_quick_report.md")
    shutil.copy(run / "verdict.json", results / "demo_quick_verdict.json")


def save(figures: dict[str, object], out: Path) -> None:
    out.write_text(json.dumps(figures, indent=1) + "\n")
    print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
