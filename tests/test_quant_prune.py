"""Pruning columns (`prune-mag-{N}`, `prune-24`, `prune-wanda-{N}`): a column added as one file of quant/."""

from __future__ import annotations

import copy
import importlib.util

import pytest
import torch
from conftest import tiny_llama
from torch.nn.utils import prune as torch_prune

from llm_unlearn.audit.cache import CHANGED, CODES, CONFIG, SOURCE, is_valid, load_cell, quantized
from llm_unlearn.columns import column_kind, is_format, route
from llm_unlearn.errors import UserError
from llm_unlearn.models import load_model, save_checkpoint
from llm_unlearn.quant import get_quantizer
from llm_unlearn.quant.calibration import GENERIC_TEXT, build_calibration
from llm_unlearn.quant.prune import MASKS, Prune, read_sparsity, wanda_mask
from llm_unlearn.quant.rtn import quantization_targets

#: SparseGPT runs through llm-compressor, in the gptq venv (`.ci/run`'s backend job)
needs_llmcompressor = pytest.mark.skipif(
    importlib.util.find_spec("llmcompressor") is None, reason="SparseGPT needs llm-compressor"
)


@pytest.fixture(scope="module")
def calibration(tok):
    return build_calibration([GENERIC_TEXT.read_text()], tok, "generic", samples=3, seq_len=16, seed=0)


def column(name, calibration=None):
    """A fresh column, given the calibration windows where it needs them (as the audit does)."""
    quantizer = get_quantizer(name)
    quantizer.calibration = calibration if quantizer.needs_calibration else None
    return quantizer


def pruned(name, model, calibration=None):
    quantizer = column(name, calibration)
    return quantizer, quantizer.quantize_model(model)


def untouched_outside_the_targets(before, model):
    targets = {f"{name}.weight" for name, _ in quantization_targets(model)}
    for key, value in model.state_dict().items():
        if key not in targets:
            assert torch.equal(value, before[key]), key


@pytest.mark.parametrize("percent", [10, 50, 73])
def test_magnitude_pruning_is_torch_l1_unstructured_per_weight(percent, tok):
    model = tiny_llama(tok)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    reference = copy.deepcopy(model)
    quantizer, model = pruned(f"prune-mag-{percent}", model)
    targets = dict(quantization_targets(reference))
    assert len(targets) == 14  # 7 Linears a block, the head left whole
    for name, module in targets.items():
        torch_prune.l1_unstructured(module, "weight", amount=percent / 100)
        torch_prune.remove(module, "weight")
        assert torch.equal(model.get_submodule(name).weight, module.weight), name
        zeros = (module.weight == 0).sum().item() / module.weight.numel()
        assert quantizer.sparsity[name] == zeros
        assert zeros == pytest.approx(percent / 100, abs=1 / module.weight.numel())
    untouched_outside_the_targets(before, model)


def test_two_of_four_zeroes_the_two_smallest_of_every_four_inputs(tok):
    model = tiny_llama(tok)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    quantizer, model = pruned("prune-24", model)
    for name, module in quantization_targets(model):
        w = before[f"{name}.weight"].tolist()
        expected = [row[:] for row in w]
        for i, row in enumerate(w):
            for start in range(0, len(row), 4):
                group = sorted(range(start, start + 4), key=lambda j: abs(row[j]))
                for j in group[:2]:
                    expected[i][j] = 0.0
        assert torch.equal(module.weight, torch.tensor(expected)), name
        assert quantizer.sparsity[name] == 0.5
    untouched_outside_the_targets(before, model)


def test_the_wanda_score_weighs_each_weight_by_its_input_norm():
    weight = torch.tensor([[4.0, -1.0, 2.0, 3.0], [20.0, 0.1, -6.0, 0.5]])
    tokens = torch.tensor([[0.1, 3.0, 1.0, 0.0], [0.0, 4.0, 1.0, 0.2], [0.0, 0.0, 1.0, 0.0]])
    norms = [sum(tokens[t, j].item() ** 2 for t in range(3)) ** 0.5 for j in range(4)]  # 0.1, 5, √3, 0.2
    scores = [[abs(weight[i, j].item()) * norms[j] for j in range(4)] for i in range(2)]
    # row 0: 0.4, 5, 3.46, 0.6 -> the two lowest are inputs 0 and 3; row 1: 2, 0.5, 10.4, 0.1 -> 1 and 3
    expected = torch.ones(2, 4, dtype=torch.bool)
    for i in range(2):
        for j in sorted(range(4), key=lambda j: scores[i][j])[:2]:
            expected[i, j] = False
    mask = wanda_mask(weight, tokens.norm(dim=0), 50)
    assert torch.equal(mask, expected)
    # magnitude alone would keep inputs 0 and 3 of row 0 (4 and 3 are its largest |w|): Wanda does not
    assert mask.tolist() == [[False, True, True, False], [True, False, True, False]]


