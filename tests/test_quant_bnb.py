"""quant/bnb.py: bitsandbytes' NF4, FP4 and LLM.int8() codes against the library's own."""

from __future__ import annotations

import pytest
import torch
from helpers import load, run_quantizer

BNB = ["bnb-nf4", "bnb-fp4", "bnb-int8"]


@pytest.mark.parametrize("name", BNB)
def test_bitsandbytes_codes_match_the_library(name, folder):
    pytest.importorskip("bitsandbytes")
    import bitsandbytes as bnb
    import bitsandbytes.functional as F

    reference = load(folder)
    model, quantizer, codes = run_quantizer(name, folder, None)
    layer = "model.layers.0.mlp.up_proj"
    w = reference.get_submodule(layer).weight.detach()
    c = codes[layer]
    assert torch.equal(c.dequantize(), model.get_submodule(layer).weight.detach())
    x = torch.randn(4, w.shape[1], generator=torch.Generator().manual_seed(0))
    if name == "bnb-int8":
        library = bnb.nn.Linear8bitLt(w.shape[1], w.shape[0], bias=False, has_fp16_weights=False)
        library.weight = bnb.nn.Int8Params(w.clone(), requires_grad=False, has_fp16_weights=False)
        stored = library.to("cpu").state_dict()
        # the int8 weight and row scales bitsandbytes keeps are exactly our codes and scales
        assert torch.equal(c.codes.long() - 128, stored["weight"].long())
        assert torch.equal(c.scale, stored["SCB"].float() / 127)
        assert c.levels.numel() == 256
    else:
        kind = name.removeprefix("bnb-")
        packed, state = F.quantize_4bit(w, blocksize=64, quant_type=kind)
        assert torch.equal(c.dequantize(), F.dequantize_4bit(packed, state))
        assert c.levels.numel() == (16 if kind == "nf4" else 15)  # FP4's +0 and -0 are one level
        library = bnb.nn.Linear4bit(
            w.shape[1], w.shape[0], bias=False, quant_type=kind, compute_dtype=torch.float32
        )
        library.weight = bnb.nn.Params4bit(w.clone(), requires_grad=False, quant_type=kind, blocksize=64)
        library = library.to("cpu")
        # bitsandbytes' CPU kernel computes in lower precision: close, not equal
        torch.testing.assert_close(library(x), x @ c.dequantize().T, rtol=0.05, atol=0.01)
    assert torch.isfinite(model(torch.tensor([[1, 2, 3]])).logits).all()
    assert quantizer.config()["library"].startswith("bitsandbytes")
