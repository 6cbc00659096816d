"""models.py: model loading, the real Hub code path, offline, on a local folder in the Hub cache's layout;
GGUF targets: a tiny Llama written with the `gguf` package (Q4_1 Linear weights, a gpt2-style
byte-level BPE vocabulary) loads through the recipe path, is cached, and sits on rtn-w4-g32-min."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import tiny_llama
from helpers import LAYERS, hub_snapshot, write_tiny_gguf

from llm_unlearn import models
from llm_unlearn.data.corpora import DEMO, load_muse
from llm_unlearn.errors import UserError
from llm_unlearn.models import (
    Checkpoint,
    eval_placement,
    grid_align,
    load_model,
    load_tokenizer,
    resolve_checkpoint,
    save_checkpoint,
)
from llm_unlearn.pipeline import resolve_sources
from llm_unlearn.quant import get_quantizer
from llm_unlearn.recipe import RecipeError, validate_recipe

REVISION = "0123456789abcdef0123456789abcdef01234567"


def test_hub_id_loads_from_the_hub_cache_offline(tmp_path, tok) -> None:
    snapshot = tmp_path / "hub" / "models--tiny-org--tiny-llama" / "snapshots" / REVISION
    save_checkpoint(tiny_llama(tok), tok, snapshot)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text(REVISION)
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    code = (
        "from llm_unlearn.models import load_model, load_tokenizer;"
        "m = load_model('tiny-org/tiny-llama'); t = load_tokenizer('tiny-org/tiny-llama');"
        "print(type(m).__name__, m.num_parameters(), t.pad_token)"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["LlamaForCausalLM", str(tiny_llama(tok).num_parameters()), "<pad>"]


def test_missing_model_is_a_user_error(tmp_path) -> None:
    with pytest.raises(UserError, match=r"model\.target: folder '.*nowhere' not found"):
        load_model(tmp_path / "nowhere", field="model.target")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=r"--model: cannot load a tokenizer from"):
        load_tokenizer(tmp_path / "empty", field="--model")


def test_checkpoint_round_trip_is_exact_and_atomic(tmp_path, tok) -> None:
    model = tiny_llama(tok)
    dest = save_checkpoint(model, tok, tmp_path / "ckpt")
    assert (dest / "model.safetensors").is_file() and not (tmp_path / "ckpt.partial").exists()
    loaded = load_model(dest)
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_grid_aligned_copy_is_a_fixed_point_of_its_quantizer(tmp_path, tok) -> None:
    source = save_checkpoint(tiny_llama(tok), tok, tmp_path / "target")
    grid = load_model(grid_align(source, "rtn-w4-g32", tmp_path / "grid"))
    again = get_quantizer("rtn-w4-g32").quantize_model(load_model(tmp_path / "grid"))
    changed = [
        n for n, p in load_model(source).named_parameters() if not torch.equal(p, grid.get_parameter(n))
    ]
    assert changed and all(n.endswith("proj.weight") for n in changed)
    for (name, a), b in zip(grid.state_dict().items(), again.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=0, msg=name)


def test_the_quick_demo_target_is_the_retrain_model_trained_further(tmp_path, monkeypatch) -> None:
    """`demo_checkpoints` builds only what it is asked for (and the retrain model under the quick
    target): the quick target equals, bit for bit, the retrain model trained by hand on forget +
    retain with the quick settings, and a second call trains nothing."""
    monkeypatch.setenv("LLM_UNLEARN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(models, "DEMO_TRAINING", {**models.DEMO_TRAINING, "max_steps": 2})
    monkeypatch.setattr(models, "DEMO_QUICK_TRAINING", {**models.DEMO_QUICK_TRAINING, "max_steps": 2})
    quick = models.demo_checkpoints(["quick-target"])["quick-target"]
    root = quick.parent
    assert (root / "retrain").is_dir() and not (root / "target").exists()
    raw = load_muse(DEMO, {"raw": ("forget", "retain1", "retain2")})
    texts = [t for split in ("forget", "retain1", "retain2") for t in raw.get("raw", split)]
    torch.manual_seed(0)
    hand = models.train_causal_lm(
        load_model(root / "retrain"), load_tokenizer(root / "tokenizer"), texts, tmp_path / "hand",
        models.DEMO_MAX_LENGTH, "by hand", **models.DEMO_QUICK_TRAINING,
    )  # fmt: skip
    built, by_hand, retrain = (load_model(p).state_dict() for p in (quick, hand, root / "retrain"))
    assert all(torch.equal(built[n], by_hand[n]) for n in built)
    assert not all(torch.equal(built[n], retrain[n]) for n in built)  # it was trained
    monkeypatch.setattr(models, "train_causal_lm", lambda *a, **k: pytest.fail("trained again"))
    again = models.demo_checkpoints(["quick-target", "retrain"])
    assert again == {"quick-target": quick, "retrain": root / "retrain"}


def test_the_recipe_builds_only_the_demo_models_it_names(tmp_path, tok, monkeypatch) -> None:
    asked: list[list[str]] = []

    def demo_checkpoints(names) -> dict[str, Path]:
        asked.append(list(names))
        return {n: tmp_path / n for n in names}

    monkeypatch.setattr("llm_unlearn.pipeline.demo_checkpoints", demo_checkpoints)
    base = {"name": "d", "method": {"name": "ga"}, "output": {"dir": str(tmp_path / "run")}}
    sources = resolve_sources(validate_recipe({**base, "model": {"target": "demo_quick", "retrain": "demo"}}))
    assert asked == [["retrain", "quick-target"]]
    assert sources["model.target"] == Checkpoint("demo_quick", tmp_path / "quick-target")
    assert sources["model.retrain"] == Checkpoint("demo", tmp_path / "retrain")
    resolve_sources(validate_recipe({**base, "model": {"target": "demo"}}))
    assert asked[-1] == ["target"]
    own = save_checkpoint(tiny_llama(tok), tok, tmp_path / "own")
    resolve_sources(validate_recipe({**base, "model": {"target": str(own)}}))
    assert len(asked) == 2  # no demo model named: the demo's cache is not touched
    with pytest.raises(RecipeError, match="model.retrain: .*'demo_quick' is the quick demo's target"):
        validate_recipe({**base, "model": {"target": "demo_quick", "retrain": "demo_quick"}})


def test_eval_placement_is_float32_on_cpu_and_the_checkpoints_dtype_on_an_accelerator() -> None:
    assert eval_placement(torch.device("cpu")) == {"dtype": torch.float32}
    assert eval_placement(torch.device("cpu"), "auto") == {"dtype": torch.float32}  # nothing to spread
    gpu = torch.device("cuda", 1)
    assert eval_placement(gpu) == {"dtype": "auto", "device_map": gpu}
    assert eval_placement(gpu, "auto") == {"dtype": "auto", "device_map": "auto"}


def test_a_bf16_checkpoint_is_evaluated_in_float32_on_cpu_and_kept_in_bf16_on_its_dtype(
    tmp_path, tok
) -> None:
    save_checkpoint(tiny_llama(tok).to(torch.bfloat16), tok, tmp_path / "m")
    on_cpu = load_model(tmp_path / "m", placement=eval_placement(torch.device("cpu")))
    assert {p.dtype for p in on_cpu.parameters()} == {torch.float32}
    # what an accelerator gets ("auto": the checkpoint's dtype), here on the CPU's device map
    own = load_model(tmp_path / "m", placement={"dtype": "auto", "device_map": torch.device("cpu")})
    assert {p.dtype for p in own.parameters()} == {torch.bfloat16}


@pytest.fixture
def gguf_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LLM_UNLEARN_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "released"
    folder.mkdir()
    write_tiny_gguf(folder / "tiny.Q4_1.gguf")
    return folder


def recipe(target: Path, gguf_file: str, out: Path):
    return validate_recipe(
        {
            "name": "gguf",
            "model": {"target": str(target), "gguf_file": gguf_file},
            "method": {"name": "ga"},
            "quantize": ["rtn-w4-g32-min"],
            "output": {"dir": str(out)},
        }
    )


def test_gguf_target_loads_through_the_recipe_and_sits_on_the_q4_1_grid(gguf_folder: Path, tmp_path: Path):
    sources = resolve_sources(recipe(gguf_folder, "tiny.Q4_1.gguf", tmp_path / "run"))
    path = sources["model.target"].path
    assert list(sources) == ["model.target"] and path.is_relative_to(tmp_path / "cache" / "gguf")
    model, tokenizer = load_model(path), load_tokenizer(path)
    assert (
        model.config.num_hidden_layers == LAYERS
        and getattr(model.config, "quantization_config", None) is None
    )
    ids = tokenizer("a single man in possession")["input_ids"]
    assert tokenizer.decode(ids).strip() == "a single man in possession"
    assert model(torch.tensor([ids])).logits.shape == (1, len(ids), len(tokenizer))
    # llama.cpp's Q4_1 = rtn-w4-g32-min: quantizing the released weights again leaves them in place
    before = {k: v.clone() for k, v in model.state_dict().items()}
    codes = get_quantizer("rtn-w4-g32-min").quantize_weights(model)
    assert len(codes) == 7 * LAYERS
    get_quantizer("rtn-w4-g32-min").quantize_model(model)
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, before[name], rtol=1e-5, atol=1e-6)
    # while the integer-zero 4-bit grid moves them (its zero point is rounded, Q4_1's is not)
    get_quantizer("rtn-w4-g32-asym").quantize_model(model)
    assert not torch.allclose(
        model.model.layers[0].mlp.up_proj.weight, before["model.layers.0.mlp.up_proj.weight"]
    )


def test_conversion_is_cached(gguf_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    r = recipe(gguf_folder, "tiny.Q4_1.gguf", tmp_path / "run")
    first = resolve_sources(r)["model.target"].path

    def no_second_conversion(*args: object, **kwargs: object) -> None:
        raise AssertionError("converted again")

    monkeypatch.setattr("llm_unlearn.models.AutoModelForCausalLM.from_pretrained", no_second_conversion)
    assert resolve_sources(r)["model.target"].path == first


def test_a_hub_gguf_file_is_downloaded_alone_and_checked_before_it_is_parsed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLM_UNLEARN_CACHE", str(tmp_path / "cache"))
    snapshot = hub_snapshot(monkeypatch, tmp_path / "hub", "tiny-org/tiny-gguf")
    write_tiny_gguf(snapshot / "tiny.Q4_1.gguf")
    order = []
    check, parse = models.check_gguf_header, models.AutoModelForCausalLM.from_pretrained

    def check_gguf(path: Path) -> None:
        order.append(("check", path))
        check(path)

    def parse_gguf(source: str, **kw: object) -> object:
        order.append(("parse", Path(source) / str(kw["gguf_file"])))
        return parse(source, **kw)

    monkeypatch.setattr(models, "check_gguf_header", check_gguf)
    monkeypatch.setattr(models.AutoModelForCausalLM, "from_pretrained", parse_gguf)
    by_field = resolve_sources(recipe("tiny-org/tiny-gguf", "tiny.Q4_1.gguf", tmp_path / "run"))
    by_field = by_field["model.target"]
    assert order == [("check", snapshot / "tiny.Q4_1.gguf"), ("parse", snapshot / "tiny.Q4_1.gguf")]
    # the same file named as one path: the same check, then the conversion already cached
    by_path = resolve_checkpoint("tiny-org/tiny-gguf/tiny.Q4_1.gguf", "model.target")
    assert order[2:] == [("check", snapshot / "tiny.Q4_1.gguf")] and by_path.path == by_field.path
    assert (by_path.path / "model.safetensors").is_file()


def test_gguf_mistakes_are_one_line(gguf_folder: Path, tmp_path: Path):
    with pytest.raises(RecipeError, match=r"model.gguf_file: 'tiny.bin' is not a .gguf file name"):
        recipe(gguf_folder, "tiny.bin", tmp_path / "run")
    with pytest.raises(UserError, match=r"model.gguf_file: 'other.gguf' not found in .*released$"):
        resolve_sources(recipe(gguf_folder, "other.gguf", tmp_path / "run"))
