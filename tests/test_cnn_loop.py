"""cnn/loop.py: step sizes get no weight decay; paired batches keep the forget/retain proportion, and
augmentation keeps shapes."""

from __future__ import annotations

import pytest
import torch

from llm_unlearn.cnn.loop import (
    augment_batch,
    lr_factor,
    paired_batch_sizes,
    param_groups,
)
from llm_unlearn.cnn.models import build_model
from llm_unlearn.cnn.qat import (
    QConv2d,
    QLinear,
    quantize_model,
)


def test_step_sizes_get_no_weight_decay():
    model = quantize_model(build_model("resnet18", 4, 1, 4), 4, 4)
    decayed, steps = param_groups(model, 5e-4)
    assert steps["weight_decay"] == 0.0 and decayed["weight_decay"] == 5e-4
    assert len(steps["params"]) == 2 * sum(isinstance(m, QConv2d | QLinear) for m in model.modules())
    assert len(decayed["params"]) + len(steps["params"]) == len(list(model.parameters()))


def test_paired_batches_split_in_forget_retain_proportion_and_augmentation_keeps_shape():
    assert paired_batch_sizes(256, 4500, 40500) == (26, 230)
    assert paired_batch_sizes(8, 1, 1000) == (1, 7)
    assert [lr_factor(i, 10, "cosine") for i in (0, 5, 10)] == pytest.approx([1.0, 0.5, 0.0])
    assert lr_factor(7, 10, "constant") == 1.0
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float).view(2, 3, 8, 8)
    assert augment_batch(x, "crop_flip", torch.Generator().manual_seed(0)).shape == x.shape
    assert augment_batch(x, "none", torch.Generator()) is x
