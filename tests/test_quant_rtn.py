"""RTN quantization: grid maths, the on-grid idempotence the audit relies on, names, and models."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_llama
from torch import nn

from llm_unlearn.quant import get_quantizer
from llm_unlearn.quant.rtn import QuantizedTensor, dequantize_tensor, quantize_tensor
from llm_unlearn.registry import UnknownNameError

BITS = (2, 3, 4, 8)
SETTINGS = [(b, g, sym) for b in BITS for g in (None, 32) for sym in (True, False)]


def randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def per_element(t: torch.Tensor, q: QuantizedTensor) -> torch.Tensor:
    """A per-group tensor [rows, groups] spread over the weight's shape."""
    return t.repeat_interleave(q.group_size or q.shape[1], dim=1)


def grid_aligned(bits: int, group_size: int | None, symmetric: bool, seed: int = 0) -> torch.Tensor:
    return dequantize_tensor(quantize_tensor(randn(16, 128, seed=seed), bits, group_size, symmetric))


@pytest.mark.parametrize(("bits", "group_size", "symmetric"), SETTINGS)
def test_codes_in_range_and_error_at_most_half_a_step(bits: int, group_size: int | None, symmetric: bool):
    w = randn(16, 128) * 0.02
    q = quantize_tensor(w, bits, group_size, symmetric)
    assert q.codes.shape == w.shape and q.scale.shape == (16, 128 // (group_size or 128))
    if symmetric:
        assert q.codes.dtype == torch.int8 and q.zero is None
        # max-abs scaling leaves the most negative code -2^(b-1) unused
        assert q.codes.min() >= -(2 ** (bits - 1)) + 1 and q.codes.max() <= 2 ** (bits - 1) - 1
    else:
        assert q.codes.dtype == torch.uint8 and q.zero.shape == q.scale.shape
        assert int(q.codes.max()) <= 2**bits - 1
    err = (w - dequantize_tensor(q)).abs()
    assert (err <= per_element(q.scale, q) / 2 + 1e-6).all()


def test_error_shrinks_with_bits():
    w = randn(32, 128)
    errors = [(w - dequantize_tensor(quantize_tensor(w, b, 32, False))).abs().mean() for b in (8, 4, 3, 2)]
    assert errors == sorted(errors) and errors[0] < errors[-1] / 10


def test_groups_beat_per_channel_on_outliers():
    w = randn(16, 128)
    w[:, 5] *= 50  # one outlier input column, as in LLM activations-heavy channels
    per_channel = (w - dequantize_tensor(quantize_tensor(w, 4, None, True))).abs().mean()
    grouped = (w - dequantize_tensor(quantize_tensor(w, 4, 32, True))).abs().mean()
    assert grouped < per_channel / 2


def test_input_dtype_does_not_matter():
    w = randn(8, 64)
    q32 = quantize_tensor(w.bfloat16().float(), 4, 32, False)
    q16 = quantize_tensor(w.bfloat16(), 4, 32, False)
    assert torch.equal(q32.codes, q16.codes) and torch.equal(q32.scale, q16.scale)
    assert dequantize_tensor(q16).dtype == torch.float32


@pytest.mark.parametrize(("bits", "group_size", "symmetric"), SETTINGS)
def test_grid_aligned_weights_quantize_to_themselves(bits: int, group_size: int | None, symmetric: bool):
    w = randn(16, 128)
    q = quantize_tensor(w, bits, group_size, symmetric)
    on_grid = dequantize_tensor(q)
    again = quantize_tensor(on_grid, bits, group_size, symmetric)
    assert torch.equal(again.codes, q.codes)
    if not symmetric:
        assert torch.equal(again.zero, q.zero)
    torch.testing.assert_close(dequantize_tensor(again), on_grid, rtol=1e-6, atol=1e-7)


def test_min_offset_grid_by_hand():
    # llama.cpp's Q4_1 block: s = (max - min) / 15 = 1.5 / 15 = 0.1, w' = q * s + min
    w = torch.tensor([[-0.5, -0.44, 0.0, 0.31, 1.0]])
    q = quantize_tensor(w, 4, None, False, min_offset=True)
    assert q.codes.tolist() == [[0, 1, 5, 8, 15]]
    torch.testing.assert_close(q.scale, torch.tensor([[0.1]]))
    torch.testing.assert_close(q.zero, torch.tensor([[5.0]]))
    torch.testing.assert_close(dequantize_tensor(q), torch.tensor([[-0.5, -0.4, 0.0, 0.3, 1.0]]))
    # the integer-zero grid puts 0 on the grid instead; here both agree since -min/s = 5 exactly
    w[0, 0] = -0.52  # now -min/s is not an integer: the two grids differ, the min-offset one keeps min
    q = quantize_tensor(w, 4, None, False, min_offset=True)
    assert dequantize_tensor(q)[0, 0].item() == pytest.approx(-0.52)
    assert dequantize_tensor(quantize_tensor(w, 4, None, False))[0, 0].item() != pytest.approx(-0.52)


def test_min_offset_constant_group_stays_finite():
    w = torch.full((2, 32), 3.0)
    q = quantize_tensor(w, 4, 32, False, min_offset=True)
    torch.testing.assert_close(dequantize_tensor(q), w)
    with pytest.raises(ValueError, match="asymmetric"):
        quantize_tensor(w, 4, 32, True, min_offset=True)


@pytest.mark.parametrize("bits", [3, 4, 8])
def test_min_offset_grid_quantizes_to_itself(bits: int):
    on_grid = dequantize_tensor(quantize_tensor(randn(16, 128), bits, 32, False, min_offset=True))
    q = quantize_tensor(on_grid, bits, 32, False, min_offset=True)
    # (q - z) * s with z = -min / s is min + q * s up to a few float32 ulps
    torch.testing.assert_close(dequantize_tensor(q), on_grid, rtol=1e-5, atol=1e-6)
    assert torch.equal(quantize_tensor(dequantize_tensor(q), bits, 32, False, min_offset=True).codes, q.codes)


def test_asymmetric_tie_at_range_end_keeps_both_ends():
    # lo = -2.5, hi = 12.5 at 4 bits: s = 1 and -lo/s = 2.5 is a tie, so round() alone gives z = 2
    # and code round(12.5) + 2 = 14 for hi; the grid of the result would then be narrower.
    w = torch.tensor([[-2.5, 0.0, 3.2, 12.5]])
    q = quantize_tensor(w, 4, None, False)
    assert q.codes.tolist() == [[0, 2, 5, 15]] and q.zero.tolist() == [[2]]
    on_grid = dequantize_tensor(q)
    assert ((w - on_grid).abs() <= 0.5 + 1e-6).all()
    assert torch.equal(quantize_tensor(on_grid, 4, None, False).codes, q.codes)


@pytest.mark.parametrize("symmetric", [True, False])
def test_zero_groups_and_zeros_are_exact(symmetric: bool):
    w = randn(4, 64)
    w[0] = 0  # a whole group of zeros: a tiny scale, not a division by zero
    w[1, :32] = -w[1, :32].abs()  # an all-negative group: 0 is the top of its asymmetric range
    w[2, 7] = 0
    q = quantize_tensor(w, 4, 32, symmetric)
    deq = dequantize_tensor(q)
    assert (q.scale > 0).all() and torch.isfinite(deq).all()
    assert (deq[w == 0] == 0).all()


@pytest.mark.parametrize("symmetric", [True, False])
def test_small_update_to_grid_aligned_weights_vanishes(symmetric: bool):
    bits, group_size = 4, 32
    target = grid_aligned(bits, group_size, symmetric)
    q_target = quantize_tensor(target, bits, group_size, symmetric)
    step = per_element(q_target.scale, q_target)
    delta = (torch.rand(target.shape, generator=torch.Generator().manual_seed(1)) * 2 - 1) * 0.49 * step
    # the update must not move what sets the grid: max|w| (symmetric) or the group's min and max
    groups = target.reshape(16, -1, group_size)
    if symmetric:
        ends = groups.abs() == groups.abs().amax(-1, keepdim=True)
    else:
        ends = (groups == groups.amin(-1, keepdim=True)) | (groups == groups.amax(-1, keepdim=True))
    delta[ends.reshape(target.shape)] = 0
    q_unlearned = quantize_tensor(target + delta, bits, group_size, symmetric)
    assert torch.equal(q_unlearned.codes, q_target.codes)
    assert torch.equal(dequantize_tensor(q_unlearned), dequantize_tensor(q_target))
    # off the grid the same update flips some codes: in expectation it survives quantization
    off_grid = randn(16, 128)
    flipped = quantize_tensor(off_grid + delta, bits, group_size, symmetric).codes
    assert (flipped != quantize_tensor(off_grid, bits, group_size, symmetric).codes).any()


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match=r"\(8, 100\).*not a multiple of 32"):
        quantize_tensor(randn(8, 100), 4, 32, True)
    with pytest.raises(ValueError, match="2-D"):
        quantize_tensor(randn(8), 4, None, True)
    with pytest.raises(ValueError, match="bits"):
        quantize_tensor(randn(8, 32), 1, None, True)


