"""Per-step cost of each unlearning method of the demo recipe, relative to GA_GDR.

    python eval/method_cost.py [--steps 30] [--out eval/results/method_cost.json]
    python eval/method_cost.py --hand [--steps 30]   # the trainer against a hand-written loop

Each method of `recipes/demo.yaml` (natural target) trains for a few warm-up steps and then
`--steps` timed optimizer steps on the demo model, one thread. SURE's one-time saliency pass
and every method's trainer set-up (NPO's reference NLL, a frozen reference copy) are timed
apart from the steps. With `--hand`, GA_GDR and GA_KLR instead: the trainer's steps against a
plain PyTorch loop (same model, batches, optimizer and clipping; KL by `F.kl_div`), timed in
alternating rounds in this process, saved under the key "trainer_over_hand_loop". Prints and saves JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedTokenizerBase, TrainerCallback

from llm_unlearn.data.collate import ForgetRetainDataset, chunk_texts
from llm_unlearn.data.corpora import load_muse
from llm_unlearn.methods import METHODS
from llm_unlearn.models import demo_checkpoints, load_model, load_tokenizer
from llm_unlearn.recipe import Recipe, load_recipe
from llm_unlearn.trainer import UnlearningTrainer, training_config

ROOT = Path(__file__).resolve().parents[1]
WARMUP = 3
#: the methods `--hand` compares with a hand-written loop: GA_KLR's reference forward, GA_GDR as the control
HAND_METHODS = ("ga_gdr", "ga_klr")


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


def _shifted_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100)


def _kl(logits: torch.Tensor, ref_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean over label positions of KL(p_ref ‖ p_θ), as a user would write it."""
    kl = F.kl_div(
        logits[:, :-1].float().log_softmax(-1),
        ref_logits[:, :-1].float().log_softmax(-1),
        log_target=True,
        reduction="none",
    ).sum(-1)
    mask = labels[:, 1:] != -100
    return (kl * mask).sum() / mask.sum()


def hand_step(
    model: nn.Module,
    ref_model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: dict[str, torch.Tensor],
    method: str,
    weight: float,
) -> float:
    """One optimizer step of GA + GDR or GA + KLR, written out by hand; its loss."""
    forget = model(input_ids=batch["forget_input_ids"], attention_mask=batch["forget_attention_mask"]).logits
    loss = -_shifted_ce(forget, batch["forget_labels"])
    x = {"input_ids": batch["retain_input_ids"], "attention_mask": batch["retain_attention_mask"]}
    retain = model(**x).logits
    if method == "ga_klr":
        with torch.no_grad():
            ref = ref_model(**x).logits
        loss = loss + weight * _kl(retain, ref, batch["retain_labels"])
    else:
        loss = loss + weight * _shifted_ce(retain, batch["retain_labels"])
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # the Trainer's max_grad_norm default
    optimizer.step()
    optimizer.zero_grad()
    return loss.item()


def hand_loop_ratios(
    recipe: Recipe,
    target: Path,
    tokenizer: PreTrainedTokenizerBase,
    forget: list[list[int]],
    retain: list[list[int]],
    steps: int,
) -> dict:
    """Per method of HAND_METHODS, the trainer's seconds per step over the hand loop's: both train
    the same target on the same batches, in alternating rounds of `steps`, the fastest round counts."""
    out = {}
    for name in HAND_METHODS:
        method = recipe.method[0].model_copy(update={"name": name})  # the demo's first: plain GA_GDR
        config = training_config(recipe, method, Path(tempfile.mkdtemp()))
        config.max_steps, config.disable_tqdm, config.logging_steps = WARMUP + steps, True, 10_000
        dataset = ForgetRetainDataset(forget, retain, seed=0)
        best = {"trainer": float("inf"), "hand": float("inf")}
        for _ in range(2):
            clock = StepClock()
            trainer = UnlearningTrainer(
                model=load_model(target),
                args=config,
                train_dataset=dataset,
                processing_class=tokenizer,
                callbacks=[clock],
            )
            batches = [b for _, b in zip(range(WARMUP + steps), trainer.get_train_dataloader(), strict=False)]
            with torch.no_grad():  # the loss both compute at θ₀ on the first batch: the same objective
                first = trainer.compute_loss(trainer.model, batches[0]).item()
            trainer.train()
            best["trainer"] = min(best["trainer"], sum(clock.times) / len(clock.times))
            model = load_model(target).train()
            ref_model = load_model(target).eval().requires_grad_(False)
            optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=0.0)
            times, losses = [], []
            for k, batch in enumerate(batches):
                start = time.perf_counter()
                losses.append(hand_step(model, ref_model, optimizer, batch, name, config.retain_weight))
                if k >= WARMUP:
                    times.append(time.perf_counter() - start)
            best["hand"] = min(best["hand"], sum(times) / len(times))
        out[name] = {
            "trainer_seconds_per_step": round(best["trainer"], 4),
            "hand_seconds_per_step": round(best["hand"], 4),
            "trainer_over_hand": round(best["trainer"] / best["hand"], 3),
            "first_loss_abs_diff": abs(first - losses[0]),
            "target": "<= 1.1",
        }
        print(json.dumps({name: out[name]}), flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--hand", action="store_true", help="GA_GDR and GA_KLR against a hand-written loop")
    parser.add_argument("--out", type=Path, default=ROOT / "eval" / "results" / "method_cost.json")
    args = parser.parse_args()
    torch.set_num_threads(1)

    recipe = load_recipe(ROOT / "recipes" / "demo.yaml")
    target = demo_checkpoints()["target"]
    tokenizer = load_tokenizer(target)
    corpus = load_muse("demo", {"raw": {recipe.data.forget_split, recipe.data.retain_split}})
    forget = chunk_texts(corpus.get("raw", recipe.data.forget_split), tokenizer, recipe.data.max_length)
    retain = chunk_texts(corpus.get("raw", recipe.data.retain_split), tokenizer, recipe.data.max_length)
    if args.hand:
        figures = json.loads(args.out.read_text()) if args.out.is_file() else {}
        figures["trainer_over_hand_loop"] = {
            "what": "seconds per optimizer step, the fastest of 2 alternating rounds, one thread",
            "timed_steps": args.steps,
            "command": "python eval/method_cost.py --hand --steps " + str(args.steps),
            "methods": hand_loop_ratios(recipe, target, tokenizer, forget, retain, args.steps),
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(figures, indent=1) + "\n")
        return
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
