"""metrics/verbmem.py: ROUGE-L by hand and VerbMem against the cut gold continuation."""

from __future__ import annotations

import pytest
from helpers import corpus
from transformers import PreTrainedTokenizerFast

from llm_unlearn.metrics import EvalContext, verbmem

# --- ROUGE-L ---------------------------------------------------------------------------------


def test_rouge_l_identical_disjoint_and_partial() -> None:
    assert verbmem.rouge_l("the cat sat", "The cat sat.").fmeasure == 1.0  # case and punctuation ignored
    assert verbmem.rouge_l("the cat sat", "dogs bark loudly").fmeasure == 0.0
    # LCS(the cat sat on the mat, the cat lay on a mat) = the cat on mat: P = R = 4/6
    assert verbmem.rouge_l("the cat sat on the mat", "the cat lay on a mat").fmeasure == pytest.approx(2 / 3)
    # recall is over the gold: a wrong argument order would swap recall and precision
    score = verbmem.rouge_l("a b c d", "a b")
    assert (score.recall, score.precision, score.fmeasure) == pytest.approx((0.5, 1.0, 2 / 3))


def test_verbmem_scores_cut_gold(monkeypatch: pytest.MonkeyPatch, tok: PreTrainedTokenizerFast) -> None:
    gt = "w" + " word" * 60  # 301 characters = tokens; the gold keeps the first 128
    gold = gt[:128]
    calls = []

    def fake_generate(model, tokenizer, prompts, max_new_tokens, batch_size):
        calls.append((prompts, max_new_tokens, batch_size))
        return [gold, "nothing alike", "never seen"]

    monkeypatch.setattr(verbmem, "generate_greedy", fake_generate)
    records = [{"prompt": f"p{i}", "gt": gt} for i in range(4)]
    ctx = EvalContext(tok, corpus(verbmem={"forget": records}), batch_size=5, limit=3)
    result = verbmem.verbmem(None, ctx)
    assert calls == [(tok(["p0", "p1", "p2"])["input_ids"], 128, 5)]
    assert [v["score"] for v in result["value_by_index"].values()] == [100.0, 0.0, 0.0]
    assert result["agg_value"] == pytest.approx(100 / 3)
    assert result["value_by_index"][0] == {"score": 100.0, "prompt": "p0", "gold": gold, "output": gold}
