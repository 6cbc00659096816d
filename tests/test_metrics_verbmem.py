"""metrics/verbmem.py: ROUGE-L by hand; VerbMem's gold is MUSE's, by MUSE's own lines computed by hand, for a
tokenizer that puts a BOS first (the char tokenizer, Llama-like) and for one that does not."""

from __future__ import annotations

import pytest
from conftest import char_tokenizer
from tokenizers import processors
from transformers import PreTrainedTokenizerFast

from llm_unlearn.data.corpora import MuseCorpus
from llm_unlearn.metrics import EvalContext, verbmem

GT = "w" + " word" * 60  # 301 characters = 301 text tokens of the char tokenizer


def without_bos() -> PreTrainedTokenizerFast:
    tok = char_tokenizer()
    tok.backend_tokenizer.post_processor = processors.TemplateProcessing(single="$A")  # like GPT-2's
    return tok


def muse_gold(tok: PreTrainedTokenizerFast, gt: str, max_new_tokens: int = 128) -> str:
    """swj0419/muse_bench metrics/verbmem.py, lines 22 and 35-38, as written there."""
    gt_ids = tok(gt, return_tensors="pt", add_special_tokens=True).input_ids[:, :max_new_tokens]
    return tok.batch_decode(gt_ids, skip_special_tokens=True, clean_up_tokenization_spaces=True)[0]


def test_rouge_l_identical_disjoint_and_partial() -> None:
    assert verbmem.rouge_l("the cat sat", "The cat sat.").fmeasure == 1.0  # case and punctuation ignored
    assert verbmem.rouge_l("the cat sat", "dogs bark loudly").fmeasure == 0.0
    # LCS(the cat sat on the mat, the cat lay on a mat) = the cat on mat: P = R = 4/6
    assert verbmem.rouge_l("the cat sat on the mat", "the cat lay on a mat").fmeasure == pytest.approx(2 / 3)
    # recall is over the gold: a wrong argument order would swap recall and precision
    score = verbmem.rouge_l("a b c d", "a b")
    assert (score.recall, score.precision, score.fmeasure) == pytest.approx((0.5, 1.0, 2 / 3))


@pytest.mark.parametrize(("bos", "text_tokens"), [(True, 127), (False, 128)])
def test_verbmem_gold_is_muses(
    monkeypatch: pytest.MonkeyPatch, tok: PreTrainedTokenizerFast, bos: bool, text_tokens: int
) -> None:
    tokenizer = tok if bos else without_bos()
    gold = GT[:text_tokens]  # MUSE's 128 ids hold the BOS, when there is one, and 127 characters
    assert muse_gold(tokenizer, GT) == gold
    calls = []

    def fake_generate(model, tokenizer, prompts, max_new_tokens, batch_size):
        calls.append((prompts, max_new_tokens, batch_size))
        return [gold, "nothing alike", "never seen"]

    monkeypatch.setattr(verbmem, "generate_greedy", fake_generate)
    records = [{"prompt": f"p{i}", "gt": GT} for i in range(4)]
    ctx = EvalContext(tokenizer, MuseCorpus("t", {"verbmem": {"forget": records}}), batch_size=5, limit=3)
    result = verbmem.verbmem(None, ctx)
    assert calls == [(tokenizer(["p0", "p1", "p2"])["input_ids"], 128, 5)]
    assert [v["score"] for v in result["value_by_index"].values()] == [100.0, 0.0, 0.0]
    assert result["agg_value"] == pytest.approx(100 / 3)
    assert result["value_by_index"][0] == {"score": 100.0, "prompt": "p0", "gold": gold, "output": gold}
