"""The results tables of the README and the docs, rendered from the committed files in eval/results/.

    python eval/results_tables.py          # rewrite the README's tables from eval/results/
    python eval/results_tables.py --check  # exit 1 if a README table differs from eval/results/

A table sits between `<!-- table: NAME -->` and `<!-- /table -->`; `fill` puts `TABLES[NAME]()`
there. The README keeps the rendered table (GitHub shows it; `tests/test_eval_results_tables.py`
fails when it differs from eval/results/), and the docs' hook (`docs/hooks.py`) fills the same
markers at build time, so neither can drift from the numbers a run committed. After a new demo run
copies its `report.md` to `eval/results/demo_report.md`, run this script and commit the README.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path

from llm_unlearn.audit.report import VERDICT_ORDER

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "eval" / "results"
README = ROOT / "README.md"
MARKER = re.compile(r"(<!-- table: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /table -->)", re.DOTALL)
MIB = 2**20


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows]) + "\n"


def report_table(path: Path, heading: str) -> list[dict[str, str]]:
    """The rows of the first table under `heading` (a line of a report.md) as {column: cell}."""
    lines = path.read_text().splitlines()
    start = lines.index(heading)
    table = []
    for line in lines[start + 1 :]:
        if line.startswith("|"):
            table.append([cell.strip() for cell in line.strip("|").split("|")])
        elif table:
            break
    header, body = table[0], table[2:]
    return [dict(zip(header, row, strict=True)) for row in body]


def _recovery(cell: str) -> str:
    """`67.2 [63.5, 71.0] (94% [85%, 103%])` -> `94 % [85, 103]`: the recovery the cell reports."""
    match = re.search(r"\((-?\d+)% \[(-?\d+)%, (-?\d+)%\]~?\)", cell)
    if match is None:
        raise ValueError(f"no recovery with an interval in {cell!r}")
    point, low, high = match.groups()
    return f"{point} % [{low}, {high}]"


def demo_table(report: Path = RESULTS / "demo_report.md", column: str = "rtn-w4-g32") -> str:
    """The demo's grid-aligned target: the share of the forgotten KnowMem and VerbMem that `column`
    brings back, and KnowMem on retain at full precision, per unlearned model."""
    sections = {
        name: report_table(report, f"### {title}")
        for name, title in [
            ("knowmem_forget", "KnowMem on forget (ROUGE-L F1 × 100, lower = more forgotten)"),
            ("verbmem", "VerbMem on forget (ROUGE-L F1 × 100, lower = more forgotten)"),
            ("knowmem_retain", "KnowMem on retain (ROUGE-L F1 × 100, higher = more utility kept)"),
        ]
    }
    rows = []
    for forget, verb, retain in zip(*sections.values(), strict=True):
        if forget["target"] != "grid-aligned" or forget["model"] == "target":
            continue
        rows.append(
            [forget["model"], _recovery(forget[column]), _recovery(verb[column]), retain["fp"].split(" ")[0]]
        )
    header = [
        "grid-aligned target",
        f"KnowMem forget ({column})",
        f"VerbMem ({column})",
        "KnowMem retain (fp)",
    ]
    return markdown_table(header, rows)


def kernels_table(path: Path = RESULTS / "kernels_vs_simulated.json") -> str:
    """Kernels − simulated, per model × quantizer × metric (×100 scores), as measured."""
    data = json.loads(path.read_text())
    names = {"target": "demo target", "retrain": "demo retrain", "smollm2-135m": "SmolLM2"}
    diffs: dict[tuple[str, str], dict[str, float]] = {}
    for cell in data["cells"]:
        diffs.setdefault((cell["model"], cell["quantizer"]), {})[cell["metric"]] = cell["difference"]
    rows = [
        [names.get(model, model), f"`{quantizer}`"] + [_signed(by_metric[m]) for m in data["metrics"]]
        for (model, quantizer), by_metric in diffs.items()
    ]
    return markdown_table(["model", "quantizer", *data["metrics"]], rows)


def _signed(value: float) -> str:
    return "0" if round(value, 2) == 0 else f"{value:+.2f}".replace("-", "−")


def scale_table(path: Path = RESULTS / "scale_benchmark.json") -> str:
    """Per hidden width: checkpoint and cached-cell sizes, and each process's peak RSS (MiB)."""
    rows = []
    for run in json.loads(path.read_text())["audit_quantized_cache"]["runs"]:
        cell = run["cache_bytes_per_cell"]["target/rtn-w4-g32"]
        rss, ratio = run["peak_rss_bytes"], run["audit_over_one_model"]
        rows.append(
            [
                str(run["hidden"]),
                f"{run['checkpoint_bytes'] / MIB:,.0f} MB",
                f"{cell / MIB:,.0f} MB ({run['cache_over_checkpoint']['target/rtn-w4-g32']})",
                f"{rss['one_model'] / MIB:,.0f} MB",
                f"{rss['audit_fresh'] / MIB:,.0f} MB ({ratio['fresh']} ×)",
                f"{rss['audit_resumed'] / MIB:,.0f} MB ({ratio['resumed']} ×)",
                "identical" if run["resumed_cells_identical"] else "differ",
            ]
        )
    header = ["hidden", "fp checkpoint", "`rtn-w4-g32` cell (× checkpoint)", "peak RSS: one model"]
    header += ["audit, cache filled", "audit, from the cache", "resumed cells"]
    return markdown_table(header, rows)


