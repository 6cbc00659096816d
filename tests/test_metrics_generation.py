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
    CPU_GENERATION_TOKEN_BUDGET,
    CPU_TOKEN_BUDGET,
    _batches,
    generate_greedy,
    generation_budget,
    kv_bytes_per_token,
    shared_prefix_length,
    token_budget,
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


def test_batches_hold_a_budget_of_tokens() -> None:
    ids = [[0] * n for n in (50, 100, 95, 89, 91, 10)]
    # 100, 95, 91, 89 would be 4 × 100 = 400 > 300 tokens: 100, 95, 91 | 89, 50, 10 (3 × 89 = 267)
    assert list(_batches(ids, 8, max_tokens=300)) == [[1, 2, 4], [3, 0, 5]]
    # new tokens count: (100 + 20) × 2 = 240 <= 250 < 360: 100, 95 | 91, 89 | 50, 10
    assert list(_batches(ids, 8, max_tokens=250, extra=20)) == [[1, 2], [4, 3], [0, 5]]
    # a row longer than the budget still runs, alone
    assert list(_batches(ids, 8, max_tokens=60)) == [[1], [2], [4], [3], [0], [5]]
    assert list(_batches(ids, 2, max_tokens=10_000)) == [[1, 2], [4, 3], [0, 5]]  # the cap stays


def test_budget_on_a_cpu_is_the_measured_constant(llama: LlamaForCausalLM) -> None:
    assert token_budget(llama) == CPU_TOKEN_BUDGET
    assert generation_budget(llama) == CPU_GENERATION_TOKEN_BUDGET


def test_kv_bytes_per_token_is_what_a_cache_holds(llama: LlamaForCausalLM) -> None:
    ids = torch.arange(1, 11)[None]
    with torch.inference_mode():
        cache = llama(input_ids=ids, use_cache=True).past_key_values
    held = sum(t.numel() * t.element_size() for layer in cache.layers for t in (layer.keys, layer.values))
    assert kv_bytes_per_token(llama) * ids.shape[1] == held


def test_long_passages_score_as_one_at_a_time_within_the_budget(tok: PreTrainedTokenizerFast) -> None:
    """Passages past the context, batched under a budget, against a loop of single unpadded passes."""
    model = lively(tok, "llama")
    # one character a token: two past the 256-token context, the rest in batches of 2 and 3 under 600
    texts = [("the word " * 50)[:n] for n in (300, 240, 100, 400, 235, 98, 95)]
    widths = []
    forward = model.forward

    def spy(input_ids: torch.Tensor, **kwargs: object) -> object:
        widths.append(input_ids.numel())
        return forward(input_ids=input_ids, **kwargs)

    model.forward = spy
    batched = token_logprobs(model, tok, texts, batch_size=16, max_tokens=600)
    zscores = token_min_k_plus_plus_zscores(model, tok, texts, batch_size=16, max_tokens=600)
    model.forward = forward
    assert widths == [2 * CONTEXT, 2 * 241, 3 * 101] * 2  # the budget, not the cap of 16, splits them
    with torch.inference_mode():
        for text, lp, z in zip(texts, batched, zscores, strict=True):
            ids = tok(text, return_tensors="pt")["input_ids"][:, :CONTEXT]
            log_probs = model(ids).logits[0, :-1].float().log_softmax(-1)
            targets = ids[0, 1:]
            assert lp.shape[0] == min(len(tok(text)["input_ids"]), CONTEXT) - 1
            torch.testing.assert_close(lp, log_probs.gather(-1, targets[:, None])[:, 0], atol=1e-5, rtol=0)
            p = log_probs.exp()
            mu = (p * log_probs).sum(-1)
            sigma = (p * (log_probs - mu[:, None]) ** 2).sum(-1).sqrt()
            want = (log_probs.gather(-1, targets[:, None])[:, 0] - mu) / sigma
            torch.testing.assert_close(z, want, atol=1e-4, rtol=0)


def test_greedy_under_a_budget_equals_one_at_a_time(tok: PreTrainedTokenizerFast) -> None:
    model = lively(tok, "llama")
    prompts = [*PROMPTS, "word " * 300]  # the last is cut to the context
    one = generate_greedy(model, tok, prompts, 8, batch_size=1)
    assert generate_greedy(model, tok, prompts, 8, batch_size=16, max_tokens=120) == one
    assert generate_greedy(model, tok, prompts, 8, batch_size=16, share_prefix=True, max_tokens=120) == one


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
