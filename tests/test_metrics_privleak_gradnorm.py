"""PrivLeak by gradient norm (metrics/privleak_gradnorm.py) against open-unlearning's GradNormAttack
computed by hand: loss.backward() per passage, the mean of the parameters' .grad 2-norms, and the
AUC with their labels (forget 0, holdout 1), which is 1 − ours."""

from __future__ import annotations

import copy

import pytest
import torch
from sklearn.metrics import roc_auc_score

from llm_unlearn.data.corpora import MuseCorpus
from llm_unlearn.metrics import METRICS, EvalContext, evaluate

FORGET = ["the cat sat on the mat", "abc abc abc"]
HOLDOUT = ["a dog ran far away today", "xyz", "hello there"]


def their_score(model: torch.nn.Module, tok, text: str) -> float:
    ids = torch.tensor([tok(text)["input_ids"]])
    model.zero_grad()
    logp = model(input_ids=ids).logits.log_softmax(-1)[0, :-1].gather(-1, ids[0, 1:, None])
    (-logp.mean()).backward()
    return torch.stack([p.grad.norm(p=2) for p in model.parameters() if p.grad is not None]).mean().item()


def test_gradnorm_scores_and_auc_equal_the_hand_computation(llama, tok) -> None:
    corpus = MuseCorpus("t", {"privleak": {"forget": FORGET, "holdout": HOLDOUT}})
    llama.train()  # the metric leaves the mode it found
    result = evaluate(llama, EvalContext(tok, corpus), ["privleak_gradnorm"])["privleak_gradnorm"]
    assert llama.training and all(p.grad is None for p in llama.parameters())
    llama.eval()
    hand = copy.deepcopy(llama)
    scores = [their_score(hand, tok, t) for t in [*FORGET, *HOLDOUT]]
    assert [v["score"] for v in result["value_by_index"].values()] == pytest.approx(scores, rel=1e-4)
    theirs = roc_auc_score([0, 0, 1, 1, 1], scores)
    assert result["auc"] == pytest.approx(1 - theirs)
    assert result["agg_value"] == pytest.approx((result["auc"] - 0.5) / 0.5 * 100)
    assert (result["reference"], result["mia_score"]) == ("ideal-0.5", "gradnorm")
    assert result["ci"] is not None

    given = EvalContext(tok, corpus, privleak_reference_auc=0.4)
    result = evaluate(llama, given, ["privleak_gradnorm"])["privleak_gradnorm"]
    assert result["agg_value"] == pytest.approx((1 - theirs - 0.4) / 0.4 * 100)


def test_gradnorm_is_a_privleak_metric_of_transformers_models() -> None:
    m, privleak = METRICS.get("privleak_gradnorm"), METRICS.get("privleak")
    assert (m.role, m.benchmark, m.requires) == ("forget", "muse", {"privleak": ("forget", "holdout")})
    assert (m.reference, m.bootstrap, m.lower_forgets, m.floor) == (
        privleak.reference,
        privleak.bootstrap,
        False,
        0.0,
    )
    assert m.transformers_only and m.default_rank is None
