"""TOFU metrics: each equals a hand computation (a tiny model's log-probs taken directly with torch,
then the paper's formula), the KS p-value against scipy's, and the pure formulas by hand."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import torch
from scipy import stats
from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

from llm_unlearn.data.tofu import TEMPLATES, TofuCorpus, encode_qa
from llm_unlearn.errors import UserError
from llm_unlearn.metrics import EvalContext, evaluate, required_splits
from llm_unlearn.metrics import tofu as m
from llm_unlearn.metrics.shots import Shots

FORGET = [
    {
        "question": "Where was Ana born?",
        "answer": "Ana was born in Rome.",
        "paraphrased_answer": "Ana's birthplace is Rome.",
        "perturbed_answer": ["Ana's birthplace is Oslo.", "Ana's birthplace is Lima."],
    },
    {
        "question": "What did Bo write?",
        "answer": "Bo wrote The Bell.",
        "paraphrased_answer": "The Bell is by Bo.",
        "perturbed_answer": ["The Tide is by Bo.", "The Atlas is by Bo.", "The Gate is by Bo."],
    },
    {
        "question": "Who taught Cy?",
        "answer": "Cy learned from Di.",
        "paraphrased_answer": "Di taught Cy.",
        "perturbed_answer": ["Ed taught Cy."],
    },
]
OPTIONS = [
    {"question": "Capital of Peru?", "answer": "Lima", "perturbed_answer": ["Quito", "Cusco"]},
    {"question": "Day after Monday?", "answer": "Tuesday", "perturbed_answer": ["Friday", "Sunday", "May"]},
]


def hand_p(
    model: LlamaForCausalLM, tok: PreTrainedTokenizerFast, question: str, answer: str, before: str = ""
) -> float:
    """P(answer | plain prompt)^(1/|answer|) straight from the model's logits: answer tokens + EOS;
    `before`: text ahead of the question (in-context shots)."""
    prompt = f"{before}Question: {question}\nAnswer: "
    ids = tok(prompt + answer)["input_ids"] + [tok.eos_token_id]
    start = len(tok(prompt)["input_ids"])
    with torch.no_grad():
        log_probs = model(torch.tensor([ids])).logits[0].log_softmax(-1)
    total = sum(log_probs[t - 1, ids[t]].item() for t in range(start, len(ids)))
    return math.exp(total / (len(ids) - start))


@pytest.fixture
def ctx(tok: PreTrainedTokenizerFast) -> EvalContext:
    records = {
        "forget01_perturbed": FORGET,
        "retain_perturbed": FORGET[1:],
        "real_authors_perturbed": OPTIONS,
        "world_facts_perturbed": OPTIONS[::-1],
    }
    return EvalContext(tokenizer=tok, corpus=TofuCorpus("test", "forget01", records), batch_size=2)


# --- pure formulas ---------------------------------------------------------------------------


def test_formulas_by_hand() -> None:
    assert m.normalised_probability(math.log(0.25) * 2, 2) == pytest.approx(0.25)  # (0.25²)^(1/2)
    assert m.option_probability(0.5, [0.25, 0.25]) == pytest.approx(0.5)
    assert m.truth_ratio(0.5, [0.1, 0.3]) == pytest.approx(0.4)  # mean 0.2 / 0.5
    assert m.truth_ratio(0.5, [0.1, 0.4], mean="geometric") == pytest.approx(0.4)  # sqrt(0.04) / 0.5
    with pytest.raises(UserError, match="'arithmetic' or 'geometric'"):
        m.truth_ratio(0.5, [0.1], mean="harmonic")
    assert m.forget_truth_stat(4.0) == m.forget_truth_stat(0.25) == 0.25
    assert m.utility_truth_stat(0.25) == 0.75 and m.utility_truth_stat(2.0) == 0.0
    assert m.model_utility([0.5, 0.25]) == pytest.approx(1 / 3)  # 2 / (2 + 4)
    assert m.model_utility([0.5, 0.0]) == 0.0


def test_forget_quality_is_the_ks_p_value() -> None:
    # fully separated samples of 3 and 3: D = 1, reached by 2 of the C(6,3) = 20 orderings
    assert m.forget_quality([1.0, 2.0, 3.0], [4.0, 5.0, 6.0]) == pytest.approx(0.1)
    assert m.forget_quality([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]) == 1.0
    a, b = [0.1, 0.5, 0.9, 1.3, 0.2], [0.4, 0.8, 1.1, 1.7]
    assert m.forget_quality(a, b) == stats.ks_2samp(a, b).pvalue


def test_rouge_recall_stems_as_tofu_does() -> None:
    # porter: books -> book, writing -> write; LCS(he wrote book | write book) = book: 1 of 3
    assert m.rouge_recall("he wrote books", "writing book") == pytest.approx(1 / 3)
    assert m.rouge_recall("Ana was born in Rome.", "born in rome") == pytest.approx(3 / 5)


# --- metrics on a tiny model -----------------------------------------------------------------


def test_answer_logprobs_match_the_model_and_any_batch_size(llama: LlamaForCausalLM, tok) -> None:
    windows = [encode_qa(tok, TEMPLATES["plain"], r["question"], r["answer"]) for r in FORGET + OPTIONS]
    one = m.answer_logprobs(llama, tok, windows, batch_size=1)
    many = m.answer_logprobs(llama, tok, windows, batch_size=4)
    for (s1, n1), (s4, n4), r in zip(one, many, FORGET + OPTIONS, strict=True):
        assert n1 == n4 == len(r["answer"]) + 1  # char tokens of the answer + EOS
        assert s1 == pytest.approx(s4, abs=1e-4)
        assert m.normalised_probability(s1, n1) == pytest.approx(
            hand_p(llama, tok, r["question"], r["answer"])
        )


def test_prob_and_truth_ratio_equal_the_hand_computation(
    llama: LlamaForCausalLM, tok, ctx: EvalContext
) -> None:
    out = evaluate(llama, ctx, ["tofu_prob", "tofu_truth_ratio"])
    probs = [hand_p(llama, tok, r["question"], r["answer"]) for r in FORGET]
    assert [v["score"] for v in out["tofu_prob"]["value_by_index"].values()] == pytest.approx(probs, rel=1e-4)
    assert out["tofu_prob"]["agg_value"] == pytest.approx(sum(probs) / 3, rel=1e-4)
    ratios = []
    for r in FORGET:
        false = [hand_p(llama, tok, r["question"], a) for a in r["perturbed_answer"]]
        ratios.append(sum(false) / len(false) / hand_p(llama, tok, r["question"], r["paraphrased_answer"]))
    got = out["tofu_truth_ratio"]["value_by_index"]
    assert [v["truth_ratio"] for v in got.values()] == pytest.approx(ratios, rel=1e-4)
    assert out["tofu_truth_ratio"]["agg_value"] == pytest.approx(
        sum(min(r, 1 / r) for r in ratios) / 3, rel=1e-4
    )


def test_forget_quality_against_a_reference(llama: LlamaForCausalLM, ctx: EvalContext) -> None:
    alone = evaluate(llama, ctx, ["tofu_forget_quality"])["tofu_forget_quality"]
    assert math.isnan(alone["agg_value"]) and alone["reference"] is None
    ratios = [v["truth_ratio"] for v in alone["value_by_index"].values()]
    reference = [0.2, 0.9, 1.4, 3.0]
    ctx.extra[m.REFERENCE_KEY] = reference
    result = evaluate(llama, ctx, ["tofu_forget_quality"])["tofu_forget_quality"]
    assert result["agg_value"] == pytest.approx(stats.ks_2samp(ratios, reference).pvalue)
    assert result["reference"] == "retain"
    ctx.extra[m.REFERENCE_KEY] = m.reference_truth_ratios(alone)  # the model against itself
    assert evaluate(llama, ctx, ["tofu_forget_quality"])["tofu_forget_quality"]["agg_value"] == 1.0


def test_rouge_and_model_utility_equal_the_hand_computation(
    llama: LlamaForCausalLM, tok, ctx: EvalContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a fixed "greedy answer" per prompt, so ROUGE is known; probabilities come from the model
    replies = {
        "Where was Ana born?": "born in Rome",
        "What did Bo write?": "Bo wrote it",
        "Capital of Peru?": "Lima",
    }
    prompts = []

    def fake_generate(model, tokenizer, batch, max_new_tokens, batch_size):
        prompts.extend(batch)
        return [f" {replies.get(p.split('Question: ')[1].split(chr(10))[0], 'no idea')} " for p in batch]

    monkeypatch.setattr(m, "generate_greedy", fake_generate)
    rouge = evaluate(llama, ctx, ["tofu_rouge"])["tofu_rouge"]
    # Ana: 3 of 5 gold words; Bo: LCS(bo wrote the bell | bo wrote it) = 2 of 4; Cy: 0
    assert [v["score"] for v in rouge["value_by_index"].values()] == pytest.approx([0.6, 0.5, 0.0])
    assert rouge["value_by_index"][0]["output"] == "born in Rome"  # stripped
    assert prompts[0] == "Question: Where was Ana born?\nAnswer: "

    result = evaluate(llama, ctx, ["tofu_model_utility"])["tofu_model_utility"]

    def p(r: dict, key: str) -> list[float]:
        answers = r[key] if key == "perturbed_answer" else [r[key]]
        return [hand_p(llama, tok, r["question"], a) for a in answers]

    retain = FORGET[1:]
    hand = {
        "retain_probability": sum(p(r, "answer")[0] for r in retain) / 2,
        "retain_rouge": (0.5 + 0.0) / 2,
        "retain_truth_ratio_stat": sum(
            max(
                0,
                1
                - sum(p(r, "perturbed_answer")) / len(r["perturbed_answer"]) / p(r, "paraphrased_answer")[0],
            )
            for r in retain
        )
        / 2,
    }
    for name, records in (("real_authors", OPTIONS), ("world_facts", OPTIONS[::-1])):
        true = [p(r, "answer")[0] for r in records]
        false = [p(r, "perturbed_answer") for r in records]
        hand[f"{name}_probability"] = sum(t / (t + sum(f)) for t, f in zip(true, false, strict=True)) / 2
        hand[f"{name}_rouge"] = (1.0 + 0.0) / 2  # "Lima" answered, the day question not
        hand[f"{name}_truth_ratio_stat"] = (
            sum(max(0, 1 - sum(f) / len(f) / t) for t, f in zip(true, false, strict=True)) / 2
        )
    assert result["components"] == pytest.approx(hand, rel=1e-4)
    values = list(hand.values())
    expected = 0.0 if min(values) == 0 else len(values) / sum(1 / v for v in values)
    assert result["agg_value"] == pytest.approx(expected, rel=1e-4)
    assert m.utility_from_examples(result["value_by_index"]) == pytest.approx(result["agg_value"])


# --- in-context shots (an incontext-forget-{k} column) ------------------------------------------


def hand_shots(i: int, k: int = 2, seed: int = 0) -> str:
    """Question i's k shots written out by hand: k of the other forget records, drawn with
    random.Random("seed:i") as metrics/shots.py states, each an earlier plain-template turn."""
    others = [r for j, r in enumerate(FORGET) if j != i]
    drawn = random.Random(f"{seed}:{i}").sample(others, k)
    return "".join(f"Question: {r['question']}\nAnswer: {r['answer']}\n\n" for r in drawn)


def test_each_forget_question_is_asked_after_its_drawn_shots_alone(
    llama: LlamaForCausalLM, tok, ctx: EvalContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    prompts, windows = [], []
    scored = m.answer_logprobs

    def fake_generate(model, tokenizer, batch, max_new_tokens, batch_size):
        prompts.extend(batch)
        # a model that goes on asking and answering the next question, as its shots did
        return [" born in Rome\n\nQuestion: Who taught Cy?\nAnswer: Cy learned from Di."] * len(batch)

    def spy_logprobs(model, tokenizer, batch, batch_size):
        windows.extend(tokenizer.decode(list(w), skip_special_tokens=True) for w in batch)
        return scored(model, tokenizer, batch, batch_size)

    monkeypatch.setattr(m, "generate_greedy", fake_generate)
    monkeypatch.setattr(m, "answer_logprobs", spy_logprobs)
    ctx.shots = Shots(2, seed=0)
    rouge = evaluate(llama, ctx, ["tofu_rouge", "tofu_prob", "tofu_truth_ratio"])["tofu_rouge"]
    # each answer ends where the model opens a next turn: Ana's 3 of 5 gold words, none of Cy's
    assert [v["output"] for v in rouge["value_by_index"].values()] == ["born in Rome"] * 3
    assert [v["score"] for v in rouge["value_by_index"].values()] == pytest.approx([0.6, 0.0, 0.0])
    asked = [f"{hand_shots(i)}Question: {r['question']}\nAnswer: " for i, r in enumerate(FORGET)]
    assert prompts == asked
    for i, r in enumerate(FORGET):
        assert asked[i].count(r["question"]) == 1  # never among its own shots
    # tofu_prob scores each answer, then tofu_truth_ratio the paraphrase and the perturbations
    options = [[r["answer"]] for r in FORGET]
    options += [[r["paraphrased_answer"], *r["perturbed_answer"]] for r in FORGET]
    owners = [*range(3), *range(3)]
    assert windows == [asked[i] + a for i, answers in zip(owners, options, strict=True) for a in answers]
    # a limit asks fewer questions; their shots still come from the whole forget set
    prompts.clear()
    ctx.limit = 1
    evaluate(llama, ctx, ["tofu_rouge"])
    assert prompts == asked[:1]


def test_prob_and_truth_ratio_under_shots_equal_the_hand_loop(
    llama: LlamaForCausalLM, tok, ctx: EvalContext
) -> None:
    ctx.shots = Shots(2, seed=0)
    out = evaluate(llama, ctx, ["tofu_prob", "tofu_truth_ratio"])
    probs = [hand_p(llama, tok, r["question"], r["answer"], hand_shots(i)) for i, r in enumerate(FORGET)]
    assert [v["score"] for v in out["tofu_prob"]["value_by_index"].values()] == pytest.approx(probs, rel=1e-4)
    assert out["tofu_prob"]["agg_value"] == pytest.approx(sum(probs) / 3, rel=1e-4)
    assert probs != pytest.approx([hand_p(llama, tok, r["question"], r["answer"]) for r in FORGET], rel=1e-4)
    ratios = []
    for i, r in enumerate(FORGET):
        false = [hand_p(llama, tok, r["question"], a, hand_shots(i)) for a in r["perturbed_answer"]]
        true = hand_p(llama, tok, r["question"], r["paraphrased_answer"], hand_shots(i))
        ratios.append(sum(false) / len(false) / true)
    got = out["tofu_truth_ratio"]["value_by_index"]
    assert [v["truth_ratio"] for v in got.values()] == pytest.approx(ratios, rel=1e-4)
    assert out["tofu_truth_ratio"]["agg_value"] == pytest.approx(
        sum(min(r, 1 / r) for r in ratios) / 3, rel=1e-4
    )


def test_rouge_under_shots_equals_greedy_decoding_by_hand(
    llama: LlamaForCausalLM, tok, ctx: EvalContext
) -> None:
    ctx.shots, ctx.batch_size = Shots(2, seed=0), 1
    rouge = evaluate(llama, ctx, ["tofu_rouge"])["tofu_rouge"]["value_by_index"]
    for i, r in enumerate(FORGET):
        ids = torch.tensor([tok(f"{hand_shots(i)}Question: {r['question']}\nAnswer: ")["input_ids"]])
        with torch.no_grad():
            new = llama.generate(
                ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=m.MAX_NEW_TOKENS,
                pad_token_id=tok.pad_token_id,
            )[0, ids.shape[1] :]  # fmt: skip
        output = tok.decode(new, skip_special_tokens=True).split("\n\nQuestion: ")[0].strip()
        assert rouge[i]["output"] == output
        assert rouge[i]["score"] == pytest.approx(m.rouge_recall(r["answer"], output))


def test_model_utility_harmonic_mean_of_nonzero_components(tok, ctx: EvalContext) -> None:
    rows = {
        f"{name}/0": {"set": name, "probability": 0.5, "rouge": 0.25, "truth_ratio_stat": 1.0}
        for name in m.UTILITY_SETS
    }
    # nine values: three each of 0.5, 0.25, 1 -> 9 / (3·2 + 3·4 + 3·1) = 9 / 21
    assert m.utility_from_examples(rows) == pytest.approx(9 / 21)


def test_requires_names_roles_and_a_limit(llama: LlamaForCausalLM, ctx: EvalContext) -> None:
    assert required_splits(["tofu_prob", "tofu_model_utility"]) == {
        "tofu": {"forget_perturbed", "retain_perturbed", "real_authors_perturbed", "world_facts_perturbed"}
    }
    ctx.limit = 1
    assert list(evaluate(llama, ctx, ["tofu_prob"])["tofu_prob"]["value_by_index"]) == [0]


def test_reference_truth_ratios_from_saved_results(tmp_path: Path) -> None:
    ours = {"agg_value": 0.5, "value_by_index": {"0": {"truth_ratio": 0.5}, "1": {"truth_ratio": 2.0}}}
    theirs = {"forget_truth_ratio": {"agg_value": 0.7, "value_by_index": {"3": {"score": 0.8}}}}
    assert m.reference_truth_ratios(ours) == [0.5, 2.0]
    (tmp_path / "TOFU_EVAL.json").write_text(json.dumps(theirs))
    assert m.load_reference_truth_ratios(tmp_path / "TOFU_EVAL.json") == [0.8]
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(UserError, match=r"bad.json: no forget-set truth ratios"):
        m.load_reference_truth_ratios(tmp_path / "bad.json")
