"""Batched model calls shared by the metrics: greedy decoding and per-token log-probabilities.

Batching must not change a number: prompts are padded on the left for decoding (so every row's
next token sits in the last column), with an attention mask, and texts on the right for scoring,
where causal attention alone keeps every real token from seeing the padding after it; the tests
compare each function against batch_size=1. Inputs are sorted by length so a batch holds similar
lengths and pays for little padding (scoring batches pad at most `SCORE_PADDING` of a row: on a
CPU a padded token costs as much as a real one); results come back in input order. A batch holds
at most `batch_size` rows and a budget of tokens (`token_budget`: what fits a CPU's caches or a
GPU's free memory), so a few long passages are not one batch too large to run fast.
Padding is done here, not by the tokenizer, so a shared tokenizer's `padding_side` is never touched.
Under `accelerate launch` / `torchrun` with several processes, each process runs every n-th of
those batches and every process gets all results (`_sharded`); every call is then collective.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TypeVar

import torch
from accelerate import PartialState
from accelerate.utils import gather_object
from torch import nn
from transformers import DynamicCache, PreTrainedTokenizerBase, StaticCache

from llm_unlearn.context import context_length, cut_left, cut_right, prompt_budget, special_prefix_length

T = TypeVar("T")
#: a scoring batch takes a next (shorter) text only while its padding stays within this share of
#: the batch's width; generation batches take any length (decoding costs per row, not per token)
SCORE_PADDING = 0.1
#: tokens (rows × padded width) in one scoring batch on a CPU, where a batch's activations and
#: logits outgrow the caches past a few thousand tokens (16 passages of 2,048 tokens scored at 0.55×
#: a one-at-a-time loop, issue 33). Measured with `eval/scale_benchmark.py --only budget` (a random
#: Llama, hidden 384, 6 layers, vocabulary 1,000, one thread): a forward pass of 2,048-token rows
#: cost the same per token at 1 and 2 rows (2,048 and 4,096 tokens) and 19 % more at 4 (on a busy
#: 2-core machine; that script measures it again). Overridable: pass `max_tokens`, or set this.
CPU_TOKEN_BUDGET = 4096
#: tokens, new ones included, in one generation batch on a CPU: decoding reads every weight once
#: per step whatever the rows, so it gains from more rows than scoring; this keeps MUSE-News's
#: batches of 16 (KnowMem ≈ 600, VerbMem ≈ 530 tokens, the scale benchmark's 8.9× and 2.8×) whole
#: and halves batches of prompts near a 2,048-token context.
CPU_GENERATION_TOKEN_BUDGET = 16 * 1024
#: texts, or their token ids as the tokenizer gives them (special tokens included)
Inputs = Sequence[str] | Sequence[list[int]]


def token_rows(tokenizer: PreTrainedTokenizerBase, inputs: Inputs) -> list[list[int]]:
    """Token ids of each input: strings are tokenized (with special tokens), id rows pass through."""
    if inputs and isinstance(inputs[0], str):
        return tokenizer(list(inputs))["input_ids"]
    return [list(r) for r in inputs]


def _pad_id(tokenizer: PreTrainedTokenizerBase) -> int:
    # Llama-style tokenizers ship without a pad token; eos is the usual stand-in and is masked anyway
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad is None:
        raise ValueError("the tokenizer has neither a pad nor an eos token to pad batches with")
    return pad


def token_budget(model: nn.Module, extra_per_token: int = 0) -> int:
    """How many tokens (rows × padded width) one batch of `model` may hold.

    On a CPU, `CPU_TOKEN_BUDGET`. On a GPU, half the free memory over what one token costs: the
    logits row and one layer's activations (`_bytes_per_token`) plus `extra_per_token` bytes (a
    generation's keys and values, `kv_bytes_per_token`).
    """
    device = _device(model)
    if device.type != "cuda":
        return CPU_TOKEN_BUDGET
    free, _ = torch.cuda.mem_get_info(device)
    return max(1, free // 2 // (_bytes_per_token(model) + extra_per_token))


def _bytes_per_token(model: nn.Module) -> int:
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    width = getattr(config, "hidden_size", 0) or 0
    inner = getattr(config, "intermediate_size", None) or 4 * width
    element = next(model.parameters()).element_size()
    # eager attention writes [heads, T, T] scores: per token, heads × T (T up to the context);
    # SDPA's kernels keep them out of memory
    eager = getattr(config, "_attn_implementation", None) == "eager"
    scores = (getattr(config, "num_attention_heads", 1) or 1) * (context_length(model) or 0) if eager else 0
    # logits in the model's dtype, the MLP's gate, up and product, a few residual-stream copies
    return element * (config.vocab_size + 3 * inner + 8 * width + scores)


def kv_bytes_per_token(model: nn.Module) -> int:
    """Bytes of one token's keys and values over all layers (what a generation's cache holds)."""
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    width = getattr(config, "hidden_size", 0) or 0
    heads = getattr(config, "num_attention_heads", 1) or 1
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or width // heads
    layers = getattr(config, "num_hidden_layers", 1) or 1
    return 2 * layers * kv_heads * head_dim * next(model.parameters()).element_size()


def generation_budget(model: nn.Module) -> int:
    """`token_budget` of a generation, whose rows also hold their keys and values; on a CPU
    `CPU_GENERATION_TOKEN_BUDGET`."""
    if _device(model).type != "cuda":
        return CPU_GENERATION_TOKEN_BUDGET
    return token_budget(model, kv_bytes_per_token(model))


def _batches(
    ids: list[list[int]],
    batch_size: int,
    max_padding: float = 1.0,
    max_tokens: int | None = None,
    extra: int = 0,
) -> Iterator[list[int]]:
    """Indices into `ids`, longest first, in chunks of at most `batch_size`.

    A chunk ends early where the next row would be padded by more than `max_padding` × the
    chunk's width (that of its first, longest row), or where its rows × (width + `extra`) would
    pass `max_tokens` (a chunk holds at least one row, however long).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]), reverse=True)
    batch: list[int] = []
    for i in order:
        if batch and (
            len(batch) == batch_size
            or len(ids[i]) < (1 - max_padding) * len(ids[batch[0]])
            or (max_tokens is not None and (len(batch) + 1) * (len(ids[batch[0]]) + extra) > max_tokens)
        ):
            yield batch
            batch = []
        batch.append(i)
    if batch:
        yield batch