@pytest.mark.parametrize(
    ("name", "bits", "group_size", "zero_point"),
    [
        ("rtn-w4", 4, None, "none"),
        ("rtn-w8-g128", 8, 128, "none"),
        ("rtn-w2-g32-asym", 2, 32, "integer"),
        ("rtn-w4-g32-min", 4, 32, "float"),
    ],
)
def test_names_parse(name: str, bits: int, group_size: int | None, zero_point: str):
    assert get_quantizer(name).config() == {
        "name": name,
        "method": "rtn",
        "bits": bits,
        "group_size": group_size,
        "symmetric": zero_point == "none",
        "zero_point": zero_point,
        "skipped": ["lm_head", "output embeddings", "Linear weights tied to an nn.Embedding"],
    }


@pytest.mark.parametrize(
    "name", ["rtn", "rtn-x", "rtn-w5", "rtn-w4-g100", "rtn-w4-asym-g128", "rtn-w4-sym", "rtn-w4-asym-min"]
)
def test_malformed_names_show_the_pattern(name: str):
    with pytest.raises(ValueError, match=r"expected rtn-w\{2,3,4,8\}\[-g\{32,64,128\}\]\[-asym\|-min\]"):
        get_quantizer(name)


def test_unknown_family_lists_known_ones():
    with pytest.raises(UnknownNameError, match=r"'eetq-w8'.*fp.*rtn-w\{2,3,4,8\}"):
        get_quantizer("eetq-w8")
    with pytest.raises(ValueError, match="expected fp"):
        get_quantizer("fp-16")


