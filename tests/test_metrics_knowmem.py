"""metrics/knowmem.py: the prompt format, the answer cut, and KnowMem's scores."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_llama
from helpers import CONTEXT, SHOTS, corpus, tiny_gpt2
from transformers import PreTrainedTokenizerFast

from llm_unlearn.data.corpora import MuseCorpus
from llm_unlearn.metrics import EvalContext, knowmem

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


SHORT_QA = [{"question": "Who?", "answer": "Ann"}]


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_knowmem_prompt_that_fits_is_unchanged(arch: str, tok: PreTrainedTokenizerFast) -> None:
    model = tiny_gpt2(tok) if arch == "gpt2" else tiny_llama(tok, max_position_embeddings=CONTEXT).eval()
    data = MuseCorpus("short", {"knowmem": {"forget_qa": SHORT_QA, "forget_qa_icl": SHOTS[:1]}})
    result = knowmem.knowmem_forget(model, EvalContext(tok, data))
    assert result["cut_inputs"] == 0
    with torch.inference_mode():
        ids = tok(knowmem.build_prompt(SHOTS[:1], "Who?"), return_tensors="pt")["input_ids"]
        new = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=32, do_sample=False)
    assert result["value_by_index"][0]["output"] == knowmem.cut_answer(tok.decode(new[0, ids.shape[1] :]))
