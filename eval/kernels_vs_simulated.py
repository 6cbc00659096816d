"""The demo's metrics with bitsandbytes' own layers against the audit's simulation (dequantized weights).

    python eval/kernels_vs_simulated.py [--run runs/demo_full] [--model NAME=FOLDER ...]
        [--out eval/results/kernels_vs_simulated.json]

Models: the demo's target and retrain checkpoints (built on first use), and with `--run` every
unlearned model of that finished demo run; `--model` evaluates the given checkpoints instead of
the demo's (on the demo's texts). For each model and each of bnb-nf4, bnb-fp4 and bnb-int8, the demo recipe's
metrics are computed twice with `llm_unlearn.metrics.evaluate`: `simulated` (the `bnb-*`
quantizer's dequantized weights in float32, what the audit reports) and `kernels` (the model
through `llm_unlearn.kernels.bnb.with_bnb_kernels`, bitsandbytes' Linear4bit / Linear8bitLt on
CPU), with their difference (kernels - simulated) per cell.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from llm_unlearn.data.corpora import DEMO, load_muse
from llm_unlearn.kernels.bnb import with_bnb_kernels
from llm_unlearn.metrics import EvalContext, evaluate, required_splits
from llm_unlearn.models import demo_checkpoints, load_model, load_tokenizer
from llm_unlearn.quant import get_quantizer

ROOT = Path(__file__).resolve().parents[1]
METRICS = ["verbmem", "knowmem_forget", "knowmem_retain", "privleak"]  # recipes/demo.yaml
QUANTIZERS = ["bnb-int8", "bnb-nf4", "bnb-fp4"]  # int8 first: the one that rounds activations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="a finished `llm-unlearn demo --full` folder")
    parser.add_argument("--out", type=Path, default=ROOT / "eval" / "results" / "kernels_vs_simulated.json")
    parser.add_argument("--model", action="append", default=[], help="NAME=FOLDER, instead of the demo's")
    args = parser.parse_args()

    pairs = [m.split("=", 1) for m in args.model]
    models = {name: Path(path) for name, path in pairs} if pairs else dict(demo_checkpoints())
    if args.run is not None:
        for folder in sorted((args.run / "models").iterdir()):
            if not folder.name.startswith("target@") and (folder / "config.json").is_file():
                models[folder.name] = folder
    ctx = EvalContext(
        tokenizer=load_tokenizer(next(iter(models.values()))),
        corpus=load_muse(DEMO, required_splits(METRICS)),
    )
    rows = []
    for model_name, path in models.items():
        for quantizer in QUANTIZERS:
            start = time.perf_counter()
            simulated = evaluate(
                get_quantizer(quantizer).quantize_model(load_model(path)).eval(), ctx, METRICS
            )
            kernels = evaluate(with_bnb_kernels(load_model(path), quantizer), ctx, METRICS)
            for metric in METRICS:
                sim, ker = simulated[metric]["agg_value"], kernels[metric]["agg_value"]
                rows.append(
                    {
                        "model": model_name,
                        "quantizer": quantizer,
                        "metric": metric,
                        "simulated": sim,
                        "kernels": ker,
                        "difference": ker - sim,
                    }
                )
                print(f"{model_name} {quantizer} {metric}: simulated {sim:.3f} kernels {ker:.3f}", flush=True)
            print(f"  ({time.perf_counter() - start:.0f} s)", flush=True)
            save(args.out, rows)  # after every cell group: a long run keeps what it measured


def save(out: Path, rows: list[dict[str, object]]) -> None:
    quantizers = sorted({r["quantizer"] for r in rows})
    summary = {  # PrivLeak is a different scale (a relative AUC gap, often ±100): left out here
        q: max(abs(r["difference"]) for r in rows if r["quantizer"] == q and r["metric"] != "privleak")
        for q in quantizers
    }
    figures = {
        "threads": torch.get_num_threads(),
        "metrics": METRICS,
        "max_abs_difference_excluding_privleak": summary,
        "cells": rows,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(figures, indent=1) + "\n")


if __name__ == "__main__":
    main()