def test_wanda_prunes_block_by_block_on_the_activations_of_the_blocks_before_it_pruned(tok, calibration):
    model = tiny_llama(tok)
    reference = copy.deepcopy(model)
    quantizer, model = pruned("prune-wanda-50", model, calibration)
    ids = torch.tensor([list(w) for w in calibration.input_ids])
    for block in range(2):
        layer = reference.model.layers[block]
        seen = inputs_of_each_linear(reference, layer, ids)
        assert len(seen) == 7
        for sub, inputs in seen.items():
            module = layer.get_submodule(sub)
            x = torch.cat(inputs).reshape(-1, module.in_features)
            score = module.weight.abs() * x.norm(dim=0)
            kept = torch.ones_like(score, dtype=torch.bool)
            for i in range(score.shape[0]):
                kept[i, score[i].argsort()[: module.in_features // 2]] = False
            with torch.no_grad():
                module.weight.mul_(kept)  # the next block sees this block pruned
            name = f"model.layers.{block}.{sub}"
            assert torch.equal(model.get_submodule(name).weight, module.weight), name
            assert quantizer.sparsity[name] == 0.5


def inputs_of_each_linear(model, layer, ids):
    """The inputs every Linear of `layer` gets when `model` runs on `ids`, by name within the layer."""
    seen: dict[str, list[torch.Tensor]] = {}

    def hook(name):
        return lambda module, args: seen.setdefault(name, []).append(args[0])

    linears = [(n, m) for n, m in layer.named_modules() if isinstance(m, torch.nn.Linear)]
    hooks = [module.register_forward_pre_hook(hook(name)) for name, module in linears]
    with torch.no_grad():
        model(input_ids=ids)
    for handle in hooks:
        handle.remove()
    return seen


def sparsegpt_by_hand(w, x, sparsity, block=128, damp=0.01):
    """IST-DASLab/sparsegpt's `fasterprune` (unstructured), `x` [tokens, in]: H = 2XᵀX + λI, per block
    of inputs the lowest w² / [H⁻¹]_jj² zeroed and each column's error moved onto the later ones."""
    W, cols = w.clone().float(), w.shape[1]
    H = 2 * x.T.float() @ x.float()
    H += damp * H.diag().mean() * torch.eye(cols)
    Hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)
    for i1 in range(0, cols, block):
        i2 = min(i1 + block, cols)
        W1, Hinv1 = W[:, i1:i2].clone(), Hinv[i1:i2, i1:i2]
        score = W1**2 / Hinv1.diag()[None, :] ** 2
        pruned = score <= score.flatten().sort().values[int(score.numel() * sparsity)]
        Q1, Err1 = torch.zeros_like(W1), torch.zeros_like(W1)
        for i in range(i2 - i1):
            q = torch.where(pruned[:, i], 0.0, W1[:, i])
            Q1[:, i] = q
            Err1[:, i] = (W1[:, i] - q) / Hinv1[i, i]
            W1[:, i:] -= Err1[:, i : i + 1] @ Hinv1[i : i + 1, i:]
        W[:, i1:i2] = Q1
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]
    return W


@needs_llmcompressor
def test_sparsegpt_is_the_papers_algorithm_on_the_first_blocks_inputs(tok, calibration, tmp_path):
    checkpoint = save_checkpoint(tiny_llama(tok), tok, tmp_path / "m")
    reference = load_model(checkpoint)
    quantizer, model = pruned("prune-sparsegpt-50", load_model(checkpoint), calibration)
    ids = torch.tensor([list(w) for w in calibration.input_ids])
    layer = reference.model.layers[0]  # the first block's inputs are the unpruned model's
    seen = inputs_of_each_linear(reference, layer, ids)
    assert len(seen) == 7
    for sub, inputs in seen.items():
        module = layer.get_submodule(sub)
        expected = sparsegpt_by_hand(module.weight, torch.cat(inputs).reshape(-1, module.in_features), 0.5)
        got = model.get_submodule(f"model.layers.0.{sub}").weight
        assert torch.equal(got == 0, expected == 0), sub
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    for name, module in quantization_targets(model):
        # SparseGPT zeroes int(numel · s) + 1 weights a block (its threshold's own weight too)
        assert quantizer.sparsity[name] == (module.weight == 0).sum().item() / module.weight.numel()
        assert 0.5 < quantizer.sparsity[name] < 0.52
    assert quantizer.config()["library"].startswith("llmcompressor")


