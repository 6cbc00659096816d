"""quant/hqq.py: HQQ (`hqq-w{4,8}-g64`, needs hqq): its codes are hqq's own, and a missing hqq is one line."""

from __future__ import annotations

import sys

import pytest
import torch
from conftest import tiny_llama

from llm_unlearn.errors import UserError
from llm_unlearn.quant import get_quantizer


def test_hqq_missing_is_one_line(tok, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "hqq", None)
    with pytest.raises(UserError, match=r"^HQQ quantizers need hqq: pip install 'llm-unlearn\[hqq\]'$"):
        get_quantizer("hqq-w4-g64").quantize_with_codes(tiny_llama(tok))


@pytest.mark.parametrize("bits", [4, 8])
def test_hqq_codes_are_hqqs_own(bits, tok):
    quantize = pytest.importorskip("hqq.core.quantize")
    model = tiny_llama(tok, hidden_size=128, intermediate_size=256, num_hidden_layers=1)
    before = tiny_llama(tok, hidden_size=128, intermediate_size=256, num_hidden_layers=1)
    quantizer = get_quantizer(f"hqq-w{bits}-g64")
    codes = quantizer.quantize_with_codes(model)
    assert len(codes) == 7 and quantizer.config()["library"].startswith("hqq ")
    for name, c in codes.items():
        weight = model.get_submodule(name).weight
        assert torch.equal(c.dequantize(), weight)
        assert c.codes.shape == (weight.numel() // 64, 64) and int(c.codes.max()) < 2**bits
        # hqq's own layer, built here independently, dequantizes to the same weight
        config = quantize.BaseQuantizeConfig(nbits=bits, group_size=64)
        layer = quantize.HQQLinear(
            before.get_submodule(name), config, compute_dtype=torch.float32, device="cpu", del_orig=False
        )
        assert torch.equal(layer.dequantize().reshape(weight.shape), weight)
        # the fitted zero points are floats (round_zero only rounds the starting point at 4 bits)
        assert not torch.equal(c.zero, c.zero.round())
    x = torch.randint(0, len(tok), (1, 8))
    assert torch.isfinite(model(x).logits).all()
