"""modifiers/quail.py: QUAIL in the trainer: the hinge without a margin is plain GA + GDR."""

from __future__ import annotations

import torch
from helpers import make_trainer


def test_quail_hinge_without_a_margin_is_plain_ga_gdr(tok, tmp_path) -> None:
    results = []
    for extra in ({}, {"modifiers": {"quail": {"weight": 1.0, "margin": 0.0}}}):
        trainer = make_trainer(tok, tmp_path, "ga_gdr", optim="sgd", max_steps=2, **extra)
        trainer.train()
        results.append([p.detach().clone() for p in trainer.model.parameters()])
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b)
