"""What a refusal costs: wall time and peak memory of each one-line refusal about a path or a name.

    python eval/refusal_cost.py [--repeats N] [--label NAME]

Runs each refusal (a missing recipe, file or folder, a misspelled quantizer, column, metric or
method, a malformed `--model NAME=PATH`, `--help`) as its own `llm-unlearn` process, N times (default
3), and records its exit code, its error line, its median wall time, its peak resident memory
(`os.wait4`'s rusage of that process alone) and whether torch was imported by the time it answered;
the goal is under 1 s and 100 MB, torch never. Saved under NAME (default `current`) in
eval/results/refusal_cost.json, so runs before and after a change sit side by side. Time it on an
otherwise idle machine: the numbers are the machine's as much as the command's.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "eval" / "results" / "refusal_cost.json"
#: the command, then whether torch was imported, on its last line of stderr
RUN = (
    "import sys\nfrom llm_unlearn.cli import main\n"
    "try:\n    code = main(sys.argv[1:])\nexcept SystemExit as exit:\n    code = exit.code\n"
    "print('torch imported:', 'torch' in sys.modules, file=sys.stderr)\nsys.exit(code)\n"
)
#: (id, argv); {tmp} is a scratch folder holding q.yaml (its target missing, `quantize: [rtn-w5]`),
#: run/ (a certificate.json, and a recipe.yaml and results.jsonl of no unlearned model) and nothing
#: called `none`
AUDIT = ["audit", "--target", "{tmp}", "--model", "a={tmp}", "--data", "demo", "--out", "{tmp}/o"]
EVALUATE = ["evaluate", "--model", "{tmp}", "--data", "demo", "--out", "{tmp}/o.json"]
CHECK = ["check", "{tmp}/q.yaml", "--set"]
CASES: list[tuple[str, list[str]]] = [
    ("--help", ["--help"]),
    ("check, missing recipe", ["check", "{tmp}/none.yaml"]),
    ("check, misspelled quantizer", ["check", "{tmp}/q.yaml"]),
    ("check, unknown column", [*CHECK, "quantize=[rtm-w4]"]),
    ("check, unknown metric", [*CHECK, "quantize=[fp]", "--set", "evaluate=[verbmemm]"]),
    ("check, unknown method", [*CHECK, "method.0.name=npoo"]),
    ("run, missing target", ["run", "{tmp}/q.yaml", "--set", "quantize=[fp]"]),
    (
        "audit, missing target",
        ["audit", "--target", "{tmp}/none", "--model", "a={tmp}", "--data", "demo", "--out", "{tmp}/o"],
    ),
    (
        "audit, malformed --model",
        ["audit", "--target", "{tmp}", "--model", "a", "--data", "demo", "--out", "{tmp}/o"],
    ),
    ("audit, misspelled quantizer", [*AUDIT, "--quantize", "rtn-w5"]),
    ("audit, unknown metric", [*AUDIT, "--metrics", "foo"]),
    (
        "evaluate, missing model",
        ["evaluate", "--model", "{tmp}/none", "--data", "demo", "--out", "{tmp}/o.json"],
    ),
    ("evaluate, unknown metric", [*EVALUATE, "--metrics", "foo"]),
    ("evaluate --help", ["evaluate", "--help"]),
    (
        "evaluate, missing data",
        ["evaluate", "--model", "{tmp}", "--data", "{tmp}/none", "--out", "{tmp}/o.json"],
    ),
    (
        "audit, missing data",
        ["audit", "--target", "{tmp}", "--model", "a={tmp}", "--data", "{tmp}/none", "--out", "{tmp}/o"],
    ),
    ("diagnose, missing target", ["diagnose", "{tmp}/none", "{tmp}"]),
    ("diagnose, misspelled quantizer", ["diagnose", "{tmp}", "{tmp}", "--quantizer", "rtn-w5"]),
    ("report, no results", ["report", "{tmp}"]),
    ("verify, no certificate", ["verify", "{tmp}", "{tmp}/q.yaml"]),
    ("verify, nothing to ship", ["verify", "{tmp}/run", "{tmp}/none"]),
    ("push, no run", ["push", "{tmp}", "--repo-id", "org/name"]),
    ("push, unknown model", ["push", "{tmp}/run", "--repo-id", "org/name", "--model", "npo@grid"]),
    ("push, malformed repo id", ["push", "{tmp}/run", "--repo-id", "a/b/c"]),
    ("cnn, missing recipe", ["cnn", "{tmp}/none.yaml"]),
]


def scratch(tmp: Path) -> None:
    """The files the cases name (`CASES`)."""
    recipe = {"model": {"target": f"{tmp}/none"}, "method": [{"name": "npo"}], "quantize": ["rtn-w5"]}
    (tmp / "q.yaml").write_text(yaml.safe_dump({**recipe, "output": {"dir": f"{tmp}/o"}}))
    (tmp / "run").mkdir()
    (tmp / "run" / "certificate.json").write_text("{}")
    (tmp / "run" / "recipe.yaml").write_text("name: a\n")
    (tmp / "run" / "results.jsonl").write_text("{}\n")


def measure(argv: list[str]) -> dict:
    """One run of `argv`: exit code, last error line, wall seconds, peak RSS (MB), torch imported."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    command = [sys.executable, "-c", RUN, *argv]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    stderr = process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)  # this child's own rusage (RUSAGE_CHILDREN is the max of all)
    wall = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    lines = stderr.strip().splitlines()
    return {
        "exit": process.returncode,
        "line": lines[-2] if len(lines) > 1 else "",
        "wall_s": wall,
        "peak_rss_mb": usage.ru_maxrss / 1024,  # kilobytes on Linux
        "torch": lines[-1:] == ["torch imported: True"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs of each; the median time is kept")
    parser.add_argument("--label", default="current", help="the key the results are saved under")
    args = parser.parse_args()
    result = {}
    with tempfile.TemporaryDirectory(prefix="refusal_cost_") as folder:
        tmp = Path(folder)
        scratch(tmp)
        for name, argv in CASES:
            runs = [measure([a.format(tmp=tmp) for a in argv]) for _ in range(args.repeats)]
            result[name] = {
                "exit": runs[0]["exit"],
                "line": runs[0]["line"].replace(str(tmp), "{tmp}"),
                "wall_s": round(statistics.median(r["wall_s"] for r in runs), 3),
                "peak_rss_mb": round(max(r["peak_rss_mb"] for r in runs), 1),
                "torch": any(r["torch"] for r in runs),
            }
            row = result[name]
            print(
                f"{name:32} exit {row['exit']}  {row['wall_s']:5.2f} s  {row['peak_rss_mb']:6.1f} MB",
                f"torch {row['torch']}",
            )
    slow = [n for n, r in result.items() if r["torch"] or r["wall_s"] >= 1 or r["peak_rss_mb"] >= 100]
    print(f"{len(result) - len(slow)}/{len(result)} under 1 s and 100 MB without torch")
    if slow:
        print(f"not: {', '.join(slow)}")
    saved = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    saved[args.label] = {"python": sys.version.split()[0], "repeats": args.repeats, "refusals": result}
    RESULTS.write_text(json.dumps(saved, indent=1) + "\n")


if __name__ == "__main__":
    main()
