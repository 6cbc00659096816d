"""quant/fp8.py: FP8 E4M3 (`fp8-e4m3`, torch only): its grid, its codes by hand, and the names it refuses."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_llama

from llm_unlearn.errors import UserError
from llm_unlearn.quant import get_quantizer
from llm_unlearn.quant.fp8 import e4m3_levels, fp8_codes
from llm_unlearn.quant.overlap import diagnose, target_weights


def test_e4m3_table():
    levels = e4m3_levels()
    # 2 x (15 exponents x 8 mantissas, less the NaN pattern, plus 7 subnormals) + one zero
    assert len(levels) == 253 and levels.max() == 448 and levels.min() == -448
    assert torch.equal(levels, -levels.flip(0)) and (levels == 0).sum() == 1
    assert levels[levels > 0].min() == 2**-9  # the smallest subnormal, 2^-6 * 1/8
    # between 256 and 448 the step is 2^8 / 8 = 32
    assert levels[levels >= 256].tolist() == [256, 288, 320, 352, 384, 416, 448]


def test_fp8_codes_by_hand():
    w = torch.tensor([[448.0, -224.0, 1.0, 0.3], [2.0, 1.0, 0.3, 0.0]])
    c = fp8_codes(w)
    # row 0: s = 448 / 448 = 1; 0.3 lies between 0.25 * (1 + 2/8) = 0.28125 and 0.25 * (1 + 3/8) =
    # 0.3125 and is nearer the latter (0.0125 < 0.01875)
    # row 1: s = 2 / 448 = 1/224; 0.3 * 224 = 67.2 lies between 64 and 72 (step 8): 64, so 64/224
    assert torch.allclose(c.scale, torch.tensor([1.0, 1 / 224]))
    expected = torch.tensor([[448.0, -224.0, 1.0, 0.3125], [2.0, 1.0, 64 / 224, 0.0]])
    torch.testing.assert_close(c.dequantize(), expected, rtol=0, atol=1e-7)
    assert c.levels[c.codes.long()].tolist()[1] == [448.0, 224.0, 64.0, 0.0]
    assert c.codes.shape == (2, 4) and c.zero.tolist() == [0.0, 0.0]


def test_fp8_zero_row_and_model(tok):
    assert torch.equal(fp8_codes(torch.zeros(2, 4)).dequantize(), torch.zeros(2, 4))
    model = tiny_llama(tok)
    before = target_weights(model)
    quantizer = get_quantizer("fp8-e4m3")
    codes = quantizer.quantize_with_codes(model)
    assert len(codes) == 7 * 2
    for name, c in codes.items():
        weight = model.get_submodule(name).weight
        assert torch.equal(c.dequantize(), weight)
        # relative error of a 3-bit mantissa: at most 2^-4 of the value for normal numbers
        normal = before[name].abs() >= 2**-6 * c.scale[:, None]
        assert ((weight - before[name]).abs() <= before[name].abs() * 2**-4 + 1e-12)[normal].all()
    # an update far below the local step, that leaves each row's max |w| (its scale) alone, keeps
    # every bucket as it was
    unlearned = {
        k: torch.where(v.abs() < v.abs().amax(1, keepdim=True) / 2, v + 1e-9, v) for k, v in before.items()
    }
    codes_u = {name: fp8_codes(w) for name, w in unlearned.items()}
    overall = diagnose(before, unlearned, codes, codes_u)["overall"]
    assert overall["bucket_overlap"] > 0.999 and overall["crossing"] < 0.001


def test_malformed_names():
    for name in ("fp8-e5m2", "hqq-w3-g64", "hqq-w4-g128"):
        with pytest.raises(UserError, match="malformed"):
            get_quantizer(name)
