"""Evaluation speed-ups that must not change a number: the shared prefix cache, padding-bounded batches."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_llama
from helpers import CONTEXT, tiny_gpt2
from torch import nn
from transformers import MistralConfig, MistralForCausalLM, PreTrainedTokenizerFast

from llm_unlearn.data.corpora import MuseCorpus
from llm_unlearn.metrics import EvalContext, knowmem
from llm_unlearn.metrics.generation import _batches, generate_greedy, shared_prefix_length, token_logprobs

ICL = "Question: Who wrote it?\nAnswer: Ann Bell\n\nQuestion: Where?\nAnswer: Rome\n\n"
QUESTIONS = ["Who?", "When was the bridge built, and by whom?", "Why", "Which town lies by the river?"]


def lively(tok: PreTrainedTokenizerFast, arch: str) -> nn.Module:
    # at the default init scale a random tiny model repeats one token whatever the prompt
    if arch == "gpt2":
        return tiny_gpt2(tok, initializer_range=0.2)
    if arch == "mistral":  # sliding windows count padding as positions: no shared prefix there
        torch.manual_seed(0)
        config = MistralConfig(
            vocab_size=len(tok),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            sliding_window=48,
            initializer_range=0.2,
            pad_token_id=tok.pad_token_id,
        )
        return MistralForCausalLM(config).eval()
    return tiny_llama(tok, max_position_embeddings=CONTEXT, initializer_range=0.2).eval()


def test_shared_prefix_length_by_hand() -> None:
    assert shared_prefix_length([[1, 5, 6, 7], [1, 5, 6, 8, 9], [1, 5, 6, 7, 2]]) == 3
    assert shared_prefix_length([[1, 5, 6], [1, 5, 6, 7]]) == 2  # the shorter row keeps its last token
    assert shared_prefix_length([[1, 5, 6]]) == 2
    assert shared_prefix_length([[1, 5], [2, 5]]) == 0
    assert shared_prefix_length([[1]]) == 0
    assert shared_prefix_length([]) == 0


@pytest.mark.parametrize("arch", ["gpt2", "llama", "mistral"])
@pytest.mark.parametrize("batch_size", [1, 3])
def test_cached_prefix_generates_the_same(arch: str, batch_size: int, tok: PreTrainedTokenizerFast) -> None:
    model = lively(tok, arch)
    prompts = [f"{ICL}Question: {q}\nAnswer: " for q in QUESTIONS]
    plain = generate_greedy(model, tok, prompts, 20, batch_size=1)
    cached = generate_greedy(model, tok, prompts, 20, batch_size=batch_size, share_prefix=True)
    assert cached == plain
    assert len(set(plain)) > 1  # different questions, different continuations: the test can fail


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_knowmem_cached_equals_plain_with_and_without_cuts(
    arch: str, tok: PreTrainedTokenizerFast, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = lively(tok, arch)
    shots = [
        {"question": f"Which {w} town is old?", "answer": "Bath " * 4} for w in ("first", "next", "last")
    ]
    # 3 x 48 + BOS + 21..: the short questions fit with all pairs, the longer lose 1 or 2, the last is cut
    questions = ["Who?", "Why?", "W" * 70 + "?", "X" * 70 + "?", "Y" * 120 + "?", "Z" * 300 + "?"]
    data = MuseCorpus(
        "k",
        {
            "knowmem": {
                "forget_qa": [{"question": q, "answer": "Bath"} for q in questions],
                "forget_qa_icl": shots,
            }
        },
    )
    ctx = EvalContext(tok, data, batch_size=2)
    cached = knowmem.knowmem_forget(model, ctx)
    real = knowmem.generate_greedy
    monkeypatch.setattr(
        knowmem,
        "generate_greedy",
        lambda m, t, p, n, b, share_prefix: real(m, t, p, n, b, share_prefix=False),
    )
    plain = knowmem.knowmem_forget(model, ctx)
    assert cached == plain
    assert cached["cut_inputs"] == 4


def test_scoring_batches_bound_the_padding() -> None:
    ids = [[0] * n for n in (50, 100, 95, 89, 91, 10)]
    # longest first: 100, 95, 91 | 89 (more than 10 % below 100) | 50 | 10
    assert list(_batches(ids, 8, max_padding=0.1)) == [[1, 2, 4], [3], [0], [5]]
    # 2 a batch: 100, 95 | 91, 89 (2 % below 91) | 50 | 10
    assert list(_batches(ids, 2, max_padding=0.1)) == [[1, 2], [4, 3], [0], [5]]
    assert list(_batches(ids, 4)) == [[1, 2, 4, 3], [0, 5]]  # generation: any padding


def test_scores_without_padding_mask_equal_unbatched(tok: PreTrainedTokenizerFast) -> None:
    model = lively(tok, "llama")
    texts = ["a" * 40, "b" * 38, "short one", "c" * 39, "d" * 200]
    one = token_logprobs(model, tok, texts, batch_size=1)
    many = token_logprobs(model, tok, texts, batch_size=5)
    for a, b in zip(one, many, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    ids = tok(texts[1], return_tensors="pt")["input_ids"]
    ref = model(ids).logits[0, :-1].log_softmax(-1).gather(-1, ids[0, 1:, None])[:, 0]
    torch.testing.assert_close(many[1], ref, atol=1e-5, rtol=0)
