"""bitsandbytes' own layers (`kernels/bnb.py`) against the simulated `bnb-*` quantizers, and
LLM.int8() by hand."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import demo_bench_subset, results_in_both_modes, tiny_llama
from torch import nn

from llm_unlearn.errors import UserError
from llm_unlearn.kernels import evaluation
from llm_unlearn.kernels.bnb import with_bnb_kernels
from llm_unlearn.models import save_checkpoint
from llm_unlearn.quant import get_quantizer

pytest.importorskip("bitsandbytes")


@pytest.mark.parametrize("kind", ["nf4", "fp4"])
def test_4bit_layers_hold_the_simulated_weights(kind, tok):
    model = tiny_llama(tok, hidden_size=64, intermediate_size=128).eval()
    kernels = with_bnb_kernels(copy.deepcopy(model), f"bnb-{kind}")
    get_quantizer(f"bnb-{kind}").quantize_model(model)
    assert not kernels.training and type(kernels.model.layers[0].mlp.up_proj).__name__ == "Linear4bit"
    assert isinstance(kernels.lm_head, nn.Linear)  # the head stays in full precision, as simulated
    x = torch.randint(0, len(tok), (2, 12))
    with torch.no_grad():
        # training mode: bitsandbytes multiplies by the dequantized weight in float32
        torch.testing.assert_close(kernels.train()(x).logits, model(x).logits, rtol=1e-4, atol=1e-5)
        # evaluation mode: the fused CPU kernel where there is one (bfloat16: 8 significant bits)
        torch.testing.assert_close(kernels.eval()(x).logits, model(x).logits, rtol=2e-2, atol=5e-3)


class OneLinear(nn.Module):
    def __init__(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        super().__init__()
        self.proj = nn.Linear(weight.shape[1], weight.shape[0])
        with torch.no_grad():
            self.proj.weight.copy_(weight)
            self.proj.bias.copy_(bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


def test_int8_layer_rounds_the_activations_by_hand():
    w = torch.tensor([[1.0, -0.3], [0.2, 2.0]])
    model = with_bnb_kernels(OneLinear(w, torch.tensor([0.5, -1.0])), "bnb-int8")
    assert type(model.proj).__name__ == "Linear8bitLt" and not model.training
    x = torch.tensor([[0.4, 1.0]])
    # weight rows: max|w| 1 and 2; codes round(127 w / max):
    # [127, round(-38.1) = -38] and [round(12.7) = 13, 127]
    # activations: max|x| = 1; codes [round(50.8) = 51, 127]
    # y0 = (51*127 - 127*38) * 1 * 1 / 127² + 0.5 = 1651/16129 + 0.5
    # y1 = (51*13 + 127*127) * 1 * 2 / 127² - 1 = 33584/16129 - 1
    expected = torch.tensor([[1651 / 16129 + 0.5, 33584 / 16129 - 1]])
    with torch.no_grad():
        y = model(x).float()
    torch.testing.assert_close(y, expected, rtol=1e-3, atol=1e-3)
    # the simulation computes with unrounded activations: 0.4 * 1 - 0.3 (38/127 there) + 0.5
    simulated = 0.4 - 38 / 127 + 0.5
    assert abs(y[0, 0].item() - simulated) > 1e-3


def test_unknown_kernel_is_one_line(tok):
    with pytest.raises(
        UserError, match=r"'rtn-w4': bitsandbytes kernels exist for bnb-nf4, bnb-fp4 and bnb-int8"
    ):
        with_bnb_kernels(tiny_llama(tok), "rtn-w4")


def test_a_recipe_evaluates_bnb_cells_on_the_kernels_and_records_it(tmp_path, tok):
    target = save_checkpoint(tiny_llama(tok, hidden_size=64, intermediate_size=128), tok, tmp_path / "t")
    muse = demo_bench_subset(tmp_path / "muse", {"raw": 3, "verbmem": 2, "knowmem": 2, "privleak": 3})
    recipe = {
        "name": "k",
        "model": {"target": str(target)},
        "models": [{"name": "same", "path": str(target)}],
        "data": {"source": str(muse)},
        "quantize": ["bnb-int8", "rtn-w4-g32"],
        "evaluate": ["privleak"],
    }
    found = results_in_both_modes(recipe, tmp_path)
    kernel, simulated = found["kernels"][("same", "bnb-int8")], found["simulated"][("same", "bnb-int8")]
    assert kernel["evaluation"].startswith("kernels") and simulated["evaluation"].startswith("simulated")
    assert found["kernels"][("same", "rtn-w4-g32")]["evaluation"].startswith("simulated")
    # LLM.int8() rounds activations too: the membership scores move, but only a little
    scores = [[v["score"] for v in r["value_by_index"].values()] for r in (kernel, simulated)]
    assert scores[0] != scores[1]
    assert max(abs(a - b) for a, b in zip(*scores, strict=True)) < 0.5


def test_the_evaluation_field_names_the_evaluated_dtype():
    assert evaluation("fp", False) == "full precision (float32)"
    assert evaluation("rtn-w4-g32", True, torch.bfloat16) == "simulated: dequantized weights in bfloat16"
    assert evaluation("bnb-int8", True, torch.bfloat16).startswith("kernels: bitsandbytes")
