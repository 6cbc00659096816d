"""context.py: the cutting functions by hand (the metrics and the pipeline on short contexts are tested
with their modules)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from conftest import char_tokenizer, tiny_llama
from helpers import CONTEXT, tiny_gpt2
from tokenizers import processors
from transformers import PretrainedConfig, PreTrainedTokenizerFast

from llm_unlearn.context import (
    context_length,
    count_over,
    cut_left,
    cut_right,
    prompt_budget,
    special_prefix_length,
)
from llm_unlearn.errors import UserError
from llm_unlearn.metrics import knowmem

# --- pure parts ------------------------------------------------------------------------------


def test_context_length_from_configs(tok: PreTrainedTokenizerFast) -> None:
    assert context_length(tiny_llama(tok, max_position_embeddings=CONTEXT)) == CONTEXT
    assert context_length(tiny_gpt2(tok, n_positions=300)) == 300  # GPT-2 names it n_positions
    assert context_length(SimpleNamespace(config=SimpleNamespace(max_seq_len=77))) == 77  # MPT's name
    assert context_length(SimpleNamespace(config=PretrainedConfig())) is None  # no limit named
    assert context_length(None) is None


def test_special_prefix_length(tok: PreTrainedTokenizerFast) -> None:
    assert special_prefix_length(tok) == 1  # the char tokenizer prepends <s>, like Llama's
    no_bos = char_tokenizer()
    no_bos.backend_tokenizer.post_processor = processors.TemplateProcessing(single="$A")
    assert no_bos("ab")["input_ids"] == tok("ab")["input_ids"][1:]
    assert special_prefix_length(no_bos) == 0  # like GPT-2's


def test_cut_left_keeps_bos_and_the_end() -> None:
    ids = [1, 10, 11, 12, 13, 14]
    assert cut_left(ids, 4, keep=1) == [1, 12, 13, 14]  # BOS + the last 3
    assert cut_left(ids, 4) == [11, 12, 13, 14]
    assert cut_left(ids, 6, keep=1) is ids  # fits: the very same list
    assert cut_left(ids, 2, keep=1) == [1, 14]
    with pytest.raises(ValueError, match="keep 1"):
        cut_left(ids, 1, keep=1)


def test_cut_right_and_count_over() -> None:
    assert cut_right([1, 10, 11, 12], 3) == [1, 10, 11]
    assert cut_right([1, 10], None) == [1, 10]
    assert count_over([[1], [1, 2, 3], [1, 2, 3, 4]], 3) == 1
    assert count_over([[1, 2, 3, 4]], None) == 0


def test_prompt_budget_and_its_error(tok: PreTrainedTokenizerFast) -> None:
    model = tiny_llama(tok, max_position_embeddings=CONTEXT)
    assert prompt_budget(model, 128, 1, "verbmem") == 128
    assert prompt_budget(None, 128, 1, "verbmem") is None
    assert prompt_budget(model, 254, 1, "verbmem") == 2  # BOS + one token still fit
    with pytest.raises(UserError, match="context is 256 tokens.*255 new tokens.*at least 257") as err:
        prompt_budget(model, 255, 1, "verbmem")
    assert "\n" not in str(err.value)


def test_fit_prompt_drops_shots_then_cuts_the_question(tok: PreTrainedTokenizerFast) -> None:
    # char tokens: BOS + 23 per shot ("Question: q\nAnswer: a\n\n") + 21 for "Question: Q?\nAnswer: "
    icl = [{"question": "q", "answer": "a"}, {"question": "r", "answer": "b"}]
    full = tok(knowmem.build_prompt(icl, "Q?"))["input_ids"]
    assert len(full) == 1 + 2 * 23 + 21
    assert knowmem.fit_prompt(tok, icl, "Q?", 68) == (full, 0, False)  # fits: unchanged
    assert knowmem.fit_prompt(tok, icl, "Q?", None) == (full, 0, False)
    one_shot = tok(knowmem.build_prompt(icl[1:], "Q?"))["input_ids"]  # the FIRST shot goes
    assert knowmem.fit_prompt(tok, icl, "Q?", 67) == (one_shot, 1, True)
    assert knowmem.fit_prompt(tok, icl, "Q?", 45) == (one_shot, 1, True)
    assert knowmem.fit_prompt(tok, icl, "Q?", 44) == (tok("Question: Q?\nAnswer: ")["input_ids"], 2, True)
    ids, dropped, cut = knowmem.fit_prompt(tok, icl, "Q?", 10)  # the question alone is 22: BOS + its last 9
    assert cut and dropped == 2 and ids[0] == tok.bos_token_id and tok.decode(ids[1:]) == "\nAnswer: "
