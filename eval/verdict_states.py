"""What the fail-closed verdict makes of each cell the old rule left undefined.

The old rule blanked a recovery when unlearning moved the metric by less than the width of that
move's interval; the new one (llm_unlearn/audit/stats.py) sorts every unlearned model × forget
metric into nothing to forget / not forgotten / forgotten first. This script matches each old
verdict row (an older verdict.json, or the verdict table of an older report.md) to the new verdict
of the same cell, or, where the new one has none, to the model's state at full precision, and
counts the transitions.

    python eval/verdict_states.py NAME OLD_VERDICT RUN_DIR [NAME OLD_VERDICT RUN_DIR ...]

OLD_VERDICT: an older verdict.json or report.md; RUN_DIR: a run folder whose verdict.json the
current code wrote (`llm-unlearn report RUN_DIR`). Prints the counts and adds them to
eval/results/verdict_states.json under NAME.

`--smollm2` first rebuilds the SmolLM2 real-model audit's run folders from the committed
eval/results/real_model_audit.json (results lines without per-example values: the rules apply to
the points) under /tmp, renders their reports into eval/results/real_model_audit_<scenario>.md,
and compares them with the reports those files held before.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import yaml

from llm_unlearn.audit.write import write_report
from llm_unlearn.runfolder import RunFolder, read_json

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "eval" / "results"
#: target labels of older run folders
OLD_LABELS = {"grid": "grid-aligned"}


def old_rows(path: Path) -> dict[tuple[str, str, str, str], str]:
    """(model, target, column, metric) -> old verdict, from a verdict.json or a report.md table."""
    if path.suffix == ".json":
        cells = read_json(path)["cells"]
        rows = [(c["model"], c["target"], c["quantizer"], c["metric"], c["verdict"]) for c in cells]
    else:
        rows = []
        for line in path.read_text().splitlines():
            parts = [p.strip() for p in line.strip("|").split("|")]
            if len(parts) == 6 and parts[0] in ("fails", "partly back", "holds", "undefined"):
                verdict, model, target, column, metric, _ = parts
                rows.append((model, target, column, metric, verdict))
    return {(m, OLD_LABELS.get(t, t), q, x): v for m, t, q, x, v in rows}


def transitions(old: Path, run_dir: Path) -> dict:
    new = {
        (c["model"], c["target"], c["quantizer"], c["metric"]): c
        for c in read_json(run_dir / "verdict.json")["cells"]
    }
    counts: Counter[tuple[str, str]] = Counter()
    for (model, target, column, metric), before in old_rows(old).items():
        target = {"grid": "grid-aligned"}.get(target, target)
        cell = new.get((model, target, column, metric)) or new.get((model, target, "fp", metric))
        counts[(before, "missing" if cell is None else cell["verdict"])] += 1
    after = read_json(run_dir / "verdict.json")
    return {
        "old_counts": dict(Counter(v for v in old_rows(old).values())),
        "new_counts": after["counts"],
        "models": [(m["model"], m["target"], m["verdict"]) for m in after["models"]],
        "transitions": {f"{a} -> {b}": n for (a, b), n in sorted(counts.items())},
    }


def smollm2_folders(out: Path) -> list[tuple[str, Path, Path]]:
    """Re-render the SmolLM2 reports from the committed results; (name, old report, run folder)."""
    summary = json.loads((RESULTS / "real_model_audit.json").read_text())
    found = []
    for scenario in ("natural", "released4bit"):
        folder = RunFolder(out / scenario)
        folder.root.mkdir(parents=True, exist_ok=True)
        recipe = yaml.safe_load((ROOT / "recipes" / f"smollm2_austen_{scenario}.yaml").read_text())
        folder.write_recipe(recipe)
        folder.results.write_text("".join(json.dumps(r) + "\n" for r in summary[scenario]))
        report = RESULTS / f"real_model_audit_{scenario}.md"
        old = out / f"old_{scenario}.md"
        # the report as committed before this change (HEAD may already hold the new one)
        old.write_text(
            subprocess.check_output(
                ["git", "show", f"{os.environ.get('OLD_REV', 'a6aab0b')}:{report.relative_to(ROOT)}"],
                cwd=ROOT,
                text=True,
            )
        )
        write_report(folder.root)
        report.write_text(folder.report_md.read_text())
        found.append((f"smollm2_{scenario}", old, folder.root))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("triples", nargs="*", help="NAME OLD_VERDICT RUN_DIR, repeated")
    parser.add_argument("--smollm2", action="store_true", help="re-render and compare the SmolLM2 reports")
    args = parser.parse_args()
    if len(args.triples) % 3:
        sys.exit("give NAME OLD_VERDICT RUN_DIR triples")
    runs = [
        (args.triples[i], Path(args.triples[i + 1]), Path(args.triples[i + 2]))
        for i in range(0, len(args.triples), 3)
    ]
    if args.smollm2:
        runs += smollm2_folders(Path("/tmp/llm_unlearn_smollm2_reports"))
    saved = RESULTS / "verdict_states.json"
    summary = json.loads(saved.read_text()) if saved.exists() else {}
    for name, old, run_dir in runs:
        summary[name] = transitions(old, run_dir)
        print(name, json.dumps(summary[name], indent=1))
    saved.write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
