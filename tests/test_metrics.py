"""Metrics: hand-computed values for the pure parts, batch invariance and end-to-end runs on tiny models."""

from __future__ import annotations

import math
import zlib
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

from llm_unlearn.data.corpora import MuseCorpus
from llm_unlearn.metrics import METRICS, EvalContext, evaluate, knowmem, privleak, required_splits, verbmem
from llm_unlearn.metrics.generation import (
    generate_greedy,
    min_k_plus_plus_zscores,
    token_logprobs,
    token_min_k_plus_plus_zscores,
)
from llm_unlearn.registry import UnknownNameError


class Bigram(nn.Module):
    """Has 'memorised' text made of "ab": predicts a->b and b->a almost surely, anything else uniformly."""

    def __init__(self, tok: PreTrainedTokenizerFast) -> None:
        super().__init__()
        a, b = tok.convert_tokens_to_ids(["a", "b"])
        table = torch.zeros(len(tok), len(tok))
        table[a, b] = table[b, a] = 12.0
        self.table = nn.Parameter(table, requires_grad=False)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> SimpleNamespace:
        return SimpleNamespace(logits=self.table[input_ids])


PROMPTS = ["Question: who?\nAnswer: ", "hi", "The quick brown fox jumps over", "x" * 41, "ab"]


def corpus(**splits: dict[str, list]) -> MuseCorpus:
    return MuseCorpus("test", splits)


# --- ROUGE-L ---------------------------------------------------------------------------------


def test_rouge_l_identical_disjoint_and_partial() -> None:
    assert verbmem.rouge_l("the cat sat", "The cat sat.").fmeasure == 1.0  # case and punctuation ignored
    assert verbmem.rouge_l("the cat sat", "dogs bark loudly").fmeasure == 0.0
    # LCS(the cat sat on the mat, the cat lay on a mat) = the cat on mat: P = R = 4/6
    assert verbmem.rouge_l("the cat sat on the mat", "the cat lay on a mat").fmeasure == pytest.approx(2 / 3)
    # recall is over the gold: a wrong argument order would swap recall and precision
    score = verbmem.rouge_l("a b c d", "a b")
    assert (score.recall, score.precision, score.fmeasure) == pytest.approx((0.5, 1.0, 2 / 3))


# --- PrivLeak pure parts ---------------------------------------------------------------------


def test_membership_auc_convention() -> None:
    # members score lowest (memorised) -> 0; members highest -> 1; a swapped label would flip these
    assert privleak.membership_auc([1.0, 2.0], [3.0, 4.0]) == 0.0
    assert privleak.membership_auc([3.0, 4.0], [1.0, 2.0]) == 1.0
    assert privleak.membership_auc([2.0, 2.0], [2.0, 2.0]) == 0.5
    # P(member score > non-member score) over the 4 pairs: only (3, 2)
    assert privleak.membership_auc([1.0, 3.0], [2.0, 4.0]) == 0.25


def test_privleak_value() -> None:
    assert privleak.privleak_value(0.25, 0.5) == -50.0
    assert privleak.privleak_value(0.5, 0.5) == 0.0
    assert privleak.privleak_value(0.6, 0.4) == pytest.approx(50.0)


def test_min_k_score_by_hand() -> None:
    lp = torch.tensor([-1.0, -5.0, -2.0, -8.0, -3.0])
    assert privleak.min_k_score(lp, 0.4) == pytest.approx(6.5)  # floor(5 * 0.4) = 2 lowest: -8, -5
    assert privleak.min_k_score(lp, 0.1) == pytest.approx(8.0)  # at least one token
    assert privleak.min_k_score(lp, 1.0) == pytest.approx(3.8)
    assert privleak.min_k_score(lp[:4], 0.4) == pytest.approx(8.0)  # floor(1.6) = 1, as MUSE's int()
    with pytest.raises(ValueError, match="no scored tokens"):
        privleak.min_k_score(torch.tensor([]), 0.4)


def test_loss_and_zlib_scores() -> None:
    lp = torch.tensor([-1.0, -3.0])
    assert privleak.loss_score(lp) == 2.0
    assert privleak.zlib_score(lp, "abcabc") == pytest.approx(2.0 / len(zlib.compress(b"abcabc")))