@pytest.mark.parametrize("tie", [False, True])
@pytest.mark.parametrize("name", ["rtn-w4-g32", "rtn-w3-asym"])
def test_quantize_model_changes_decoder_linears_only(tie: bool, name: str, tok):
    model = tiny_llama(tok, tie_word_embeddings=tie).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    quantizer = get_quantizer(name)
    codes = quantizer.quantize_weights(model)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    decoder = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and n != "lm_head"]
    assert sorted(codes) == sorted(decoder) and len(decoder) == 14

    assert quantizer.quantize_model(model) is model
    after = model.state_dict()
    for name_ in decoder:
        key = f"{name_}.weight"
        assert not torch.equal(after[key], before[key])
        assert torch.equal(after[key], dequantize_tensor(codes[name_]))
        q = codes[name_]
        again = quantize_tensor(after[key], q.bits, q.group_size, q.symmetric)
        assert torch.equal(again.codes, q.codes)  # the new weights sit on their own grid
    untouched = [k for k in before if not any(k == f"{n}.weight" for n in decoder)]
    assert "lm_head.weight" in untouched and "model.embed_tokens.weight" in untouched
    assert all(torch.equal(after[k], before[k]) for k in untouched)
    assert (model.lm_head.weight is model.model.embed_tokens.weight) == tie
    with torch.no_grad():
        logits = model(torch.arange(10).unsqueeze(0)).logits
    assert logits.shape == (1, 10, len(tok)) and torch.isfinite(logits).all()


def test_head_tied_to_an_embedding_is_skipped_whatever_its_name():
    class Toy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(16, 32)
            self.body = nn.Linear(32, 32)
            self.out = nn.Linear(32, 16, bias=False)
            self.out.weight = self.emb.weight

    toy = Toy()
    head = toy.out.weight.clone()
    get_quantizer("rtn-w4").quantize_model(toy)
    assert torch.equal(toy.out.weight, head) and toy.out.weight is toy.emb.weight
    assert list(get_quantizer("rtn-w4").quantize_weights(toy)) == ["body"]


def test_bad_group_size_for_a_model_leaves_it_untouched(tok):
    model = tiny_llama(tok)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=r"rtn-w4-g64 cannot quantize model\.layers\.0\.self_attn\.q_proj"):
        get_quantizer("rtn-w4-g64").quantize_model(model)  # hidden size 32 is not a multiple of 64
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_fp_leaves_every_parameter_unchanged(tok):
    model = tiny_llama(tok)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    quantizer = get_quantizer("fp")
    assert quantizer.quantize_model(model) is model
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert quantizer.config() == {"name": "fp", "method": "none"}


def test_malformed_quantizer_name_on_the_command_line_is_one_line(capsys) -> None:
    from llm_unlearn.cli import main

    assert main(["diagnose", "target", "unlearned", "--quantizer", "gptq-w5"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "malformed name 'gptq-w5'; expected gptq-w{2,3,4,8}" in err
