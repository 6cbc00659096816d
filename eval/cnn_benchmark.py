"""The CNN track's paper table (methods × dataset × bit width), on the data this machine has.

    python eval/cnn_benchmark.py [--cifar10 DIR] [--cifar100 DIR] [--svhn DIR] [--bits 4 2]
                                 [--max-train 8000] [--width 8] [--out eval/results]

Fashion-MNIST is read from Debian's `dataset-fashion-mnist` (/usr/share/datasets/fashion-mnist)
or --fashion-mnist DIR; CIFAR and SVHN run only where their folders are given. Every run uses the
same settings (random forgetting of --forget-ratio, a ResNet-18 of --width, W{b}A{b} LSQ), prints
the AG table beside the papers' figures (METHODS.md) and says what it skipped. Writes
cnn_<dataset>.json and .md per dataset under --out; the run folders go under --work.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from llm_unlearn.cnn.data import FASHION_MNIST_DIR
from llm_unlearn.cnn.recipe import validate_cnn_recipe
from llm_unlearn.cnn.run import run_cnn

ROOT = Path(__file__).resolve().parents[1]
# AG (%) the papers report (METHODS.md, CNN track): 4-bit ResNet-18, random forgetting
PAPER_AG = {
    ("cifar100", 0.1): {"qmul": 3.11, "best baseline": 6.05},
    ("cifar100", 0.3): {"oeu": 1.98, "qmul": 3.90, "oeu+global": 5.40},
}
UNLEARN = ("ft", "ga", "rl", "salun", "qmul", "oeu", "oeu+global")


def methods(epochs: int, batch_size: int) -> list[dict]:
    """Every method with one epoch budget; lr as METHODS.md's usual settings, GA's raised from 1e-4
    because a short CPU run takes far fewer steps than the papers' 5 epochs of CIFAR."""
    common = {"epochs": epochs, "batch_size": batch_size}
    return [
        {"name": "ft", "lr": 0.01, **common},
        {"name": "ga", "lr": 1e-3, **common},
        {"name": "rl", "lr": 0.01, **common},
        {"name": "salun", "lr": 0.013, "saliency_ratio": 0.5, **common},
        {"name": "qmul", "lr": 0.01, **common},
        {"name": "oeu", "lr": 0.01, **common},
        {"name": "oeu", "lr": 0.01, "scope": "global", **common},
    ]


def recipe_for(source: str, path: Path | None, bits: int, args: argparse.Namespace, work: Path) -> dict:
    scratch = {"epochs": args.scratch_epochs, "lr": 0.05, "batch_size": args.batch_size, "schedule": "cosine"}
    return {
        "name": f"cnn_{source}_w{bits}a{bits}",
        "seed": args.seed,
        "data": {
            "source": source,
            "path": str(path) if path else None,
            "forget_ratio": args.forget_ratio,
            "max_train": args.max_train,
            "max_test": args.max_test,
            "augment": "none" if source == "fashion_mnist" else "crop_flip",
        },
        "model": {"arch": "resnet18", "width": args.width, "weight_bits": bits, "act_bits": bits},
        "original": scratch,
        "retrain": scratch,
        "methods": methods(args.epochs, args.batch_size),
        "output": {"dir": str(work / f"{source}_w{bits}")},
    }


def table(source: str, runs: dict[int, list[dict]], forget_ratio: float) -> str:
    paper = PAPER_AG.get((source, forget_ratio), {})
    bits = sorted(runs)
    head = "| method | " + " | ".join(f"W{b}A{b} FA / RA / TA / MIA | AG" for b in bits) + " | paper AG |\n"
    head += "|---|" + "---|---|" * len(bits) + "---|\n"
    lines = []
    for name in ("original", "retrain", *UNLEARN):
        cells = []
        for b in bits:
            row = next((r for r in runs[b] if r["method"] == name), None)
            metrics = " / ".join(f"{row[k]:.2f}" for k in ("FA", "RA", "TA", "MIA")) if row else ""
            cells.append(f"{metrics} | {row['AG']:.2f}" if row else "— | —")
        ref = paper.get(name, "")
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {ref} |")
    note = (
        f"Papers' figures for {source} at {forget_ratio:.0%}: {paper}"
        if paper
        else f"The papers report no figure for {source} at {forget_ratio:.0%} forgetting; "
        + "theirs (METHODS.md): "
        + "; ".join(f"{s} {r:.0%}: {v}" for (s, r), v in PAPER_AG.items())
    )
    return head + "\n".join(lines) + "\n\n" + note + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fashion-mnist", type=Path, default=FASHION_MNIST_DIR)
    parser.add_argument("--cifar10", type=Path)
    parser.add_argument("--cifar100", type=Path)
    parser.add_argument("--svhn", type=Path)
    parser.add_argument("--bits", type=int, nargs="+", default=[4])
    parser.add_argument("--forget-ratio", type=float, default=0.1)
    parser.add_argument("--max-train", type=int, default=8000, help="subsample train (CPU budget)")
    parser.add_argument("--max-test", type=int, default=4000)
    parser.add_argument("--width", type=int, default=8, help="ResNet-18 base width (64 is the paper's)")
    parser.add_argument("--scratch-epochs", type=int, default=10, help="original and Retrain")
    parser.add_argument("--epochs", type=int, default=4, help="each unlearning method")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "eval" / "results")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "llm_unlearn_cnn_bench")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", force=True)
    torch.set_num_threads(int(os.environ.get("CNN_BENCH_THREADS", "1")))

    sources = {"fashion_mnist": args.fashion_mnist, "cifar10": args.cifar10, "cifar100": args.cifar100,
               "svhn": args.svhn}  # fmt: skip
    skipped = [f"{s}: no folder given (--{s.replace('_', '-')})" for s, p in sources.items() if p is None]
    skipped += [f"{s}: {p} is not a folder" for s, p in sources.items() if p is not None and not p.is_dir()]
    for line in skipped:
        print(f"skipped {line}")
    args.out.mkdir(parents=True, exist_ok=True)
    for source, path in sources.items():
        if path is None or not path.is_dir():
            continue
        runs: dict[int, list[dict]] = {}
        start = time.perf_counter()
        for bits in args.bits:
            recipe = validate_cnn_recipe(recipe_for(source, path, bits, args, args.work), where="benchmark")
            out = run_cnn(recipe)
            runs[bits] = json.loads((out / "results.json").read_text())["rows"]
            sizes = json.loads((out / "results.json").read_text())["sizes"]
        wall = time.perf_counter() - start
        text = table(source, runs, args.forget_ratio)
        settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
        header = (
            f"# CNN benchmark on {source}\n\nResNet-18 width {args.width}, {args.forget_ratio:.0%} random "
            f"forgetting, sizes {sizes}, original/Retrain {args.scratch_epochs} epochs, each method "
            f"{args.epochs} epochs; total wall {wall / 60:.1f} min on {os.cpu_count()} cores "
            f"({platform.processor() or platform.machine()}).\n\n"
        )
        print(header + text)
        (args.out / f"cnn_{source}.md").write_text(
            header + text + "\nSkipped: " + ("; ".join(skipped) or "none") + "\n"
        )
        paper = {f"{s}@{r}": v for (s, r), v in PAPER_AG.items()}
        record = {"source": source, "settings": settings, "sizes": sizes, "wall_s": wall, "runs": runs}
        record |= {"paper_ag": paper, "skipped": skipped}
        (args.out / f"cnn_{source}.json").write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
