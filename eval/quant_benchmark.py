"""Quantization time per backend on the demo model, and bucket overlap of each baseline at 4 and 8 bits.

    python eval/quant_benchmark.py --run runs/demo_full [--out eval/results/quant_benchmark.json]

`--run` is a finished demo run folder (`llm-unlearn demo --full`): its unlearned checkpoints are
compared with their targets under each quantizer below, reusing the run's cached quantized models
(`quantized/`). Times are wall-clock seconds for one quantization of the demo target (calibrated
quantizers on the recipe's default calibration: 32 windows of 128 tokens of the generic text).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from llm_unlearn.audit.run import AuditModel, quantized
from llm_unlearn.models import demo_checkpoints, load_model, load_tokenizer
from llm_unlearn.quant import get_quantizer
from llm_unlearn.quant.calibration import GENERIC_TEXT, build_calibration
from llm_unlearn.quant.overlap import diagnose, quantize_with_codes, target_weights
from llm_unlearn.recipe import CalibrationSection

ROOT = Path(__file__).resolve().parents[1]
TIMED = ["rtn-w4-g32", "rtn-w8", "gptq-w4-g32", "gptq-w4-g128", "gptq-w8-g128", "awq-w4-g32"]
TIMED += ["awq-w4-g128", "bnb-nf4", "bnb-fp4", "bnb-int8"]
OVERLAP = {
    4: ["rtn-w4-g32", "gptq-w4-g32", "awq-w4-g32", "bnb-nf4", "bnb-fp4"],
    8: ["rtn-w8", "gptq-w8-g128", "bnb-int8"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="a finished `llm-unlearn demo --full` folder")
    parser.add_argument("--out", type=Path, default=ROOT / "eval" / "results" / "quant_benchmark.json")
    args = parser.parse_args()

    target = demo_checkpoints()["target"]
    section = CalibrationSection()
    calibration = build_calibration(
        [GENERIC_TEXT.read_text()],
        load_tokenizer(target),
        "generic",
        section.samples,
        section.seq_len,
        section.seed,
    )
    figures: dict[str, object] = {"cores": os.cpu_count(), "threads": torch.get_num_threads()}
    seconds = {}
    for name in TIMED:
        quantizer = get_quantizer(name)
        quantizer.calibration = calibration
        model = load_model(target)
        start = time.perf_counter()
        quantize_with_codes(quantizer, model)
        seconds[name] = round(time.perf_counter() - start, 2)
        print(f"{name}: {seconds[name]} s")
    figures["quantize_seconds"] = seconds

    targets = {"natural": target, "grid": args.run / "models" / "target@grid"}
    rows = []
    for folder in sorted((args.run / "models").iterdir()):
        method, _, target_name = folder.name.partition("@")
        if method == "target" or not (folder / "config.json").is_file():
            continue
        unlearned = AuditModel(method, target_name, folder)
        reference = AuditModel("target", target_name, targets[target_name])
        weights_u, weights_t = target_weights(load_model(folder)), target_weights(load_model(reference.path))
        for bits, names in OVERLAP.items():
            for name in names:
                quantizer = get_quantizer(name)
                quantizer.calibration = calibration
                in_basis = quantizer.codes_in_weight_basis
                _, codes_u = quantized(unlearned, quantizer, args.run / "quantized")
                _, codes_t = quantized(reference, quantizer, args.run / "quantized")
                overall = diagnose(
                    weights_t if in_basis else None, weights_u if in_basis else None, codes_t, codes_u
                )["overall"]
                rows.append(
                    {"method": method, "target": target_name, "bits": bits, "quantizer": name, **overall}
                )
    figures["overlap"] = rows
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=1) + "\n")
    print("| method | target | quantizer | bucket overlap | same code | update kept |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        kept = "–" if r.get("update_kept") is None else f"{r['update_kept']:.1%}"
        print(
            f"| {r['method']} | {r['target']} | {r['quantizer']} | {r['bucket_overlap']:.2%} | "
            f"{r['code_overlap']:.2%} | {kept} |"
        )


if __name__ == "__main__":
    main()
