"""Run a CNN recipe: original and Retrain (cached), each unlearning method, metrics, AG table.

Writes to `output.dir`: checkpoints/*.safetensors (original and retrain are reused when their
configuration matches the `.json` beside them), results.json and ag_table.md.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from safetensors.torch import load_file, save_file
from torch import nn

from llm_unlearn.cnn.data import Split, make_split
from llm_unlearn.cnn.loop import fit
from llm_unlearn.cnn.methods import METHODS
from llm_unlearn.cnn.metrics import METRIC_NAMES, average_gap, evaluate
from llm_unlearn.cnn.models import build_model
from llm_unlearn.cnn.qat import quantize_model
from llm_unlearn.cnn.recipe import CNNRecipe, OptimSection

log = logging.getLogger("llm_unlearn.cnn")
CALIBRATION_BATCH = 256


def load_split(recipe: CNNRecipe) -> Split:
    d = recipe.data
    return make_split(d.source, d.path, d.val_fraction, d.forget_ratio, d.forget_classes,
                      d.max_train, d.max_test, recipe.seed, d.downsample)  # fmt: skip


def new_model(recipe: CNNRecipe, split: Split) -> nn.Module:
    """A freshly initialised (seeded) model, quantized per the recipe, quantizers initialised on
    a batch of train (LSQ's step init needs data)."""
    torch.manual_seed(recipe.seed)
    m = recipe.model
    model = build_model(m.arch, split.num_classes, split.x_train.shape[1], m.width)
    model = quantize_model(model, m.weight_bits, m.act_bits, m.full_precision_ends)
    with torch.no_grad():
        model.train()(split.x_train[:CALIBRATION_BATCH])
    return model


def _key(recipe: CNNRecipe, section: OptimSection, role: str) -> dict[str, Any]:
    data = recipe.data.model_dump(mode="json")
    if role == "original":  # trained on all of train: one checkpoint serves every forget set
        data = {k: v for k, v in data.items() if k not in ("forget_ratio", "forget_classes")}
    return {"role": role, "seed": recipe.seed, "data": data, "model": recipe.model.model_dump(mode="json"),
            "train": section.model_dump(mode="json")}  # fmt: skip


def trained_from_scratch(
    recipe: CNNRecipe, split: Split, role: str, accelerator: Accelerator, folder: Path
) -> tuple[nn.Module, dict[str, Any]]:
    """`original` or `retrain`, loaded from `folder` when a checkpoint with the same
    configuration is there, else trained and saved; returns (model, its row's timing fields)."""
    section = getattr(recipe, role)
    key = _key(recipe, section, role)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    weights, meta = folder / f"{role}-{digest}.safetensors", folder / f"{role}-{digest}.json"
    model = new_model(recipe, split)
    if weights.is_file() and meta.is_file() and json.loads(meta.read_text())["key"] == key:
        model.load_state_dict(load_file(weights))
        return model, {"wall_s": json.loads(meta.read_text())["wall_s"], "cached": True}
    start = time.perf_counter()
    method = METHODS.get(role)(split.num_classes, recipe.seed)
    model = fit(model, method, split, recipe.settings(section), accelerator)
    wall = time.perf_counter() - start
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, weights)
    meta.write_text(json.dumps({"key": key, "wall_s": wall}, indent=1))
    return model, {"wall_s": wall, "cached": False}


def run_cnn(recipe: CNNRecipe) -> Path:
    """Run every step of `recipe`; returns the output folder."""
    out = recipe.output.dir
    ckpt = out / "checkpoints"
    if recipe.threads is not None:
        torch.set_num_threads(recipe.threads)
    accelerator = Accelerator()
    split = load_split(recipe)
    log.info("data %s: %s", recipe.data.source, split.sizes())
    rows: list[dict[str, Any]] = []
    original, timing = trained_from_scratch(recipe, split, "original", accelerator, ckpt)
    rows.append({"method": "original", **evaluate(original, split), **timing})
    retrain, timing = trained_from_scratch(recipe, split, "retrain", accelerator, ckpt)
    rows.append({"method": "retrain", **evaluate(retrain, split), **timing})
    for spec in recipe.methods:
        start = time.perf_counter()
        method = METHODS.get(spec.name)(split.num_classes, recipe.seed, **spec.options())
        model = fit(copy.deepcopy(original), method, split, recipe.settings(spec), accelerator)
        wall = time.perf_counter() - start
        save_file(
            {k: v.contiguous() for k, v in model.state_dict().items()}, ckpt / f"{spec.run_name}.safetensors"
        )
        row = {"method": spec.run_name, **evaluate(model, split), "wall_s": wall}
        if hasattr(method, "history"):
            row["agr_weights"] = method.history
        if method.diagnostics:
            row["diagnostics"] = method.diagnostics
        rows.append(row)
        log.info("%s", row)
    for row in rows:
        row["AG"] = average_gap(row, rows[1])
    out.mkdir(parents=True, exist_ok=True)
    meta = {"recipe": recipe.model_dump(mode="json"), "sizes": split.sizes()}
    (out / "results.json").write_text(json.dumps({**meta, "rows": rows}, indent=1))
    (out / "ag_table.md").write_text(ag_table(rows, recipe))
    return out


def ag_table(rows: list[dict[str, Any]], recipe: CNNRecipe) -> str:
    """Markdown: FA/RA/TA/MIA/AG (%) and wall seconds per method, Retrain's row the reference."""
    m, d = recipe.model, recipe.data
    forget = f"classes {list(d.forget_classes)}" if d.forget_classes else f"{d.forget_ratio:.0%} random"
    head = (f"# {recipe.name}: {m.arch} (width {m.width:g}) W{m.weight_bits}A{m.act_bits} on {d.source}, "
            f"forget {forget}, seed {recipe.seed}\n\n"
            "| method | FA | RA | TA | MIA | AG | wall s |\n|---|---|---|---|---|---|---|\n")  # fmt: skip
    lines = [
        f"| {r['method']} | "
        + " | ".join(f"{r[k]:.2f}" for k in (*METRIC_NAMES, "AG"))
        + f" | {r['wall_s']:.1f} |"
        for r in rows
    ]
    return (
        head
        + "\n".join(lines)
        + "\n\nAG = mean |metric − Retrain's| over FA, RA, TA, MIA (lower is better).\n"
    )
