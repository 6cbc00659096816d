"""A model's context window and how an input that does not fit is cut to it.

A model with absolute positions (GPT-2's 1,024) fails with an IndexError on a longer input, and a
rotary one degrades past the length it was trained on. So every input is cut before a model call:
a prompt to generate from keeps its END (the text the model must continue) and the tokens the
tokenizer puts first (Llama's BOS: a prompt must still start with <s>); a passage to score keeps
its start. An input that fits is never changed. Pure functions on token-id lists, tested alone.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn
from transformers import PreTrainedTokenizerBase

from llm_unlearn.errors import UserError

#: how transformers' configs name the longest input: Llama & most (GPT-2 maps it to n_positions),
#: GPT-2 itself, MPT/DBRX, GPT-J-style, ChatGLM
_CONTEXT_FIELDS = ("max_position_embeddings", "n_positions", "max_seq_len", "n_ctx", "seq_length")


def context_length(model: nn.Module | None) -> int | None:
    """The most tokens one model call may see, from its config; None when unbounded or unknown."""
    config = getattr(model, "config", None)
    if config is None:
        return None
    if hasattr(config, "get_text_config"):  # a multimodal config keeps the text model's limit inside
        config = config.get_text_config()
    for name in _CONTEXT_FIELDS:
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def window_length(max_length: int, model: nn.Module | None) -> int:
    """The length of a training window: `max_length` (data.max_length), cut to the model's context."""
    context = context_length(model)
    return max_length if context is None else min(max_length, context)


def special_prefix_length(tokenizer: PreTrainedTokenizerBase) -> int:
    """How many special tokens the tokenizer puts before a text (1 for Llama's BOS, 0 for GPT-2)."""
    plain = tokenizer("x", add_special_tokens=False)["input_ids"]
    full = tokenizer("x")["input_ids"]
    for start in range(len(full) - len(plain) + 1):
        if full[start : start + len(plain)] == plain:
            return start
    return 0


def cut_left(ids: list[int], limit: int, keep: int = 0) -> list[int]:
    """`ids` unchanged if it has at most `limit` tokens; else its first `keep` and its last `limit - keep`."""
    if len(ids) <= limit:
        return ids
    if limit <= keep:
        raise ValueError(f"cannot keep {keep} leading tokens within a limit of {limit}")
    return ids[:keep] + ids[len(ids) - (limit - keep) :]


def cut_right(ids: list[int], limit: int | None) -> list[int]:
    """`ids` cut to its first `limit` tokens (None = no limit); the leading BOS stays."""
    return ids if limit is None else ids[:limit]


def count_over(rows: Sequence[Sequence[int]], limit: int | None) -> int:
    """How many rows have more than `limit` tokens (none when there is no limit)."""
    return 0 if limit is None else sum(len(r) > limit for r in rows)


def prompt_budget(model: nn.Module | None, max_new_tokens: int, keep: int, what: str) -> int | None:
    """The most prompt tokens that leave room for `max_new_tokens`; None when the model has no limit.

    Raises a one-line UserError when not even the `keep` leading tokens and one more fit.
    """
    context = context_length(model)
    if context is None:
        return None
    if context - max_new_tokens <= keep:
        raise UserError(
            f"{what}: the model's context is {context} tokens, but it needs {max_new_tokens} new tokens "
            f"plus at least {keep + 1} prompt token(s): use a model with a context of at least "
            f"{max_new_tokens + keep + 1} tokens or leave this metric out"
        )
    return context - max_new_tokens


def cut_record(model: nn.Module | None, cut_inputs: int) -> dict[str, int | None]:
    """What a metric result records about cutting: the context used and how many inputs were cut."""
    return {"context_length": context_length(model), "cut_inputs": cut_inputs}
