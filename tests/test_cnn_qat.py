"""cnn/qat.py: LSQ's quantizer by hand (range, forward, straight-through and step gradients), the
activation quantizer, and which layers a quantized model keeps at full precision."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from llm_unlearn.cnn.models import build_model
from llm_unlearn.cnn.qat import (
    LSQQuantizer,
    QConv2d,
    QLinear,
    export_codes,
    lsq_quantize,
    qrange,
    quantize_model,
)


def test_qrange_signed_and_unsigned():
    assert qrange(4, signed=True) == (8, 7)
    assert qrange(4, signed=False) == (0, 15)


def test_lsq_forward_is_round_clip_times_step():
    v = torch.tensor([-3.0, -0.74, -0.26, 0.0, 0.24, 0.26, 0.9, 5.0])
    s = torch.tensor(0.5)
    out = lsq_quantize(v, s, q_n=4, q_p=3, numel=v.numel())
    expected = torch.tensor([-4, -1, -1, 0, 0, 1, 2, 3], dtype=torch.float) * 0.5  # round(clip(v/s, -4, 3))
    torch.testing.assert_close(out, expected)
    # SGD can carry a learned step through zero; its magnitude is the step
    torch.testing.assert_close(lsq_quantize(v, -s, q_n=4, q_p=3, numel=v.numel()), expected)


def test_ste_passes_gradient_inside_the_range_only():
    v = torch.tensor([-3.0, -1.2, 0.3, 1.4, 2.0], requires_grad=True)
    lsq_quantize(v, torch.tensor(0.5), q_n=4, q_p=3, numel=5).sum().backward()
    # clip range is [-4·0.5, 3·0.5] = [-2, 1.5]
    torch.testing.assert_close(v.grad, torch.tensor([0.0, 1.0, 1.0, 1.0, 0.0]))


def test_step_gradient_is_scaled_by_one_over_sqrt_n_qp():
    v = torch.tensor([-3.0, -0.7, 0.3, 0.8, 2.0])
    s = torch.tensor(0.5, requires_grad=True)
    q_n, q_p, n = 4, 3, 5
    lsq_quantize(v, s, q_n, q_p, numel=n).sum().backward()
    # LSQ: ∂v̂/∂s = −Q_N below, Q_P above, round(v/s) − v/s inside
    per_element = [-q_n, round(-1.4) + 1.4, round(0.6) - 0.6, round(1.6) - 1.6, q_p]
    assert s.grad.item() == pytest.approx(sum(per_element) / math.sqrt(n * q_p), rel=1e-5)


def test_activation_quantizer_initialises_step_and_sign_and_counts_per_sample():
    q = LSQQuantizer(4, signed=None, per_sample=True)
    x = torch.rand(6, 3, 4, 4)  # non-negative, as after ReLU
    q(x)
    assert not bool(q.signed)
    assert q.step.item() == pytest.approx(2 * x.abs().mean().item() / math.sqrt(15), rel=1e-5)
    signed = LSQQuantizer(4, signed=None, per_sample=True)
    signed(x - 0.5)
    assert bool(signed.signed)


def test_quantize_model_keeps_first_conv_and_classifier_full_precision_and_exports_codes():
    model = quantize_model(build_model("resnet18", 10, 3, 4), 4, 4)
    assert type(model.conv1) is nn.Conv2d and type(model.fc) is nn.Linear
    assert isinstance(model.layers[0][0].conv1, QConv2d)
    model(torch.randn(2, 3, 8, 8))
    codes = export_codes(model)
    layer = model.layers[1][0].conv1
    entry = codes["layers.1.0.conv1"]
    assert entry["codes"].dtype == torch.int32 and entry["codes"].abs().max() <= 8
    torch.testing.assert_close(
        entry["codes"].float() * entry["weight_step"], layer.weight_quant(layer.weight)
    )
    mobile = quantize_model(build_model("mobilenetv2", 5, 1, 0.25), 2, 8, full_precision_ends=False)
    assert isinstance(mobile.features[0], QConv2d) and isinstance(mobile.classifier, QLinear)
    assert mobile(torch.randn(2, 1, 8, 8)).shape == (2, 5)
