"""Precision casts (`cast-fp16`, `cast-bf16`, chains): a column added as one file of quant/."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_llama

from llm_unlearn.audit.cache import is_valid, load_cell, quantized
from llm_unlearn.columns import is_format
from llm_unlearn.kernels import evaluation, uses_kernels
from llm_unlearn.models import load_model, save_checkpoint
from llm_unlearn.quant import get_quantizer

CHAINS = {
    "cast-fp16": (torch.float16,),
    "cast-bf16": (torch.bfloat16,),
    "cast-fp16-bf16": (torch.float16, torch.bfloat16),
}


def by_hand(w: torch.Tensor, dtypes: tuple[torch.dtype, ...]) -> torch.Tensor:
    for dtype in dtypes:
        w = w.to(dtype)
    return w.to(torch.float32)


@pytest.mark.parametrize("name", CHAINS)
def test_every_floating_weight_is_rounded_through_the_chain(name, tok):
    model = tiny_llama(tok, tie_word_embeddings=True)
    with torch.no_grad():  # values float16 overflows or flushes, and bfloat16 rounds coarsely
        model.model.norm.weight.copy_(torch.linspace(1e-6, 7e4, model.model.norm.weight.numel()))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    quantizer = get_quantizer(name)
    assert quantizer.quantize_model(model) is model
    for key, value in model.state_dict().items():
        assert value.dtype == torch.float32
        assert torch.equal(value, by_hand(before[key], CHAINS[name])), key
    moved = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    # the random Linears and embeddings move, and the norm set above; the other norms (ones) are exact
    assert len(moved) == 17 and "model.norm.weight" in moved and "lm_head.weight" in moved


def test_the_column_is_a_simulated_format_without_codes():
    quantizer = get_quantizer("cast-fp16-bf16")
    assert quantizer.config() == {
        "name": "cast-fp16-bf16",
        "method": "cast",
        "dtypes": ["float16", "bfloat16"],
        "bits": 16,
    }
    assert not quantizer.has_codes and is_format(quantizer.config())
    assert not uses_kernels(quantizer, True)
    assert evaluation(quantizer, True) == "simulated: dequantized weights in float32"
    assert quantizer.quantize_with_codes(torch.nn.Linear(2, 2)) == {}


@pytest.mark.parametrize("name", ["cast", "cast-fp8", "cast-fp16-", "cast-f16"])
def test_a_malformed_cast_name_shows_the_pattern(name):
    with pytest.raises(ValueError, match=r"expected cast-\{fp16,bf16\}"):
        get_quantizer(name)


@pytest.mark.parametrize("name", CHAINS)
def test_a_cached_cell_is_rebuilt_bit_for_bit(name, tok, tmp_path):
    checkpoint = save_checkpoint(tiny_llama(tok, tie_word_embeddings=True), tok, tmp_path / "m")
    fresh = get_quantizer(name).quantize_model(load_model(checkpoint))
    cell = tmp_path / "cell"
    first = quantized(checkpoint, get_quantizer(name), cell)
    assert is_valid(cell, get_quantizer(name), checkpoint)
    rebuilt = load_cell(cell, checkpoint, get_quantizer(name))
    again = quantized(checkpoint, get_quantizer(name), cell)  # read from the cache
    for key, value in fresh.state_dict().items():
        for network in (first, rebuilt, again):
            assert torch.equal(network.state_dict()[key], value), key
