"""metrics/generation.py: greedy generation and token scores are the same batched as one by one, and
the evaluation speed-ups change no number: the shared prefix cache, padding-bounded batches."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_llama
from helpers import CONTEXT, tiny_gpt2
from torch import nn
from transformers import (
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    PreTrainedTokenizerFast,
)

from llm_unlearn.data.corpora import MuseCorpus
from llm_unlearn.metrics import EvalContext, knowmem
from llm_unlearn.metrics.generation import (
    _batches,
    generate_greedy,
    shared_prefix_length,
    token_logprobs,
    token_min_k_plus_plus_zscores,
)

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


PROMPTS = ["Question: who?\nAnswer: ", "hi", "The quick brown fox jumps over", "x" * 41, "ab"]


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


def test_generation_cuts_from_the_left_keeping_bos(tok: PreTrainedTokenizerFast) -> None:
    model = tiny_llama(tok, max_position_embeddings=CONTEXT).eval()
    seen = []
    generate = model.generate

    def spy(input_ids: torch.Tensor, **kwargs: object) -> torch.Tensor:
        seen.append(input_ids[0].tolist())
        return generate(input_ids=input_ids, **kwargs)

    model.generate = spy
    prompt = "start " + "word " * 60 + "the end"  # BOS + 313 tokens
    generate_greedy(model, tok, [prompt], 6, batch_size=1)
    assert len(seen[0]) == CONTEXT - 6
    assert seen[0][0] == tok.bos_token_id  # a Llama prompt still starts with <s>
    assert tok.decode(seen[0][1:]) == prompt[-(CONTEXT - 7) :]  # the end is kept, "start" is gone
