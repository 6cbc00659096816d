"""Builders shared by several test files (tiny models and tokenizers are in conftest.py): a test file
imports these, never another test file."""

from __future__ import annotations

import copy
import importlib.util
import json
import math
import shutil
import types
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import tiny_llama
from sklearn.metrics import roc_auc_score
from tokenizers import ByteLevelBPETokenizer
from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from llm_unlearn.data.collate import ForgetRetainDataset, chunk_texts
from llm_unlearn.data.corpora import MuseCorpus
from llm_unlearn.methods import METHODS
from llm_unlearn.quant import get_quantizer
from llm_unlearn.terms import gdr
from llm_unlearn.trainer import UnlearningTrainer
from llm_unlearn.unlearning_config import UnlearningConfig

# --- trainer (tests of terms and methods) ----------------------------------------------------------

FORGET = ["Alva Merrin was born in Tolvenridge.", "Alva Merrin wrote The Amber Bell in 1931."]
RETAIN = ["Doro Kesh was a clockmaker.", "Doro Kesh studied with Pell Varin.", "Doro Kesh lived by a mill."]


def make_trainer(
    tok, tmp_path, method: str, model=None, ref_model=None, forget=None, **overrides
) -> UnlearningTrainer:
    """A one-process CPU trainer of `method` on FORGET/RETAIN windows (or the `forget` windows given:
    TOFU's QA windows for the methods that read question-answer pairs)."""
    spec = METHODS.get(method)
    forget = forget if forget is not None else chunk_texts(FORGET, tok, 64)
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


def assert_reference_free_step(
    tok, tmp_path: Path, method: str, forget: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    lr: float = 0.5, weight: float = 0.7, **params: float,
) -> None:  # fmt: skip
    """One training step of `method` (a reference-free forget term with `params`, plus λ·GDR) equals
    θ₀ − lr·∇(forget(logits, labels) + λ·GDR) computed by hand; the trainer builds no θ₀ copy and no
    NLL cache."""
    term = METHODS.get(method).forget_loss
    trainer = make_trainer(
        tok, tmp_path, method, optim="sgd", learning_rate=lr, max_steps=1, lr_scheduler_type="constant",
        max_grad_norm=0.0, retain_weight=weight, term_params={term: params} if params else {},
    )  # fmt: skip
    assert trainer.ref_model is None and trainer._ref_nll is None
    manual = copy.deepcopy(trainer.model)
    batch = next(iter(trainer.get_train_dataloader()))
    f = manual(input_ids=batch["forget_input_ids"], attention_mask=batch["forget_attention_mask"]).logits
    r = manual(input_ids=batch["retain_input_ids"], attention_mask=batch["retain_attention_mask"]).logits
    (forget(f, batch["forget_labels"]) + weight * gdr(r, batch["retain_labels"])).backward()
    assert_one_sgd_step(trainer, manual, lr, every_parameter=True)


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


GATE_TARGET = [50.0, 60.0, 70.0, 80.0, 90.0]
GATE_UNLEARNED = [0.0, 10.0, 20.0, 30.0, 40.0]  # t_i − u_i = 50 on every example


def gate_row(model: str, quantizer: str, metric: str, scores: list[float], target: str = "natural") -> dict:
    """A results line of `model` under `quantizer`: `metric`'s per-example `scores` and their mean."""
    return {
        "model": model,
        "target": target,
        "quantizer": quantizer,
        "metric": metric,
        "checkpoint": f"checkpoints/{model}",
        "quantizer_config": {"name": quantizer, "method": "none" if quantizer == "fp" else "rtn"},
        "evaluation": "simulated",
        **mean_cell(scores),
    }


def gate_results() -> list[dict]:
    """A run whose gate has every outcome: under rtn-w4-g32, ga brings back 80 % of KnowMem-forget
    (fails), oeu 10 % (holds); weak moved it by 2 points on one example of five (not forgotten);
    VerbMem's retrain model knows what the target knows, so every VerbMem row is nothing to forget."""
    rows = [
        gate_row("target", "fp", "knowmem_forget", GATE_TARGET),
        gate_row("target", "fp", "verbmem", GATE_TARGET),
        gate_row("retrain", "fp", "verbmem", GATE_TARGET, target="-"),
        gate_row("weak", "fp", "knowmem_forget", [40.0, *GATE_TARGET[1:]]),
    ]
    for model, share in {"ga": 0.8, "oeu": 0.1}.items():
        back = [u + share * 50 for u in GATE_UNLEARNED]
        rows += [
            gate_row(model, "fp", "knowmem_forget", GATE_UNLEARNED),
            gate_row(model, "rtn-w4-g32", "knowmem_forget", back),
            gate_row(model, "fp", "verbmem", GATE_UNLEARNED),
            gate_row(model, "rtn-w4-g32", "verbmem", GATE_UNLEARNED),
        ]
    return rows


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

# --- quantizers (test_quant_calibrated.py, test_quant_bnb.py, test_quant_calibration.py) -------------


def load(folder):
    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()


def run_quantizer(name, folder, calibration):
    model = load(folder)
    quantizer = get_quantizer(name)
    quantizer.calibration = calibration
    codes = quantizer.quantize_with_codes(model)
    return model, quantizer, codes


def recipe(**calibration: object) -> dict:
    return {
        "name": "c",
        "model": {"target": "demo"},
        "method": {"name": "ga"},
        "output": {"dir": "/tmp/c"},
        "calibration": calibration,
    }