def test_min_k_plus_plus_zscores_by_hand() -> None:
    # p = (1/2, 1/4, 1/4): mu = -1.5 ln 2, sigma = ln 2 / 2, so z = +1 for token 0, -1 for token 1;
    # a uniform row has sigma 0 and every z 0 (finite, thanks to the floor)
    log_probs = torch.tensor([[0.5, 0.25, 0.25], [0.5, 0.25, 0.25], [1 / 3, 1 / 3, 1 / 3]]).log()
    z = min_k_plus_plus_zscores(log_probs, torch.tensor([0, 1, 2]))
    assert z.tolist() == pytest.approx([1.0, -1.0, 0.0], abs=1e-5)
    # the lowest 40 % of (1, -1, 0, 2, 3) is (-1, 0): score 0.5
    assert privleak.min_k_score(torch.tensor([1.0, -1.0, 0.0, 2.0, 3.0]), 0.4) == pytest.approx(0.5)


# --- KnowMem pure parts ----------------------------------------------------------------------


def test_knowmem_prompt_format() -> None:
    icl = [{"question": "Q1?", "answer": "A1"}, {"question": "Q2?", "answer": "A2"}]
    expected = "Question: Q1?\nAnswer: A1\n\nQuestion: Q2?\nAnswer: A2\n\nQuestion: Q3?\nAnswer: "
    assert knowmem.build_prompt(icl, "Q3?") == expected
    assert knowmem.build_prompt([], "Q?") == "Question: Q?\nAnswer: "


@pytest.mark.parametrize(
    ("output", "cut"),
    [
        (" Paris\n\nQuestion: x", "Paris"),
        ("Paris\nQuestion: x", "Paris"),
        ("Paris Question: x", "Paris"),
        ("Paris. Question: a\n\nb", "Paris."),  # the earliest stop wins, not the first listed
        ("two\nlines ", "two\nlines"),
        ("", ""),
    ],
)
def test_cut_answer(output: str, cut: str) -> None:
    assert knowmem.cut_answer(output) == cut


# --- batched == unbatched --------------------------------------------------------------------


def test_greedy_batched_equals_unbatched(llama: LlamaForCausalLM, tok: PreTrainedTokenizerFast) -> None:
    one = generate_greedy(llama, tok, PROMPTS, 12, batch_size=1)
    many = generate_greedy(llama, tok, PROMPTS, 12, batch_size=3)
    assert many == one
    assert any(one)
    assert tok.padding_side == "right" and not llama.training


def test_logprobs_batched_equals_unbatched(llama: LlamaForCausalLM, tok: PreTrainedTokenizerFast) -> None:
    llama.train()  # the mode must come back as it was
    one = token_logprobs(llama, tok, PROMPTS, batch_size=1)
    many = token_logprobs(llama, tok, PROMPTS, batch_size=4)
    assert llama.training
    llama.eval()
    assert [t.shape[0] for t in one] == [len(p) for p in PROMPTS]  # BOS + n chars -> n values
    for a, b in zip(one, many, strict=True):
        assert a.dtype == torch.float32 and (a <= 0).all()
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    # the first value is log p(first char | BOS), from an unpadded single forward pass
    ids = tok(PROMPTS[2], return_tensors="pt")["input_ids"]
    ref = llama(ids).logits[0, 0].log_softmax(-1)[ids[0, 1]]
    assert one[2][0].item() == pytest.approx(ref.item(), abs=1e-5)
    assert token_logprobs(llama, tok, PROMPTS, batch_size=2, max_length=5)[2].shape[0] == 4


def test_min_k_plus_plus_batched_equals_unbatched(
    llama: LlamaForCausalLM, tok: PreTrainedTokenizerFast
) -> None:
    one = token_min_k_plus_plus_zscores(llama, tok, PROMPTS, batch_size=1)
    many = token_min_k_plus_plus_zscores(llama, tok, PROMPTS, batch_size=4)
    for a, b in zip(one, many, strict=True):
        # a random model is near uniform, so 1/sigma magnifies float32 noise: a looser tolerance
        torch.testing.assert_close(a, b, atol=1e-4, rtol=0)


