"""In-context probing columns: `incontext-forget-{k}` asks KnowMem on forget (and TOFU's forget QA,
tested in test_metrics_tofu.py) with k other forget QA pairs as each question's shots, on the
full-precision model, and has cells for those metrics only."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_llama
from transformers import PreTrainedTokenizerFast

from llm_unlearn.audit.results import ResultsFile
from llm_unlearn.audit.run import AuditModel, audit
from llm_unlearn.columns import column_kind, get_column, is_format, route
from llm_unlearn.data.corpora import MuseCorpus
from llm_unlearn.errors import UserError
from llm_unlearn.metrics import METRICS, EvalContext, knowmem
from llm_unlearn.metrics.incontext import InContext
from llm_unlearn.models import load_model, save_checkpoint

QA = [{"question": f"Q{i}?", "answer": f"A{i}"} for i in range(3)]
ICL = [{"question": "Benchmark shot?", "answer": "Its answer"}]
#: the prompts of incontext-forget-2 (seed 0), written out by hand: each question after the other
#: two, in the order random.Random("0:i") draws them (Q2's shots are Q1, then Q0)
PROMPTS = [
    "Question: Q1?\nAnswer: A1\n\nQuestion: Q2?\nAnswer: A2\n\nQuestion: Q0?\nAnswer: ",
    "Question: Q0?\nAnswer: A0\n\nQuestion: Q2?\nAnswer: A2\n\nQuestion: Q1?\nAnswer: ",
    "Question: Q1?\nAnswer: A1\n\nQuestion: Q0?\nAnswer: A0\n\nQuestion: Q2?\nAnswer: ",
]


def corpus() -> MuseCorpus:
    return MuseCorpus(
        "hand-built",
        {
            "knowmem": {"forget_qa": QA, "forget_qa_icl": ICL},
            "verbmem": {"forget": [{"prompt": "Once upon", "gt": " a time"}]},
        },
    )


def test_the_name_sets_k_and_seed_and_the_column_is_an_attack_at_full_precision() -> None:
    column = get_column("incontext-forget-3")
    config = column.config()
    assert (config["shots"], config["seed"], config["source"]) == (3, 0, "forget")
    assert get_column("incontext-forget-2-s5").config()["seed"] == 5
    assert column_kind(config) is InContext and route(config) == "attack" and not is_format(config)
    assert column.at_full_precision and not column.has_codes


@pytest.mark.parametrize("name", ["incontext-forget-0", "incontext-retain-3", "incontext-forget-x"])
def test_a_malformed_name_is_refused_in_one_line(name: str) -> None:
    with pytest.raises(UserError, match=r"expected incontext-forget-\{k\}") as err:
        get_column(name)
    assert "\n" not in str(err.value)


def test_it_has_cells_for_the_metrics_that_take_shots_only() -> None:
    column = get_column("incontext-forget-3")
    # forget quality's KS reference is asked without shots, model utility asks no forget pairs
    assert sorted(m for m in METRICS.names() if column.evaluates(METRICS.get(m))) == [
        "knowmem_forget",
        "tofu_prob",
        "tofu_rouge",
        "tofu_truth_ratio",
    ]


def test_knowmem_asks_each_question_after_its_own_shots(
    monkeypatch: pytest.MonkeyPatch, tok: PreTrainedTokenizerFast
) -> None:
    seen = []

    def fake_generate(model, tokenizer, prompts, max_new_tokens, batch_size, share_prefix):
        seen.append((tokenizer.batch_decode(prompts, skip_special_tokens=True), share_prefix))
        return ["A0", "no", "A2"]

    monkeypatch.setattr(knowmem, "generate_greedy", fake_generate)
    ctx = get_column("incontext-forget-2").context(EvalContext(tok, corpus()))
    result = knowmem.knowmem_forget(None, ctx)
    assert seen == [(PROMPTS, False)]  # the benchmark's own shot is asked nowhere
    assert [v["score"] for v in result["value_by_index"].values()] == [100.0, 0.0, 100.0]
    # the same seed asks the same prompts again
    knowmem.knowmem_forget(None, ctx)
    assert seen[1] == seen[0]


def test_an_audit_gives_in_context_cells_for_knowmem_only(
    monkeypatch: pytest.MonkeyPatch, tmp_path, tok: PreTrainedTokenizerFast
) -> None:
    """The retrain, target and an unlearned model under fp and incontext-forget-2: the in-context
    column has a KnowMem cell per model and no VerbMem cell; its cells ask the hand-built prompts
    of the checkpoint itself, the fp cells the benchmark's own shot."""
    asked = []

    def fake_generate(model, tokenizer, prompts, max_new_tokens, batch_size, share_prefix):
        asked.append((model, tokenizer.batch_decode(prompts, skip_special_tokens=True)))
        return ["A0", "no", "A2"]

    monkeypatch.setattr(knowmem, "generate_greedy", fake_generate)
    paths = {
        name: save_checkpoint(tiny_llama(tok, seed=seed), tok, tmp_path / "models" / name)
        for seed, name in enumerate(["retrain", "target", "ga"])
    }
    models = [AuditModel(name, "natural", path) for name, path in paths.items()]
    results = ResultsFile(tmp_path / "results.jsonl")
    ctx = EvalContext(tok, corpus())
    audit(models, ["fp", "incontext-forget-2"], ["verbmem", "knowmem_forget"], ctx, results)
    lines = {(r["model"], r["quantizer"], r["metric"]): r for r in ResultsFile(results.path)}
    assert {key for key in lines if key[1] == "incontext-forget-2"} == {
        (m, "incontext-forget-2", "knowmem_forget") for m in paths
    }
    assert len(lines) == 3 * 2 + 3
    own = [knowmem.build_prompt(ICL, p["question"]) for p in QA]
    assert [prompts for _, prompts in asked] == [own, PROMPTS] * 3  # fp, then in-context, per model
    cell = lines[("ga", "incontext-forget-2", "knowmem_forget")]
    assert cell["quantizer_config"]["method"] == "incontext"
    assert (cell["evaluation"], cell["agg_value"]) == ("full precision (float32)", pytest.approx(200 / 3))
    network, checkpoint = asked[-1][0], load_model(paths["ga"]).state_dict()
    assert all(torch.equal(t, checkpoint[k]) for k, t in network.state_dict().items())  # the model unchanged