MALFORMED = ["prune", "prune-mag", "prune-mag-0", "prune-mag-100", "prune-mag-050", "prune-wanda-x",
             "prune-24-50", "prune-sparse-50", "prune-sparsegpt-0"]  # fmt: skip


@pytest.mark.parametrize("name", MALFORMED)
def test_a_malformed_pruning_name_is_one_line_showing_the_pattern(name):
    pattern = (
        r"expected prune-mag-\{1\.\.99\}, prune-24, prune-wanda-\{1\.\.99\}, prune-sparsegpt-\{1\.\.99\}"
    )
    with pytest.raises(UserError, match=pattern) as err:
        get_quantizer(name)
    assert "\n" not in str(err.value)


def test_a_pruning_column_is_an_attack_not_a_format(calibration):
    mag, wanda = column("prune-mag-30", calibration), column("prune-wanda-60", calibration)
    assert mag.config() == {
        "name": "prune-mag-30",
        "method": "prune",
        "criterion": "magnitude",
        "sparsity": 0.3,
        "granularity": "layer",
        "calibration": None,
        "skipped": ["lm_head", "output embeddings", "Linear weights tied to an nn.Embedding"],
        "evaluation": "the checkpoint's weights with the pruned ones set to zero",
    }
    assert wanda.config()["calibration"] == calibration.record()
    assert get_quantizer("prune-24").config()["sparsity"] == 0.5
    for quantizer in (mag, wanda, get_quantizer("prune-24")):
        config = quantizer.config()
        assert column_kind(config) is Prune
        assert (route(config), is_format(config), quantizer.has_codes) == ("attack", False, False)
    sparsegpt = get_quantizer("prune-sparsegpt-50")
    assert (mag.needs_calibration, wanda.needs_calibration, sparsegpt.needs_calibration) == (
        False,
        True,
        True,
    )
    # the masks rebuild a cell, except SparseGPT's: it moves the weights it keeps
    assert (mag.artifacts_hold_the_model, sparsegpt.artifacts_hold_the_model) == (True, False)


def test_two_of_four_refuses_an_input_dim_not_a_multiple_of_four(tok):
    heads = {"num_attention_heads": 3, "num_key_value_heads": 3}
    model = tiny_llama(tok, hidden_size=30, intermediate_size=60, **heads)
    message = r"prune-24 cannot prune model.layers.0.self_attn.q_proj: input dim 30 is not a multiple of 4"
    with pytest.raises(UserError, match=message):
        get_quantizer("prune-24").check_model(model)


@pytest.mark.parametrize(
    "name",
    [
        "prune-mag-50",
        "prune-24",
        "prune-wanda-40",
        pytest.param("prune-sparsegpt-60", marks=needs_llmcompressor),
    ],
)
def test_a_cached_cell_is_rebuilt_bit_for_bit(name, tok, tmp_path, calibration):
    checkpoint = save_checkpoint(tiny_llama(tok, tie_word_embeddings=True), tok, tmp_path / "m")
    fresh_quantizer, fresh = pruned(name, load_model(checkpoint), calibration)
    cell = tmp_path / "cell"
    first = quantized(checkpoint, column(name, calibration), cell)
    assert is_valid(cell, column(name, calibration), checkpoint)
    # the masks, or for SparseGPT the changed weights (its codes file is empty: no integer codes)
    kept = [MASKS] if fresh_quantizer.artifacts_hold_the_model else [CHANGED, CODES]
    assert sorted(p.name for p in cell.iterdir()) == sorted([*kept, CONFIG, SOURCE, "sparsity.json"])
    if fresh_quantizer.artifacts_hold_the_model:
        bits = sum(m.weight.numel() for _, m in quantization_targets(fresh))
        assert (cell / MASKS).stat().st_size < bits / 8 + 4096  # one bit a weight, not a copy
    assert read_sparsity(cell) == fresh_quantizer.sparsity
    rebuilt = load_cell(cell, checkpoint, column(name, calibration))
    again = quantized(checkpoint, column(name, calibration), cell)  # read from the cache
    for key, value in fresh.state_dict().items():
        for network in (first, rebuilt, again):
            assert torch.equal(network.state_dict()[key], value), key
