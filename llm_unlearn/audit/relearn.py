"""The relearning check: does a little fine-tuning bring the forgotten knowledge back?

Each `relearn` entry of a recipe fine-tunes every audited model (target, retrain and each unlearned
model, so the columns compare like with like) for `steps` optimizer steps on a seeded slice of
`samples` raw texts, with the plain next-token loss at a constant learning rate; the audit then
evaluates the result at full precision with the same metrics, in a column of its own beside the
quantizers. On forget text this is the relearning attack (Hu et al. 2024, "Jogging the Memory of
Unlearned LLMs Through Targeted Relearning Attacks"); on retain text it checks that benign
fine-tuning does not undo the unlearning. Its recovery ratio reads as a quantizer's:

    recovery = (M(relearn(u)) − M(u)) / (M(t) − M(u))        t, u at full precision, not relearned

An entry with a `lora` section relearns through a LoRA adapter instead (Hu et al. 2024 and Łucki et
al. 2024, arXiv 2409.18025: what a user with one consumer GPU does): every weight W of the model stays
frozen and peft trains A (r × in) and B (out × r, zero at the start) on the adapted modules; the
evaluated model is W + (alpha / r)·B·A (peft's `merge_and_unload`, huggingface/peft
src/peft/tuners/lora/layer.py `get_delta_weight`).

Relearned checkpoints (for LoRA the adapter alone, `adapter_model.safetensors` and
`adapter_config.json`, merged into the source checkpoint when loaded) are cached in
`relearned/<model>@<target>/<column>/` of the run folder with the settings that made them
(`relearn.json`, written last), so a resumed audit does not retrain.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from peft import LoraConfig, get_peft_model
from transformers import PreTrainedModel, Trainer, TrainingArguments

from llm_unlearn.columns import Column, register_column
from llm_unlearn.context import window_length
from llm_unlearn.data.benchmark import training_texts
from llm_unlearn.data.collate import LMDataset, UnlearningCollator, chunk_texts
from llm_unlearn.data.corpora import MuseCorpus
from llm_unlearn.data.tofu import TofuCorpus
from llm_unlearn.errors import UserError
from llm_unlearn.models import load_merged, load_model, load_tokenizer, model_skeleton, train_and_save
from llm_unlearn.recipe import LoraSection, Recipe
from llm_unlearn.runfolder import RunFolder, write_json

#: the `method` of a relearn column's recorded configuration (a quantizer's names its algorithm)
RELEARN_METHOD = "relearn"
CONFIG_FILE = "relearn.json"


@register_column("relearn")
@dataclass(frozen=True)
class Relearning(Column):
    """One relearn entry of a recipe, resolved: its column name, its slice of text, its settings.

    A column that changes the model rather than a format it ships in: evaluated at full precision,
    no codes, and a cell recorded under other settings is stale (a re-run may change an entry but
    keep its name)."""

    is_format = False
    at_full_precision = True
    route = "attack"

    name: str
    split: str  # the raw split the slice is drawn from, e.g. forget or retain1
    texts: tuple[str, ...]
    steps: int
    learning_rate: float
    batch_size: int
    seed: int
    max_length: int
    #: the recipe's train section: precision, memory and optimizer settings carry over
    train: dict[str, Any] = field(default_factory=dict)
    #: relearn through this LoRA adapter; None: every weight (full fine-tuning)
    lora: LoraSection | None = None

    def config(self) -> dict[str, Any]:
        """What every results line of the column records, as a quantizer's configuration."""
        config = {
            "name": self.name,
            "method": RELEARN_METHOD,
            "split": self.split,
            "samples": len(self.texts),
            "steps": self.steps,
            "learning_rate": self.learning_rate,
            "batch_size": self.batch_size,
            "seed": self.seed,
            "max_length": self.max_length,
            "text_sha256": hashlib.sha256(json.dumps(self.texts).encode()).hexdigest()[:16],
            "evaluation": "full precision (float32) after relearning",
        }
        if self.lora is not None:  # only here: a full fine-tuning record stays as before, its cells fresh
            config["lora"] = self.lora.model_dump(mode="json")
            config["evaluation"] = "full precision (float32) after relearning, the adapter merged"
        return config

    def stale(self, recorded: Mapping[str, Any]) -> bool:
        return recorded.get("quantizer_config") != self.config()

    @classmethod
    def claims(cls, config: Mapping[str, Any]) -> bool:
        return config.get("method") == RELEARN_METHOD

    def network(
        self, source: Path, model: str, run_folder: RunFolder, placement: dict[str, Any] | None = None
    ) -> PreTrainedModel:
        """`source`, the checkpoint of `model` (RUN@TARGET), relearned once into its folder of
        `run_folder` (`relearned`) and loaded as `models.load_model` places it (a LoRA adapter merged
        into `source`)."""
        folder = relearned(source, self, run_folder.relearned(model, self.name))
        if self.lora is None:
            return load_model(folder, placement=placement)
        return load_merged(source, folder, placement)

    def training_arguments(self, output_dir: Path) -> TrainingArguments:
        # The relearn settings win over the recipe's: the check must run exactly as recorded.
        settings = {"disable_tqdm": True, **self.train, "report_to": "none", "save_strategy": "no"}
        settings.update(
            max_steps=self.steps,
            learning_rate=self.learning_rate,
            per_device_train_batch_size=self.batch_size,
            gradient_accumulation_steps=1,
            lr_scheduler_type="constant",
            warmup_steps=0,
            weight_decay=0.0,
            seed=self.seed,
        )
        return TrainingArguments(output_dir=str(output_dir), **settings)