def smollm2_table(report: Path = RESULTS / "real_model_audit_released4bit.md") -> str:
    """SmolLM2's released-4bit scenario: PrivLeak per model and column (recovery in brackets)."""
    rows = report_table(report, "### PrivLeak (Min-K% Prob AUC vs the retrain model, %, near 0 is ideal)")
    rows = [row for row in rows if row["target"] != "natural"]
    header = [key for key in rows[0] if key != "target"]
    return markdown_table(header, [[row[key] for key in header] for row in rows])


def _worst(cells: list[dict]) -> str:
    """The worst of a model's recovery cells on one route: `fails: relearn-forget-20 verbmem 94 % [86, 101]`,
    worst band first, then highest recovery."""
    if not cells:
        return "–"
    w = min(cells, key=lambda c: (VERDICT_ORDER.index(c["verdict"]), -c["recovery"]))
    ci = w["recovery_ci"]
    interval = f" [{ci[0]:.0f}, {ci[1]:.0f}]" if ci else ""
    return f"{w['verdict']}: {w['quantizer']} {w['metric']} {w['recovery']:.0f} %{interval}"


def routes_table(path: Path = RESULTS / "demo_verdict.json") -> str:
    """The demo per unlearned model: its verdict (verdict.json's `models`), and the worst column of
    each route among the metrics it forgot (recovery cells of KnowMem, VerbMem, PrivLeak), with the
    recovery and its interval."""
    verdict = json.loads(path.read_text())
    rows = []
    for m in sorted(verdict["models"], key=lambda m: (m["target"], m["model"])):
        mine = [
            c
            for c in verdict["cells"]
            if (c["model"], c["target"]) == (m["model"], m["target"]) and c["recovery"] is not None
        ]
        worst = [_worst([c for c in mine if c["route"] == route]) for route in ("shipped", "attack")]
        rows.append([f"{m['model']}@{m['target']}", f"**{m['verdict']}**", *worst])
    return markdown_table(["model@target", "verdict", "worst as shipped", "worst under attack"], rows)


def wmdp_table(
    results: Path = RESULTS / "demo_wmdp_cells.json", verdict: Path = RESULTS / "demo_wmdp_verdict.json"
) -> str:
    """The offline WMDP demo: each model's WMDP-Bio and MMLU accuracy at full precision with its
    interval (its results.jsonl's cells), and an unlearned model's verdict with its worst column
    (verdict.json)."""
    cells = json.loads(results.read_text())
    verdicts = {(m["model"], m["target"]): m for m in json.loads(verdict.read_text())["models"]}
    gated = json.loads(verdict.read_text())["cells"]

    def accuracy(model: str, target: str, metric: str) -> str:
        (cell,) = [
            c
            for c in cells
            if (c["model"], c["target"], c["quantizer"], c["metric"]) == (model, target, "fp", metric)
        ]
        return f"{cell['agg_value']:.2f} [{cell['ci'][0]:.2f}, {cell['ci'][1]:.2f}]"

    rows = []
    for model, target in dict.fromkeys((c["model"], c["target"]) for c in cells):
        row = [f"{model}@{target}" if target != "-" else model]
        row += [accuracy(model, target, m) for m in ("wmdp_bio_continuation", "mmlu_continuation")]
        if (model, target) in verdicts:
            mine = [
                c for c in gated if (c["model"], c["target"]) == (model, target) and c["recovery"] is not None
            ]
            row += [f"**{verdicts[model, target]['verdict']}**", _worst(mine)]
        else:
            row += ["–", "–"]
        rows.append(row)
    header = ["model", "WMDP-Bio (fp)", "MMLU (fp)", "verdict", "worst column"]
    return markdown_table(header, rows)


TABLES: dict[str, Callable[[], str]] = {
    "routes": routes_table,
    "wmdp": wmdp_table,
    "demo": demo_table,
    "demo-quick": lambda: demo_table(RESULTS / "demo_quick_report.md"),
    "smollm2-routes": lambda: routes_table(RESULTS / "real_model_audit_natural_verdict.json"),
    "kernels": kernels_table,
    "scale": scale_table,
    "smollm2": smollm2_table,
}


def fill(text: str) -> str:
    """`text` with every marked table rendered afresh from eval/results/."""
    return MARKER.sub(lambda m: m.group(1) + TABLES[m.group("name")]() + m.group(4), text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the README differs, write nothing")
    args = parser.parse_args()
    text = README.read_text()
    if args.check:
        sys.exit(0 if fill(text) == text else 1)
    README.write_text(fill(text))


if __name__ == "__main__":
    main()