def _sharded(
    ids: list[list[int]],
    batch_size: int,
    run_batch: Callable[[list[int]], list[T]],
    max_padding: float = 1.0,
    max_tokens: int | None = None,
    extra: int = 0,
) -> list[T]:
    """`run_batch(indices)` on each batch of `_batches`; all its results, in input order.

    With several processes each runs every n-th batch and the results are gathered on every
    process. Whole batches, not a split of the inputs: each batch is the one a single process
    pads and runs, so every number is the same whatever the process count.
    """
    state = PartialState()
    batches = list(_batches(ids, batch_size, max_padding, max_tokens, extra))
    mine = batches[state.process_index :: state.num_processes]
    found = [pair for idx in mine for pair in zip(idx, run_batch(idx), strict=True)]
    if state.num_processes > 1:
        found = gather_object(found)  # every process's (index, result) pairs, in rank order
    out: list[T] = [None] * len(ids)  # type: ignore[list-item]
    for i, result in found:
        out[i] = result
    return out


def _pad(
    rows: list[list[int]], pad_id: int, left: bool, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for j, r in enumerate(rows):
        cols = slice(width - len(r), width) if left else slice(0, len(r))
        ids[j, cols] = torch.tensor(r, dtype=torch.long)
        mask[j, cols] = 1
    return ids.to(device), mask.to(device)


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    # metrics may run mid-training (callbacks); leave the model in the mode it came in
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        model.train(was_training)


def shared_prefix_length(rows: Sequence[Sequence[int]]) -> int:
    """How many leading tokens every row has in common, leaving each row at least one of its own.

    The last prompt token must go through the model with the row's own pass: its logits give
    the first new token.
    """
    if not rows:
        return 0
    n = min(len(r) for r in rows) - 1
    first = rows[0]
    for row in rows[1:]:
        n = next((t for t in range(n) if row[t] != first[t]), n)
    return max(n, 0)


def _cache_name(model: nn.Module) -> str:
    # transformers >= 5.2x calls the key/value cache `cache`; earlier 5.x `past_key_values`
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _prefill(model: nn.Module, prefix: list[int]) -> DynamicCache | None:
    """The key/value cache of `prefix` (one row), computed once for every prompt that starts with it.

    None where sharing it would change a number: a model with recurrent layers, or with sliding
    windows, which count the padding after the prefix as positions.
    """
    kwargs = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}
    ids = torch.tensor([prefix], device=_device(model))
    cache = getattr(model(input_ids=ids, use_cache=True, **kwargs), _cache_name(model), None)
    if type(cache) is not DynamicCache or any(getattr(cache, "is_linear", ())) or any(cache.is_sliding):
        return None
    return cache


