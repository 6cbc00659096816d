"""GGUF targets: a tiny Llama written with the `gguf` package (Q4_1 Linear weights, a gpt2-style
byte-level BPE vocabulary) loads through the recipe path, is cached, and sits on rtn-w4-g32-min."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from tokenizers import ByteLevelBPETokenizer

from llm_unlearn.errors import UserError
from llm_unlearn.models import load_model, load_tokenizer
from llm_unlearn.pipeline import resolve_sources
from llm_unlearn.quant import get_quantizer
from llm_unlearn.recipe import RecipeError, validate_recipe

gguf = pytest.importorskip("gguf")

HIDDEN, FFN, LAYERS, HEADS = 64, 128, 2, 4
TEXT = "It is a truth universally acknowledged, that a single man in possession of a good fortune. " * 8


def write_tiny_gguf(path: Path) -> None:
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


def test_gguf_mistakes_are_one_line(gguf_folder: Path, tmp_path: Path):
    with pytest.raises(RecipeError, match=r"model.gguf_file: 'tiny.bin' is not a .gguf file name"):
        recipe(gguf_folder, "tiny.bin", tmp_path / "run")
    with pytest.raises(UserError, match=r"model.gguf_file: 'other.gguf' not found in .*released$"):
        resolve_sources(recipe(gguf_folder, "other.gguf", tmp_path / "run"))
