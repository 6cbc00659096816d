"""The lm_eval metric: lm-evaluation-harness on the in-memory model, a local task, checked by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

from llm_unlearn.data.corpora import MuseCorpus
from llm_unlearn.errors import UserError
from llm_unlearn.metrics import EvalContext, evaluate
from llm_unlearn.metrics.harness import headline

ROOT = Path(__file__).parent.parent
TASKS = ROOT / "tests" / "data" / "lm_eval"


def test_headline_prefers_acc_norm_then_acc() -> None:
    assert headline({"alias": "x", "acc,none": 0.5, "acc_stderr,none": 0.1, "acc_norm,none": 0.7}) == (
        "acc_norm",
        0.7,
    )
    assert headline({"acc,none": 0.5, "f1,none": 0.2}) == ("acc", 0.5)
    assert headline({"exact_match,strict-match": 0.25}) == ("exact_match", 0.25)
    with pytest.raises(UserError, match="no numeric metric"):
        headline({"alias": "x"})


def _ctx(tok: PreTrainedTokenizerFast, **settings: object) -> EvalContext:
    return EvalContext(
        tokenizer=tok, corpus=MuseCorpus("none", {}), batch_size=2, extra={"lm_eval": settings}
    )


def _hand_acc(model: LlamaForCausalLM, tok: PreTrainedTokenizerFast, doc: dict) -> float:
    """1 if the label's continuation " choice" has the highest summed log-likelihood (no BOS, as HFLM)."""
    context = f"Question: {doc['question']}\nAnswer:"
    n = len(tok(context, add_special_tokens=False)["input_ids"])
    scores = []
    for choice in doc["choices"]:
        ids = tok(f"{context} {choice}", add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            log_probs = model(torch.tensor([ids])).logits[0].log_softmax(-1)
        scores.append(sum(log_probs[t - 1, ids[t]].item() for t in range(n, len(ids))))
    return float(max(range(len(scores)), key=scores.__getitem__) == doc["label"])


@pytest.mark.slow  # lm-eval indexes its thousands of task files first (~20 s here)
def test_lm_eval_on_the_in_memory_model_equals_the_hand_accuracy(
    llama: LlamaForCausalLM, tok: PreTrainedTokenizerFast, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    pytest.importorskip("lm_eval")
    monkeypatch.chdir(ROOT)  # the task's data path is relative to the repository root
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path))
    llama.train()
    result = evaluate(llama, _ctx(tok, tasks=["tiny_qa"], include_path=str(TASKS), limit=None), ["lm_eval"])[
        "lm_eval"
    ]
    assert llama.training  # the mode it came in
    docs = [json.loads(line) for line in (TASKS / "tiny_qa.jsonl").read_text().splitlines()]
    llama.eval()
    hand = [_hand_acc(llama, tok, doc) for doc in docs]
    assert [result["value_by_index"][f"tiny_qa/{i}"]["score"] for i in range(4)] == hand
    assert result["agg_value"] == pytest.approx(sum(hand) / 4)
    assert result["tasks"] == {"tiny_qa": {"metric": "acc", "value": pytest.approx(sum(hand) / 4)}}
    limited = evaluate(llama, _ctx(tok, tasks=["tiny_qa"], include_path=str(TASKS), limit=2), ["lm_eval"])
    assert list(limited["lm_eval"]["value_by_index"]) == ["tiny_qa/0", "tiny_qa/1"]


def test_lm_eval_needs_the_recipe_section(llama: LlamaForCausalLM, tok: PreTrainedTokenizerFast) -> None:
    with pytest.raises(UserError, match="the recipe has no lm_eval section"):
        evaluate(llama, EvalContext(tokenizer=tok, corpus=MuseCorpus("none", {})), ["lm_eval"])


@pytest.mark.slow
def test_lm_eval_unknown_task_is_one_line(llama: LlamaForCausalLM, tok: PreTrainedTokenizerFast) -> None:
    pytest.importorskip("lm_eval")
    with pytest.raises(UserError, match=r"lm_eval.tasks: unknown lm-eval task\(s\) no_such_task"):
        evaluate(llama, _ctx(tok, tasks=["no_such_task"], include_path=str(TASKS)), ["lm_eval"])