# --- metrics: a MUSE corpus from splits (test_metrics*.py) --------------------------------------


def corpus(**splits: dict[str, list]) -> MuseCorpus:
    return MuseCorpus("test", splits)


# --- metrics: three long shots (test_metrics.py, test_metrics_knowmem.py) ----------------------------

SHOTS = [{"question": "Which " + "very " * 12 + "old town?", "answer": "Bath"}] * 3  # 3 x 100 tokens


# --- cnn track: the repository root and a small demo data set (test_cnn_recipe.py, test_cnn_run.py) ---

ROOT = Path(__file__).resolve().parents[1]


def _demo_data() -> dict:
    import yaml

    return yaml.safe_load((ROOT / "recipes" / "cnn_demo.yaml").read_text())


# --- GGUF: a tiny Llama written as a Q4_1 GGUF file (test_models.py, test_audit_run.py) --------

HIDDEN, FFN, LAYERS, HEADS = 64, 128, 2, 4
TEXT = "It is a truth universally acknowledged, that a single man in possession of a good fortune. " * 8


def write_tiny_gguf(path: Path) -> None:
    gguf = pytest.importorskip("gguf")  # only the tests that write a GGUF file need it
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        [TEXT], vocab_size=300, min_frequency=1, special_tokens=["<|endoftext|>", "<s>", "</s>"]
    )
    model = json.loads(bpe.to_str())["model"]
    tokens = [t for t, _ in sorted(model["vocab"].items(), key=lambda kv: kv[1])]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(LAYERS)
    writer.add_context_length(128)
    writer.add_embedding_length(HIDDEN)
    writer.add_feed_forward_length(FFN)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(HEADS)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_dimension_count(HIDDEN // HEADS)
    writer.add_vocab_size(len(tokens))
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types(
        [gguf.TokenType.CONTROL if t.startswith("<") else gguf.TokenType.NORMAL for t in tokens]
    )
    writer.add_token_merges(merges)
    writer.add_unk_token_id(0)  # as SmolLM2's file; without one, transformers appends <|endoftext|>
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    rng = np.random.default_rng(0)

    def normal(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.05).astype(np.float32)

    def q4_1(name: str, weight: np.ndarray) -> None:
        data = gguf.quants.quantize(weight, gguf.GGMLQuantizationType.Q4_1)
        writer.add_tensor(name, data, raw_dtype=gguf.GGMLQuantizationType.Q4_1)

    writer.add_tensor("token_embd.weight", normal(len(tokens), HIDDEN))
    writer.add_tensor("output_norm.weight", np.ones(HIDDEN, np.float32))
    writer.add_tensor("output.weight", normal(len(tokens), HIDDEN))
    for i in range(LAYERS):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(HIDDEN, np.float32))
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(HIDDEN, np.float32))
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            q4_1(f"blk.{i}.{name}.weight", normal(HIDDEN, HIDDEN))
        q4_1(f"blk.{i}.ffn_gate.weight", normal(FFN, HIDDEN))
        q4_1(f"blk.{i}.ffn_up.weight", normal(FFN, HIDDEN))
        q4_1(f"blk.{i}.ffn_down.weight", normal(HIDDEN, FFN))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def hub_snapshot(monkeypatch: pytest.MonkeyPatch, cache: Path, repo: str) -> Path:
    """The (empty) snapshot folder of `repo` at `main` in an offline Hub cache at `cache` that
    huggingface_hub's own download code reads, in this process: what a download would have left."""
    snapshot = cache / f"models--{repo.replace('/', '--')}" / "snapshots" / ("0123456789abcdef" * 3)[:40]
    snapshot.mkdir(parents=True)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text(snapshot.name)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(cache))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    return snapshot


# --- a checkpoint whose architecture is its own Python code (test_errors.py, test_models.py) -----


def remote_code_checkpoint(checkpoint: Path, dest: Path, model_type: str, marker: Path) -> Path:
    """A copy of the Llama `checkpoint` whose config names its own code (`auto_map`), as a Hub model
    with custom code does: a configuration and a model class subclassing Llama's, the model's module
    writing `marker` when it runs (the proof that it did, or did not)."""
    shutil.copytree(checkpoint, dest)
    (dest / f"configuration_{model_type}.py").write_text(
        "from transformers import LlamaConfig\n\n\n"
        f"class RemoteConfig(LlamaConfig):\n    model_type = {model_type!r}\n"
    )
    (dest / f"modeling_{model_type}.py").write_text(
        "from pathlib import Path\n\nfrom transformers import LlamaForCausalLM\n\n"
        f"from .configuration_{model_type} import RemoteConfig\n\n"
        f"Path({str(marker)!r}).touch()\n\n\n"
        "class RemoteForCausalLM(LlamaForCausalLM):\n    config_class = RemoteConfig\n"
    )
    config = json.loads((dest / "config.json").read_text())
    config |= {
        "model_type": model_type,
        "architectures": ["RemoteForCausalLM"],
        "auto_map": {
            "AutoConfig": f"configuration_{model_type}.RemoteConfig",
            "AutoModelForCausalLM": f"modeling_{model_type}.RemoteForCausalLM",
        },
    }
    (dest / "config.json").write_text(json.dumps(config))
    return dest


# --- scripts outside the package: eval/*.py, docs/hooks.py (test_eval_*.py, test_docs_hooks.py) ---


def load_script(path: Path) -> types.ModuleType:
    """A script that is no package module (an eval/ script, the docs' mkdocs hook), loaded from its file."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
