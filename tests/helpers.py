"""Builders shared by several test files (tiny models and tokenizers are in conftest.py): a test file
imports these, never another test file."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import yaml
from conftest import tiny_llama
from sklearn.metrics import roc_auc_score
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from llm_unlearn.data.collate import ForgetRetainDataset, chunk_texts
from llm_unlearn.methods import METHODS
from llm_unlearn.trainer import UnlearningTrainer
from llm_unlearn.unlearning_config import UnlearningConfig

# --- trainer (tests of terms and methods) ----------------------------------------------------------

FORGET = ["Alva Merrin was born in Tolvenridge.", "Alva Merrin wrote The Amber Bell in 1931."]
RETAIN = ["Doro Kesh was a clockmaker.", "Doro Kesh studied with Pell Varin.", "Doro Kesh lived by a mill."]


def make_trainer(tok, tmp_path, method: str, model=None, ref_model=None, **overrides) -> UnlearningTrainer:
    spec = METHODS.get(method)
    forget = chunk_texts(FORGET, tok, 64)
    retain = chunk_texts(RETAIN, tok, 64) if spec.retain_loss else None
    settings = dict(
        output_dir=str(tmp_path / "out"),
        forget_loss=spec.forget_loss,
        retain_loss=spec.retain_loss,
        learning_rate=1e-2,
        per_device_train_batch_size=2,
        max_steps=2,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        use_cpu=True,
        seed=0,
    )
    # a modifier's settings join those the method turns on (OEU's projection)
    settings["modifiers"] = {
        **({"projection": {"scope": spec.projection}} if spec.projection else {}),
        **overrides.pop("modifiers", {}),
    }
    settings.update(overrides)
    return UnlearningTrainer(
        model=model if model is not None else tiny_llama(tok),
        args=UnlearningConfig(**settings),
        train_dataset=ForgetRetainDataset(forget, retain, seed=0),
        processing_class=tok,
        ref_model=ref_model,
    )


def assert_one_sgd_step(
    trainer: UnlearningTrainer, manual: torch.nn.Module, lr: float, every_parameter: bool = False
) -> None:
    """Step `manual` by hand (plain SGD on the gradients already on it; a parameter without one stays,
    unless `every_parameter`: then a missing gradient is an error), train `trainer` one step, and
    check the two models agree parameter by parameter."""
    with torch.no_grad():
        for p in manual.parameters():
            if every_parameter or p.grad is not None:
                p -= lr * p.grad
    trainer.train()
    for (name, a), b in zip(trainer.model.named_parameters(), manual.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=lambda m, name=name: f"{name}: {m}")


# --- recipes ---------------------------------------------------------------------------------------

GOOD = {
    "name": "t",
    "model": {"target": "demo", "retrain": "demo", "grid_align": "rtn-w4-g32"},
    "method": [{"name": "ga_gdr"}],
    "output": {"dir": "runs/t"},
}


def write(tmp_path: Path, data: dict | str) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def with_(**changes) -> dict:
    data = yaml.safe_load(yaml.safe_dump(GOOD))
    for dotted, value in changes.items():
        node = data
        *parents, leaf = dotted.split("__")
        for key in parents:
            node = node[int(key)] if key.isdigit() else node[key]
        if value is ...:
            del node[leaf]
        else:
            node[int(leaf) if leaf.isdigit() else leaf] = value
    return data


# --- audit cells (bootstrap and verdict tests) -----------------------------------------------------


def mean_cell(scores: list[float]) -> dict:
    """A VerbMem/KnowMem-like result: agg_value = mean of the per-example scores."""
    by_index = {str(i): {"score": s} for i, s in enumerate(scores)}
    return {"agg_value": float(np.mean(scores)), "value_by_index": by_index}


def privleak_cell(members: list[float], others: list[float], reference_auc: float = 0.5) -> dict:
    scores = [*members, *others]
    auc = roc_auc_score([1] * len(members) + [0] * len(others), scores)
    by_index = {str(i): {"score": s, "member": i < len(members)} for i, s in enumerate(scores)}
    return {
        "metric": "privleak",  # as a results line names it: its bootstrap is the metric's own
        "agg_value": (auc - reference_auc) / reference_auc * 100,
        "auc": auc,
        "reference_auc": reference_auc,
        "value_by_index": by_index,
    }


# --- context (GPT-2's absolute positions) ----------------------------------------------------------

CONTEXT = 256


def tiny_gpt2(
    tok: PreTrainedTokenizerFast, n_positions: int = CONTEXT, **overrides: object
) -> GPT2LMHeadModel:
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=len(tok),
        n_positions=n_positions,
        n_embd=32,
        n_layer=2,
        n_head=4,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        **overrides,
    )
    return GPT2LMHeadModel(config).eval()


# --- terms: one sequence whose loss is known by hand ----------------------------------------------

# One sequence, vocabulary of 2. Position 0 predicts token 0 with p = 1/2; position 1 predicts
# token 1 with p = 3/4; position 2 predicts nothing (label -100 would follow, and is shifted out).
LOGITS = torch.tensor([[[0.0, 0.0], [0.0, math.log(3.0)], [5.0, -5.0]]])
LABELS = torch.tensor([[7, 0, 1]])  # the first label is never predicted
NLL = math.log(2) + math.log(4 / 3)  # = ln(8/3)

# The muse_compat terms (test_terms_npo.py, test_terms_klr.py): one position, vocabulary of 2,
# z_θ = (0, 1), z_θ₀ = (1, 1).
Z = torch.tensor([[[0.0, 1.0]]])
Z0 = torch.tensor([[[1.0, 1.0]]])
