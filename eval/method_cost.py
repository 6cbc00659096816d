"""Per-step cost of each unlearning method of the demo recipe, relative to GA_GDR.

    python eval/method_cost.py [--steps 30] [--out eval/results/method_cost.json]

Each method of `recipes/demo.yaml` (natural target) trains for a few warm-up steps and then
`--steps` timed optimizer steps on the demo model, one thread. SURE's one-time saliency pass
and every method's trainer set-up (NPO's reference NLL, a frozen reference copy) are timed
apart from the steps. Prints and saves JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch
from transformers import TrainerCallback

from llm_unlearn.data.collate import ForgetRetainDataset, chunk_texts
from llm_unlearn.data.corpora import load_muse
from llm_unlearn.methods import METHODS
from llm_unlearn.models import demo_checkpoints, load_model, load_tokenizer
from llm_unlearn.recipe import load_recipe
from llm_unlearn.trainer import UnlearningTrainer, training_config

ROOT = Path(__file__).resolve().parents[1]
WARMUP = 3


class StepClock(TrainerCallback):
    """Wall time of each optimizer step after the warm-up ones."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self._start = 0.0

    def on_step_begin(self, args, state, control, **kwargs) -> None:
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs) -> None:
        if state.global_step > WARMUP:
            self.times.append(time.perf_counter() - self._start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--out", type=Path, default=ROOT / "eval" / "results" / "method_cost.json")
    args = parser.parse_args()
    torch.set_num_threads(1)

    recipe = load_recipe(ROOT / "recipes" / "demo.yaml")
    target = demo_checkpoints()["target"]
    tokenizer = load_tokenizer(target)
    corpus = load_muse("demo", {"raw": {recipe.data.forget_split, recipe.data.retain_split}})
    forget = chunk_texts(corpus.get("raw", recipe.data.forget_split), tokenizer, recipe.data.max_length)
    retain = chunk_texts(corpus.get("raw", recipe.data.retain_split), tokenizer, recipe.data.max_length)
    rows = {}
    for method in recipe.method:
        if recipe.target_label not in recipe.targets(method):
            continue
        model = load_model(target)
        prepared = {}  # what the run's modifiers resolve from the target (`Modifier.prepare`)
        for modifier, section in method.active_modifiers():
            prepared.update(modifier.prepare(section, model))
        config = training_config(recipe, method, Path(tempfile.mkdtemp()), **prepared)
        config.max_steps = WARMUP + args.steps
        config.disable_tqdm = True
        config.logging_steps = 10_000
        spec = METHODS.get(method.name)
        clock = StepClock()
        start = time.perf_counter()
        trainer = UnlearningTrainer(
            model=model,
            args=config,
            train_dataset=ForgetRetainDataset(forget, retain if spec.retain_loss else None, seed=0),
            processing_class=tokenizer,
            callbacks=[clock],
        )
        setup = time.perf_counter() - start
        trainer.train()
        rows[method.run_name] = {
            "seconds_per_step": sum(clock.times) / len(clock.times),
            "setup_seconds": round(setup, 2),
            "trained_share": trainer.saliency["param_share"] if trainer.saliency else 1.0,
        }
    base = rows["ga_gdr"]["seconds_per_step"]
    for row in rows.values():
        row["relative_to_ga_gdr"] = round(row["seconds_per_step"] / base, 2)
        row["seconds_per_step"] = round(row["seconds_per_step"], 4)
    figures = {
        "cores": os.cpu_count(),
        "threads": 1,
        "batch": recipe.train["per_device_train_batch_size"],
        "max_length": recipe.data.max_length,
        "timed_steps": args.steps,
        "methods": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=1) + "\n")
    print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