def _continued(model: nn.Module, prefix: DynamicCache, rows: int, max_len: int) -> StaticCache:
    """A static cache for `rows` rows of at most `max_len` tokens that holds `prefix`'s keys and values.

    Static: written in place at each new token, where a dynamic cache is copied whole (half of
    KnowMem's time on a CPU).
    """
    static = StaticCache(config=model.config, max_cache_len=max_len)
    where = {"cache_position": torch.arange(prefix.get_seq_length(), device=_device(model))}
    for i, layer in enumerate(prefix.layers):
        static.update(layer.keys.expand(rows, -1, -1, -1), layer.values.expand(rows, -1, -1, -1), i, where)
    return static


def generate_greedy(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Inputs,
    max_new_tokens: int,
    batch_size: int,
    share_prefix: bool = False,
    max_tokens: int | None = None,
) -> list[str]:
    """Greedy continuation of each prompt: only the new tokens, decoded without special tokens.

    A prompt longer than the model's context minus `max_new_tokens` is cut from the left: its
    end (what the model continues) and the tokenizer's leading special tokens (BOS) stay.
    `share_prefix`: the tokens all prompts start with (KnowMem's in-context pairs) go through
    the model once; each batch continues from a copy of their keys and values, its own tokens
    left-padded after them, [prefix | pad.. | own tokens], with positions from the mask as in the
    plain [pad.. | prefix | own tokens]: the same numbers at a fraction of the prefill.
    A batch holds at most `batch_size` prompts and `max_tokens` tokens counted with their new
    ones (None: `generation_budget(model)`).
    """
    if not prompts:
        return []
    pad_id = _pad_id(tokenizer)
    keep = special_prefix_length(tokenizer)
    budget = prompt_budget(model, max_new_tokens, keep, "generation")
    ids = [r if budget is None else cut_left(r, budget, keep) for r in token_rows(tokenizer, prompts)]
    device = _device(model)

    def run_batch(idx: list[int]) -> list[str]:
        input_ids, mask = _pad([ids[i][shared:] for i in idx], pad_id, left=True, device=device)
        if shared:
            width = shared + input_ids.shape[1] + max_new_tokens
            cache = {_cache_name(model): _continued(model, prefix_cache, len(idx), width)}
            head = torch.tensor([ids[idx[0]][:shared]], device=device).expand(len(idx), -1)
            input_ids = torch.cat([head, input_ids], dim=1)
            mask = torch.cat([torch.ones_like(head), mask], dim=1)
        else:
            # a static cache is written in place; a dynamic one is copied whole at every new
            # token (a fifth of VerbMem's time on a CPU)
            cache = {"cache_implementation": "static"}
        # generate derives position ids from the mask, so padding leaves positions unchanged.
        # No torch.compile (generate's default on a GPU with a static cache): it would stall the first call.
        gen = model.generate(
            input_ids=input_ids,
            attention_mask=mask,
            do_sample=False,
            num_beams=1,
            max_new_tokens=max_new_tokens,
            pad_token_id=pad_id,
            disable_compile=True,
            **cache,
        )
        return tokenizer.batch_decode(gen[:, input_ids.shape[1] :], skip_special_tokens=True)

    with _eval_mode(model):
        shared = shared_prefix_length(ids) if share_prefix else 0
        prefix_cache = _prefill(model, ids[0][:shared]) if shared else None
        shared = shared if prefix_cache is not None else 0
        tokens = generation_budget(model) if max_tokens is None else max_tokens
        return _sharded(ids, batch_size, run_batch, max_tokens=tokens, extra=max_new_tokens)