# --- metrics end to end ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["privleak", "privleak_loss", "privleak_zlib", "privleak_min_k_plus_plus"])
def test_privleak_metrics_on_memorising_model(name: str, tok: PreTrainedTokenizerFast) -> None:
    # forget = [A, A], holdout = [C, A] where A is memorised: the pairs (A, C) give 0 and (A, A)
    # ties give 0.5, so AUC = 1/4. A flipped convention would give 3/4.
    a, c = "ab" * 10, "cd" * 10
    data = corpus(privleak={"forget": [a, a], "holdout": [c, a]})
    result = METRICS.get(name).fn(Bigram(tok), EvalContext(tok, data, batch_size=3))
    assert result["auc"] == pytest.approx(0.25)
    assert result["agg_value"] == pytest.approx(-50.0)
    assert (result["reference"], result["reference_auc"]) == ("ideal-0.5", 0.5)
    assert [v["member"] for v in result["value_by_index"].values()] == [True, True, False, False]
    s = [v["score"] for v in result["value_by_index"].values()]
    assert s[0] < s[2]  # higher = less likely a member

    result = METRICS.get(name).fn(Bigram(tok), EvalContext(tok, data, privleak_reference_auc=0.4))
    assert result["agg_value"] == pytest.approx((0.25 - 0.4) / 0.4 * 100)
    assert (result["reference"], result["reference_auc"]) == ("retrain", 0.4)


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


def test_knowmem_cuts_and_scores(monkeypatch: pytest.MonkeyPatch, tok: PreTrainedTokenizerFast) -> None:
    seen = []

    def fake_generate(model, tokenizer, prompts, max_new_tokens, batch_size, share_prefix):
        seen.append((prompts, max_new_tokens, share_prefix))
        return [" the cat\n\nQuestion: more", "a dog"]

    monkeypatch.setattr(knowmem, "generate_greedy", fake_generate)
    icl = [{"question": "Q0", "answer": "A0"}]
    qa = [{"question": "Q1", "answer": "the cat sat"}, {"question": "Q2", "answer": "a dog"}]
    result = knowmem.knowmem_forget(
        None, EvalContext(tok, corpus(knowmem={"forget_qa": qa, "forget_qa_icl": icl}))
    )
    prompts = [knowmem.build_prompt(icl, "Q1"), knowmem.build_prompt(icl, "Q2")]
    assert seen == [(tok(prompts)["input_ids"], 32, True)]
    first = result["value_by_index"][0]
    # "the cat" vs "the cat sat": P = 1, R = 2/3, F1 = 0.8
    assert first == {
        "score": pytest.approx(80.0),
        "recall": pytest.approx(200 / 3),
        "question": "Q1",
        "gold": "the cat sat",
        "output": "the cat",
    }
    assert result["agg_value"] == pytest.approx(90.0)
    assert result["recall"] == pytest.approx((200 / 3 + 100) / 2)


def test_evaluate_all_metrics_on_tiny_llama(llama: LlamaForCausalLM, tok: PreTrainedTokenizerFast) -> None:
    qa = [{"question": "Who?", "answer": "Ann"}, {"question": "Where?", "answer": "Rome"}]
    data = corpus(
        verbmem={"forget": [{"prompt": "Once upon", "gt": "a time there was"}] * 3},
        knowmem={"forget_qa": qa, "forget_qa_icl": qa[:1], "retain_qa": qa, "retain_qa_icl": qa[1:]},
        privleak={"forget": ["alpha beta", "gamma delta epsilon"], "holdout": ["zeta eta", "theta"]},
    )
    # the MUSE metrics; TOFU's, WMDP's and lm-eval's read other data (test_metrics_tofu.py,
    # test_metrics_wmdp.py, test_metrics_harness.py)
    names = [n for n in METRICS.names() if not n.startswith(("tofu_", "lm_eval", "wmdp_", "mmlu"))]
    results = evaluate(llama, EvalContext(tok, data, batch_size=2, limit=2), names)
    assert list(results) == names
    for name, result in results.items():
        assert math.isfinite(result["agg_value"]), name
        assert len(result["value_by_index"]) == (4 if name.startswith("privleak") else 2), name
    assert 0 <= results["knowmem_forget"]["recall"] <= 100


def test_required_splits_and_unknown_names() -> None:
    assert required_splits(["verbmem", "knowmem_forget", "knowmem_retain", "privleak", "privleak_zlib"]) == {
        "verbmem": {"forget"},
        "knowmem": {"forget_qa", "forget_qa_icl", "retain_qa", "retain_qa_icl"},
        "privleak": {"forget", "holdout"},
    }
    with pytest.raises(UnknownNameError, match="privleak_min_k_plus_plus"):
        required_splits(["nope"])
    with pytest.raises(UnknownNameError):
        evaluate(None, None, ["verbmem", "nope"])