def relearnings(recipe: Recipe, corpus: MuseCorpus | TofuCorpus) -> list[Relearning]:
    """The recipe's relearn entries, each with `samples` texts drawn by `random.Random(seed)` from
    the forget or retain set (`data.benchmark.training_texts`)."""
    found = []
    for i, entry in enumerate(recipe.relearn):
        split = recipe.data.forget_split if entry.split == "forget" else recipe.data.retain_split
        texts = training_texts(recipe.data, corpus, entry.split)
        if entry.samples > len(texts):
            raise UserError(
                f"relearn.{i}.samples: {entry.samples}, but {split} has {len(texts)} texts; "
                "ask for at most that many"
            )
        chosen = tuple(random.Random(entry.seed).sample(texts, entry.samples))
        found.append(
            Relearning(
                name=entry.column,
                split=split,
                texts=chosen,
                steps=entry.steps,
                learning_rate=entry.learning_rate,
                batch_size=entry.batch_size,
                seed=entry.seed,
                max_length=recipe.data.max_length,
                train=recipe.train,
                lora=entry.lora,
            )
        )
    return found


def relearned(source: Path, relearning: Relearning, folder: Path) -> Path:
    """The checkpoint `folder`: `source` fine-tuned as `relearning` says (with `lora`, the adapter
    alone); trained once, then reused while `folder/relearn.json` records the same settings. `source`
    itself is only read.

    Every process of a launch that calls this trains (the Trainer's data parallelism, as in
    unlearning) and the main process alone saves (`train_and_save`).
    """
    config = relearning.config()
    saved = folder / CONFIG_FILE
    if saved.is_file() and json.loads(saved.read_text()) == config:
        return folder
    tokenizer = load_tokenizer(source)
    args = relearning.training_arguments(folder.with_name(folder.name + ".trainer"))
    model = load_model(source)
    if relearning.lora is not None:  # saved as a PeftModel saves itself: the adapter, not the model
        model = get_peft_model(model, lora_config(relearning.lora))
    windows = chunk_texts(relearning.texts, tokenizer, window_length(relearning.max_length, model))
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=LMDataset(windows),
        data_collator=UnlearningCollator(tokenizer.pad_token_id),
    )
    train_and_save(trainer, tokenizer, folder, f"relearning {folder.parent.name} {folder.name}")
    if trainer.is_world_process_zero():
        write_json(saved, config)  # last: a folder without it is retrained
    return folder


def lora_config(lora: LoraSection) -> LoraConfig:
    """peft's configuration of the adapter a recipe's `lora` section describes."""
    modules = lora.target_modules
    return LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=modules if isinstance(modules, str) else list(modules),
        task_type="CAUSAL_LM",
    )


def check_lora_fits(recipe: Recipe, target: Path) -> None:
    """Refuse in one line, before anything trains, a relearn entry's LoRA target modules that the
    target's architecture lacks (peft matches them on a weightless copy, as it will when training)."""
    for i, entry in enumerate(recipe.relearn):
        if entry.lora is None:
            continue
        try:
            get_peft_model(model_skeleton(target), lora_config(entry.lora))
        except ValueError as err:  # peft's NoMatchingPeftModuleError
            raise UserError(
                f"relearn.{i}.lora.target_modules: {str(err).splitlines()[0]} "
                "Name modules of the model (e.g. q_proj, v_proj) or all-linear."
            ) from None