def _per_token(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    texts: Inputs,
    batch_size: int,
    max_length: int | None,
    reduce: Callable[[torch.Tensor, torch.Tensor], T],
    max_tokens: int | None = None,
) -> list[T]:
    """One right-padded forward pass per batch; `reduce(logits[n-1, V], targets[n-1])` per text.

    Row t of logits scores token t+1 given x_<=t, in float32. Texts are cut to their first
    `max_length` tokens and to the model's context, whichever is shorter. A batch holds at most
    `batch_size` texts and `max_tokens` tokens, padding included (None: `token_budget(model)`).
    """
    if not texts:
        return []
    pad_id = _pad_id(tokenizer)
    limits = [n for n in (max_length, context_length(model)) if n is not None]
    limit = min(limits) if limits else None
    ids = [cut_right(row, limit) for row in token_rows(tokenizer, texts)]

    def run_batch(idx: list[int]) -> list[T]:
        input_ids, _ = _pad([ids[i] for i in idx], pad_id, left=False, device=_device(model))
        # no padding mask: under causal attention a real token never sees the pads after it, and
        # without a mask the attention kernel takes its fast causal path
        logits = model(input_ids=input_ids, attention_mask=None).logits
        out = []
        for j, i in enumerate(idx):
            n = len(ids[i])
            # one row at a time: a float32 copy of the whole batch's logits can be gigabytes
            out.append(reduce(logits[j, : n - 1].float(), input_ids[j, 1:n]))
        return out

    with _eval_mode(model):
        tokens = token_budget(model) if max_tokens is None else max_tokens
        return _sharded(ids, batch_size, run_batch, max_padding=SCORE_PADDING, max_tokens=tokens)


def _gather(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    # log_softmax at the targets only: no [n, V] tensor of log-probs is written
    return (logits.gather(-1, targets[:, None]).squeeze(-1) - logits.logsumexp(-1)).cpu()


def token_logprobs(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    texts: Inputs,
    batch_size: int,
    max_length: int | None = None,
    max_tokens: int | None = None,
) -> list[torch.Tensor]:
    """Per text, the 1-D float32 tensor of log p(x_t | x_<t) for every token t >= 1.

    Tokens are the tokenizer's (with its special tokens, e.g. Llama's BOS), cut to `max_length`
    and to the model's context; a text of n tokens gives n-1 values. Batches as `_per_token`'s.
    """
    return _per_token(model, tokenizer, texts, batch_size, max_length, _gather, max_tokens)


def min_k_plus_plus_zscores(log_probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Min-K%++ per-token scores (Zhang et al. 2024) from next-token distributions.

    z_t = (log p(x_t) - mu_t) / sigma_t,  mu_t = E_{z~p}[log p(z)],
    sigma_t^2 = E_{z~p}[(log p(z) - mu_t)^2],  p = p(· | x_<t).
    `log_probs` is [T, V] (row t: the distribution of targets[t]); returns [T].
    """
    p = log_probs.exp()
    # 0 * log 0 is 0 here, not nan, for tokens a model masks to -inf
    mu = torch.where(p > 0, p * log_probs, 0.0).sum(-1)
    # E[(log p - mu)^2] rather than E[log p^2] - mu^2: near-uniform distributions have a tiny
    # variance that the subtraction would drown in float32 rounding
    var = torch.where(p > 0, p * (log_probs - mu[:, None]) ** 2, 0.0).sum(-1)
    # a one-hot distribution has sigma 0; the floor keeps its z finite
    sigma = var.clamp_min(1e-12).sqrt()
    return (log_probs.gather(-1, targets[:, None]).squeeze(-1) - mu) / sigma


def token_min_k_plus_plus_zscores(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    texts: Inputs,
    batch_size: int,
    max_length: int | None = None,
    max_tokens: int | None = None,
) -> list[torch.Tensor]:
    """Like `token_logprobs`, but each token's Min-K%++ z-score (`min_k_plus_plus_zscores`)."""
    return _per_token(
        model,
        tokenizer,
        texts,
        batch_size,
        max_length,
        lambda logits, tg: min_k_plus_plus_zscores(logits.log_softmax(-1), tg).cpu(),
        max_tokens,
    )
