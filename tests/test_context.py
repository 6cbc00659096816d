"""Short contexts: the cutting functions by hand, and every MUSE metric on 256-position models."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from conftest import char_tokenizer, demo_bench_subset, tiny_llama
from helpers import CONTEXT, tiny_gpt2
from tokenizers import processors
from transformers import PretrainedConfig, PreTrainedTokenizerFast

from llm_unlearn.audit.results import ResultsFile
from llm_unlearn.context import (
    context_length,
    count_over,
    cut_left,
    cut_right,
    prompt_budget,
    special_prefix_length,
)
from llm_unlearn.data.corpora import MuseCorpus
from llm_unlearn.errors import UserError
from llm_unlearn.metrics import METRICS, EvalContext, evaluate, knowmem, privleak
from llm_unlearn.metrics.generation import generate_greedy
from llm_unlearn.models import save_checkpoint
from llm_unlearn.pipeline import run
from llm_unlearn.recipe import validate_recipe

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


# --- every MUSE metric on 256-position models ------------------------------------------------

LONG = "word " * 70  # 350 chars: BOS + 350 tokens, over the context and over 256 - 128 prompt tokens
SHOTS = [{"question": "Which " + "very " * 12 + "old town?", "answer": "Bath"}] * 3  # 3 x 100 tokens
QA = [
    {"question": "Who?", "answer": "Ann"},  # BOS + 3 x 100 + 23: fits (224) without the first shot
    {"question": "Where " + "x" * 300 + "?", "answer": "Rome"},  # too long alone
]
SHORT_QA = [{"question": "Who?", "answer": "Ann"}]
SHORT = "alpha beta"


def long_corpus() -> MuseCorpus:
    return MuseCorpus(
        "long",
        {
            "verbmem": {"forget": [{"prompt": LONG, "gt": "a b"}, {"prompt": SHORT, "gt": "gamma"}] * 2},
            "knowmem": {"forget_qa": QA, "forget_qa_icl": SHOTS, "retain_qa": QA[:1], "retain_qa_icl": SHOTS},
            "privleak": {"forget": [LONG, SHORT, LONG + LONG], "holdout": [LONG, "gamma delta", "x"]},
        },
    )


# how many inputs each metric gets that do not fit: verbmem 2 of 4 (>128 prompt tokens),
# knowmem 2 of 2 and 1 of 1 (3 shots + question > 224), privleak 3 of 6 (> 256 tokens)
EXPECTED_CUTS = {"verbmem": 2, "knowmem_forget": 2, "knowmem_retain": 1}


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_every_metric_survives_a_short_context(arch: str, tok: PreTrainedTokenizerFast) -> None:
    model = tiny_gpt2(tok) if arch == "gpt2" else tiny_llama(tok, max_position_embeddings=CONTEXT).eval()
    if arch == "gpt2":  # the crash this guards against: absolute positions end at 256
        with pytest.raises(IndexError):
            model(tok(LONG, return_tensors="pt")["input_ids"])
    names = [n for n in METRICS.names() if n.split("_")[0] in ("verbmem", "knowmem", "privleak")]
    assert len(names) == 9  # verbmem, knowmem_forget/retain, privleak and its 5 variants
    results = evaluate(model, EvalContext(tok, long_corpus(), batch_size=2), names)
    for name in names:
        assert results[name]["context_length"] == CONTEXT, name
        assert results[name]["cut_inputs"] == EXPECTED_CUTS.get(name, 3), name
    # what fits is not changed: compare with unbatched calls on the uncut inputs
    with torch.inference_mode():
        ids = tok(SHORT, return_tensors="pt")["input_ids"]
        new = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=128, do_sample=False)
        assert results["verbmem"]["value_by_index"][1]["output"] == tok.decode(new[0, ids.shape[1] :])
        lp = model(ids).logits[0, :-1].log_softmax(-1).gather(-1, ids[0, 1:, None])[:, 0]
        assert results["privleak_loss"]["value_by_index"][1]["score"] == pytest.approx(
            -lp.mean().item(), abs=1e-5
        )
        assert results["privleak"]["value_by_index"][1]["score"] == pytest.approx(privleak.min_k_score(lp))


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


def test_no_room_to_generate_is_one_user_error(tok: PreTrainedTokenizerFast) -> None:
    model = tiny_gpt2(tok, n_positions=100)  # fewer than VerbMem's 128 new tokens
    data = MuseCorpus("v", {"verbmem": {"forget": [{"prompt": SHORT, "gt": "gamma"}]}})
    with pytest.raises(UserError, match="verbmem: the model's context is 100 tokens"):
        evaluate(model, EvalContext(tok, data), ["verbmem"])


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


def test_a_short_context_model_unlearns_relearns_and_audits_with_longer_windows(tmp_path, tok) -> None:
    """data.max_length above the model's context: the training and relearning windows are cut to it;
    a context with no room for VerbMem's 128 new tokens is refused before training."""
    target = save_checkpoint(tiny_llama(tok, max_position_embeddings=160), tok, tmp_path / "short")
    muse = demo_bench_subset(tmp_path / "muse", {"raw": 3, "verbmem": 2, "knowmem": 2, "privleak": 3})
    recipe = {
        "name": "short",
        "model": {"target": str(target)},
        "data": {"source": str(muse), "max_length": 256},
        "method": {"name": "ga_gdr"},
        "train": {"max_steps": 1, "per_device_train_batch_size": 2},
        "quantize": ["rtn-w4-g32"],
        "evaluate": ["verbmem", "privleak"],
        "relearn": {"split": "forget", "samples": 2, "steps": 1},
        "output": {"dir": str(tmp_path / "run")},
    }
    out = run(validate_recipe(recipe))
    records = list(ResultsFile(out / "results.jsonl"))
    assert {r["quantizer"] for r in records} == {"fp", "rtn-w4-g32", "relearn-forget-1"}
    assert all(r["cut_inputs"] > 0 for r in records)  # prompts + 128 new tokens, passages: over 160
    recipe["model"]["target"] = str(
        save_checkpoint(tiny_llama(tok, max_position_embeddings=100), tok, tmp_path / "shorter")
    )
    recipe["output"]["dir"] = str(tmp_path / "run2")
    with pytest.raises(
        UserError, match="evaluate: verbmem: the model's context is 100 tokens, but it needs 128"
    ):
        run(validate_recipe(recipe))
    assert not (tmp_path / "run2").exists()  # refused before anything was trained or written
