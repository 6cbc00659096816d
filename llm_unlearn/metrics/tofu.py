"""TOFU's metrics (Maini et al. 2024, arXiv 2401.06121; METHODS.md "TOFU metrics").

Per question q with answer a, paraphrased answer ã and perturbed answers â₁…â_k, each scored in
the corpus' chat template with the loss on the answer tokens and EOS only:
  p(y)        = P(y|q)^(1/|y|) = exp(mean log-prob of y's tokens)       (length-normalised)
  probability = p(a); on real authors / world facts p(a) / (p(a) + Σᵢ p(âᵢ))
  ROUGE       = ROUGE-L recall of the greedy answer (200 new tokens) against a, Porter-stemmed
                as TOFU's and open-unlearning's code score it
  truth ratio R = mean_i p(âᵢ) / p(ã)  (forget/retain); a replaces ã on real authors / world facts.
                The forget set reports mean min(R, 1/R) (1 = true and false answers equally likely,
                TOFU's aggregate_eval_stat.py); utility uses mean max(0, 1 − R).
  forget quality = p-value of scipy.stats.ks_2samp(R on the forget set, the retain model's R there)
  model utility  = harmonic mean of {probability, ROUGE, max(0, 1 − R)} × {retain, real authors,
                   world facts}
The paper averages the perturbed p(âᵢ) arithmetically; TOFU's and open-unlearning's code average
their log-probs (a geometric mean). `ctx.extra["tofu_truth_ratio_mean"] = "geometric"` reproduces
the code, e.g. to compare with truth ratios from open-unlearning's saved TOFU_EVAL.json logs.

In-context probing (`ctx.shots`, an `incontext-forget-{k}` column, `metrics/shots.py`): probability,
ROUGE and truth ratio on forget ask forget question i after k other forget QA pairs drawn for it
from the whole forget set, (q, a) with their true answers, as earlier turns of the same chat
(`ChatTemplate.prompt`: open-unlearning's few-shot rendering, the system text once, each shot
closed by the model's asst_end_tag): TOFU has no few-shot examples of its own and its models were
fine-tuned on single turns, so earlier turns in their own format are the context they read best.
The scored answer's loss stays on its own tokens and EOS; a generated answer is cut where
the model opens a next turn (`turn_end + before`). Forget quality takes no shots: its KS
reference is the retrain model's truth ratios asked without them, so under shots it would test the
shift the context gives every model; the truth ratio is that test's in-context signal, with the
retrain model's row as its control. Model utility asks no forget pairs.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from llm_unlearn.data.collate import IGNORE_INDEX, LabeledWindow
from llm_unlearn.data.tofu import QA, TOFU, encode_qa, get_template
from llm_unlearn.errors import UserError
from llm_unlearn.metrics.bootstrap import Examples, register_statistic
from llm_unlearn.metrics.generation import (
    _device,
    _eval_mode,
    _pad,
    _pad_id,
    _sharded,
    generate_greedy,
    token_budget,
)
from llm_unlearn.metrics.registry import (
    EvalContext,
    MetricResult,
    ReferenceFlag,
    RetrainReference,
    register_metric,
)
from llm_unlearn.metrics.verbmem import mean_or_nan

if TYPE_CHECKING:
    from rouge_score.rouge_scorer import RougeScorer

MAX_NEW_TOKENS = 200
#: TOFU's values lie in [0, 1]: one point of that scale (MUSE's ×100 scores have 1)
UNIT_POINT = 0.01  # open-unlearning's generation default for TOFU
REFERENCE_KEY = "tofu_reference_truth_ratios"
#: the metric whose reference is the retrain model's forget-set truth ratios
FORGET_QUALITY = "tofu_forget_quality"
MEAN_KEY = "tofu_truth_ratio_mean"
#: the model-utility sets: name -> (TOFU config, reference answer of the truth ratio, normalised probability)
UTILITY_SETS = {
    "retain": ("retain_perturbed", "paraphrased_answer", False),
    "real_authors": ("real_authors_perturbed", "answer", True),
    "world_facts": ("world_facts_perturbed", "answer", True),
}


# --- pure formulas ---------------------------------------------------------------------------


def normalised_probability(logprob_sum: float, n_tokens: int) -> float:
    """P(y|q)^(1/|y|) = exp(Σ_t log p(y_t) / |y|)."""
    return math.exp(logprob_sum / n_tokens)


def option_probability(p_true: float, p_false: Sequence[float]) -> float:
    """p(a) / (p(a) + Σᵢ p(âᵢ)): the true answer's share among the options."""
    return p_true / (p_true + sum(p_false))


def truth_ratio(p_reference: float, p_perturbed: Sequence[float], mean: str = "arithmetic") -> float:
    """R = mean_i p(âᵢ) / p(reference); `mean="geometric"` averages the log-probs (TOFU's code)."""
    if mean == "arithmetic":
        false = sum(p_perturbed) / len(p_perturbed)
    elif mean == "geometric":
        false = math.exp(sum(math.log(p) for p in p_perturbed) / len(p_perturbed))
    else:
        raise UserError(f"{MEAN_KEY} must be 'arithmetic' or 'geometric', got {mean!r}")
    return false / p_reference


def forget_truth_stat(ratio: float) -> float:
    """min(R, 1/R): 1 when the true and the false answers are equally likely (forget set)."""
    return min(ratio, 1 / ratio)


def utility_truth_stat(ratio: float) -> float:
    """max(0, 1 − R): how much likelier the truth is than the perturbations (retained knowledge)."""
    return max(0.0, 1 - ratio)


def forget_quality(truth_ratios: Sequence[float], reference_truth_ratios: Sequence[float]) -> float:
    """p-value of the two-sample KS test between the two truth-ratio samples."""
    # scipy.stats (as rouge_score below) is imported on first use: a second of every process start
    from scipy.stats import ks_2samp

    return float(ks_2samp(truth_ratios, reference_truth_ratios).pvalue)


def model_utility(values: Sequence[float]) -> float:
    """Harmonic mean (0 when any value is 0)."""
    from scipy.stats import hmean

    return 0.0 if min(values) <= 0 else float(hmean(values))


@cache
def _scorer() -> RougeScorer:
    from rouge_score.rouge_scorer import RougeScorer

    return RougeScorer(["rougeL"], use_stemmer=True)


def rouge_recall(gold: str, output: str) -> float:
    """ROUGE-L recall (LCS / gold words), words Porter-stemmed."""
    return _scorer().score(gold, output)["rougeL"].recall


# --- model calls -----------------------------------------------------------------------------


def answer_logprobs(
    model: nn.Module, tokenizer: PreTrainedTokenizerBase, windows: list[LabeledWindow], batch_size: int
) -> list[tuple[float, int]]:
    """Per window, (Σ log p(x_t | x_<t) over its labelled tokens, their count), in float32."""
    if not windows:
        return []
    pad_id = _pad_id(tokenizer)

    def run_batch(idx: list[int]) -> list[tuple[float, int]]:
        input_ids, mask = _pad([windows[i] for i in idx], pad_id, left=False, device=_device(model))
        logits = model(input_ids=input_ids, attention_mask=mask).logits
        out = []
        for j, i in enumerate(idx):
            labels = torch.tensor(windows[i].labels[1:], device=logits.device)
            keep = labels != IGNORE_INDEX
            # one row at a time: a float32 copy of the whole batch's logits can be gigabytes
            log_probs = logits[j, : len(windows[i]) - 1].float().log_softmax(-1)
            picked = log_probs[keep].gather(-1, labels[keep][:, None]).squeeze(-1)
            out.append((picked.sum().item(), int(keep.sum().item())))
        return out

    with _eval_mode(model):
        return _sharded(windows, batch_size, run_batch, max_tokens=token_budget(model))


def _probabilities(
    model: nn.Module,
    ctx: EvalContext,
    records: list[dict[str, Any]],
    keys: Sequence[str],
    shots: Sequence[Sequence[QA]] | None = None,
) -> list[dict[str, Any]]:
    """Per record, p(y) of each answer field in `keys` (perturbed_answer: a list), one batched pass;
    record i asked after `shots[i]` (None: none)."""
    chat = get_template(ctx.corpus.template)
    windows, owners = [], []
    for i, r in enumerate(records):
        before = () if shots is None else shots[i]
        for key in keys:
            for answer in r[key] if key == "perturbed_answer" else [r[key]]:
                windows.append(encode_qa(ctx.tokenizer, chat, r["question"], answer, shots=before))
                owners.append((i, key))
    out: list[dict[str, Any]] = [{key: [] for key in keys} for _ in records]
    for (i, key), (total, count) in zip(
        owners, answer_logprobs(model, ctx.tokenizer, windows, ctx.batch_size), strict=True
    ):
        out[i][key].append(normalised_probability(total, count))
    return [{k: v if k == "perturbed_answer" else v[0] for k, v in row.items()} for row in out]


def _greedy_answers(
    model: nn.Module,
    ctx: EvalContext,
    records: list[dict[str, Any]],
    shots: Sequence[Sequence[QA]] | None = None,
) -> list[str]:
    """Each record's greedy answer, stripped; after `shots[i]` (None: none) cut where the model opens
    a next turn: the shots showed it that a turn goes on there, as TOFU's single turn does not."""
    chat = get_template(ctx.corpus.template)
    prompts = [chat.prompt(r["question"], () if shots is None else shots[i]) for i, r in enumerate(records)]
    outputs = generate_greedy(model, ctx.tokenizer, prompts, MAX_NEW_TOKENS, ctx.batch_size)
    if shots is not None:
        outputs = [o.split(f"{chat.turn_end}{chat.before}", 1)[0] for o in outputs]
    return [o.strip() for o in outputs]


def _records(ctx: EvalContext, split: str) -> list[dict[str, Any]]:
    return ctx.corpus.get(TOFU, split)[: ctx.limit]


def _shots(ctx: EvalContext, split: str) -> list[tuple[QA, ...]] | None:
    """Each asked question's in-context shots (`ctx.shots`, an in-context column): k other QA pairs
    of the whole `split` drawn by `Shots.draw`, as (question, answer); None without shots."""
    if ctx.shots is None:
        return None
    pairs = ctx.corpus.get(TOFU, split)
    drawn = (ctx.shots.draw(pairs, i) for i in range(len(pairs[: ctx.limit])))
    return [tuple((p["question"], p["answer"]) for p in shots) for shots in drawn]


def _ratios(
    model: nn.Module,
    ctx: EvalContext,
    records: list[dict[str, Any]],
    reference: str,
    shots: Sequence[Sequence[QA]] | None = None,
) -> list[float]:
    mean = ctx.extra.get(MEAN_KEY, "arithmetic")
    probs = _probabilities(model, ctx, records, (reference, "perturbed_answer"), shots)
    return [truth_ratio(p[reference], p["perturbed_answer"], mean) for p in probs]


# --- what the audit asks: bootstraps and the retrain reference ---------------------------------

#: the per-question values of model utility, in the order its nine means take them
UTILITY_FIELDS = ("probability", "rouge", "truth_ratio_stat")


@register_statistic("ks")
def ks_statistic(found: Examples, counts: np.ndarray) -> np.ndarray:
    """Forget quality of each resample: the KS-test p-value of the resampled truth ratios against the
    FIXED `reference` ratios of the retain model."""
    from scipy.stats import ks_2samp

    rows = np.atleast_2d(counts).astype(int)
    values = [ks_2samp(np.repeat(found.scores, row), found.reference).pvalue for row in rows]
    return np.array(values).reshape(np.shape(counts)[:-1])


def ks_examples(
    keys: tuple[str, ...], rows: Sequence[Mapping[str, Any]], result: Mapping[str, Any]
) -> Examples:
    """The truth ratios R_i, resampled against the result's fixed `reference_truth_ratios`."""
    scores = np.array([float(r["truth_ratio"]) for r in rows])
    return Examples(keys, scores, "ks", reference=np.array(result["reference_truth_ratios"], float))


@register_statistic("utility")
def utility_statistic(found: Examples, counts: np.ndarray) -> np.ndarray:
    """Model utility of each resample: the harmonic mean of the nine set × field means (0 when one is)."""
    rows = np.atleast_2d(counts)
    means = []
    for g in np.unique(found.strata):
        where = found.strata == g
        means.append(rows[:, where] @ found.scores[where] / rows[:, where].sum(axis=1)[:, None])
    values = np.concatenate(means, axis=1)  # [B, 9]
    with np.errstate(divide="ignore"):
        harmonic = values.shape[1] / (1 / values).sum(axis=1)
    harmonic = np.where((values > 0).all(axis=1), harmonic, 0.0)
    return harmonic.reshape(np.shape(counts)[:-1])


def utility_examples(
    keys: tuple[str, ...], rows: Sequence[Mapping[str, Any]], result: Mapping[str, Any]
) -> Examples:
    """Each question's probability, ROUGE and truth-ratio statistic ([n, 3]), resampled within its set."""
    sets = sorted({r["set"] for r in rows})
    scores = np.array([[float(r[f]) for f in UTILITY_FIELDS] for r in rows])
    return Examples(keys, scores, "utility", np.array([sets.index(r["set"]) for r in rows]))


def _given(ctx: EvalContext, ratios: list[float] | None) -> EvalContext:
    return ctx if ratios is None else dataclasses.replace(ctx, extra={**ctx.extra, REFERENCE_KEY: ratios})


def _own(value: MetricResult) -> None:
    # the retrain model's own truth ratios are its reference (p = 1)
    own = reference_truth_ratios(value)
    value.update(agg_value=forget_quality(own, own), reference="retrain", reference_truth_ratios=own)


# --- metrics ---------------------------------------------------------------------------------

_FORGET = {TOFU: ("forget_perturbed",)}


@register_metric(
    "tofu_prob",
    requires=_FORGET,
    benchmark="tofu",
    role="forget",
    default_rank=3,
    title="TOFU answer probability on forget",
    unit="lower = more forgotten",
    point=UNIT_POINT,
    floor=0.0,
    incontext=True,
)
def tofu_prob(model: nn.Module, ctx: EvalContext) -> MetricResult:
    """Forget-set answer probability p(a) = P(a|q)^(1/|a|): lower = more forgotten."""
    records = _records(ctx, "forget_perturbed")
    probs = _probabilities(model, ctx, records, ("answer",), _shots(ctx, "forget_perturbed"))
    by_index = {
        i: {"score": p["answer"], "question": r["question"]}
        for i, (r, p) in enumerate(zip(records, probs, strict=True))
    }
    return {"agg_value": mean_or_nan([v["score"] for v in by_index.values()]), "value_by_index": by_index}


@register_metric(
    "tofu_rouge",
    requires=_FORGET,
    benchmark="tofu",
    role="forget",
    default_rank=4,
    title="TOFU ROUGE-L recall on forget",
    unit="lower = more forgotten",
    new_tokens=MAX_NEW_TOKENS,
    point=UNIT_POINT,
    floor=0.0,
    incontext=True,
)
def tofu_rouge(model: nn.Module, ctx: EvalContext) -> MetricResult:
    """Forget-set ROUGE-L recall of the greedy answer: lower = more forgotten."""
    records = _records(ctx, "forget_perturbed")
    outputs = _greedy_answers(model, ctx, records, _shots(ctx, "forget_perturbed"))
    by_index = {
        i: {
            "score": rouge_recall(r["answer"], out),
            "question": r["question"],
            "gold": r["answer"],
            "output": out,
        }
        for i, (r, out) in enumerate(zip(records, outputs, strict=True))
    }
    return {"agg_value": mean_or_nan([v["score"] for v in by_index.values()]), "value_by_index": by_index}


# a model without a preference between the true and the perturbed answers has R = 1, min(R, 1/R) = 1
@register_metric(
    "tofu_truth_ratio",
    requires=_FORGET,
    benchmark="tofu",
    role="forget",
    default_rank=2,
    title="TOFU truth ratio on forget",
    unit="mean min(R, 1/R), near 1 = forgotten",
    point=UNIT_POINT,
    lower_forgets=False,
    floor=1.0,
    incontext=True,
)
def tofu_truth_ratio(model: nn.Module, ctx: EvalContext) -> MetricResult:
    """Forget-set truth ratio, mean min(R, 1/R): near 1 = the model no longer prefers the truth."""
    records = _records(ctx, "forget_perturbed")
    ratios = _ratios(model, ctx, records, "paraphrased_answer", _shots(ctx, "forget_perturbed"))
    by_index = {i: {"score": forget_truth_stat(r), "truth_ratio": r} for i, r in enumerate(ratios)}
    return {"agg_value": mean_or_nan([v["score"] for v in by_index.values()]), "value_by_index": by_index}


@register_metric(
    FORGET_QUALITY,
    requires=_FORGET,
    benchmark="tofu",
    role="forget",
    default_rank=0,
    title="TOFU forget quality",
    unit="KS p-value vs the retrain model, higher = more forgotten",
    bootstrap=ks_examples,
    # the retrain model's forget-set truth ratios are the KS test's reference
    reference=RetrainReference(
        take=lambda retrain: reference_truth_ratios(retrain),
        given=_given,
        own=_own,
        flag=ReferenceFlag(
            "--reference-truth-ratios",
            "TOFU forget quality's reference: the retain model's results JSON (this command's, or "
            "open-unlearning's TOFU_EVAL.json)",
            parse=Path,
            # a lambda: the loader is defined further down this file
            load=lambda path: load_reference_truth_ratios(path),
        ),
    ),
    point=UNIT_POINT,
    lower_forgets=False,
)
def tofu_forget_quality(model: nn.Module, ctx: EvalContext) -> MetricResult:
    """KS p-value against the retain model's forget-set truth ratios, ctx.extra[REFERENCE_KEY]
    (1 = indistinguishable from the retain model); nan when no reference is given.

    value_by_index[i]["truth_ratio"] is R_i, what the KS test compares: a bootstrap resamples
    those (and the reference's) and recomputes `forget_quality`."""
    records = _records(ctx, "forget_perturbed")
    ratios = _ratios(model, ctx, records, "paraphrased_answer")
    reference = ctx.extra.get(REFERENCE_KEY)
    value = float("nan") if reference is None else forget_quality(ratios, list(reference))
    return {
        "agg_value": value,
        "reference": None if reference is None else "retain",
        # kept with the cell, so its bootstrap can recompute the test on resampled ratios
        **({} if reference is None else {"reference_truth_ratios": [float(r) for r in reference]}),
        "value_by_index": {
            i: {"truth_ratio": r, "question": q["question"]}
            for i, (r, q) in enumerate(zip(ratios, records, strict=True))
        },
    }


@register_metric(
    "tofu_model_utility",
    requires={TOFU: tuple(c for c, _, _ in UTILITY_SETS.values())},
    benchmark="tofu",
    role="utility",
    default_rank=1,
    title="TOFU model utility",
    unit="harmonic mean of nine, higher = more utility kept",
    bootstrap=utility_examples,
    new_tokens=MAX_NEW_TOKENS,
    point=UNIT_POINT,
)
def tofu_model_utility(model: nn.Module, ctx: EvalContext) -> MetricResult:
    """Harmonic mean of probability, ROUGE and max(0, 1 − R) on retain, real authors, world facts.

    value_by_index["<set>/<i>"] holds each question's three values; a bootstrap resamples the
    questions within each set and recomputes `utility_from_examples`."""
    mean = ctx.extra.get(MEAN_KEY, "arithmetic")
    by_index: dict[str, dict[str, Any]] = {}
    for name, (config, reference, normalised) in UTILITY_SETS.items():
        records = _records(ctx, config)
        probs = _probabilities(
            model, ctx, records, tuple(dict.fromkeys(("answer", reference, "perturbed_answer")))
        )
        outputs = _greedy_answers(model, ctx, records)
        for i, (r, p, out) in enumerate(zip(records, probs, outputs, strict=True)):
            ratio = truth_ratio(p[reference], p["perturbed_answer"], mean)
            by_index[f"{name}/{i}"] = {
                "set": name,
                "probability": option_probability(p["answer"], p["perturbed_answer"])
                if normalised
                else p["answer"],
                "rouge": rouge_recall(r["answer"], out),
                "truth_ratio_stat": utility_truth_stat(ratio),
                "truth_ratio": ratio,
                "output": out,
            }
    components = utility_components(by_index)
    return {
        "agg_value": model_utility(list(components.values())),
        "components": components,
        "value_by_index": by_index,
    }


def utility_components(value_by_index: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    """The nine means {set}_{probability|rouge|truth_ratio_stat} of model utility's examples."""
    out = {}
    for name in UTILITY_SETS:
        rows = [v for v in value_by_index.values() if v["set"] == name]
        for field in UTILITY_FIELDS:
            out[f"{name}_{field}"] = mean_or_nan([row[field] for row in rows])
    return out


def utility_from_examples(value_by_index: Mapping[str, Mapping[str, Any]]) -> float:
    """Model utility recomputed from (e.g. resampled) examples of `tofu_model_utility`."""
    return model_utility(list(utility_components(value_by_index).values()))


def reference_truth_ratios(result: Mapping[str, Any]) -> list[float]:
    """The forget-set truth ratios R_i of a result: ours (tofu_forget_quality or tofu_truth_ratio,
    value_by_index[*].truth_ratio) or open-unlearning's TOFU_EVAL.json (forget_truth_ratio.
    value_by_index[*].score, the same R = false / true), e.g. of the retain model for REFERENCE_KEY."""
    entries = result.get("forget_truth_ratio", result)["value_by_index"].values()
    return [float(e["truth_ratio"] if "truth_ratio" in e else e["score"]) for e in entries]


def load_reference_truth_ratios(path: str | Path) -> list[float]:
    """`reference_truth_ratios` of the JSON object saved in `path`; a one-line UserError otherwise."""
    try:
        return reference_truth_ratios(json.loads(Path(path).expanduser().read_text(encoding="utf-8")))
    except (OSError, json.JSONDecodeError, KeyError, TypeError, AttributeError, ValueError) as error:
        raise UserError(
            f"{path}: no forget-set truth ratios (expected a tofu_forget_quality result or open-unlearning's "
            f"TOFU_EVAL.json): {type(error).__name__}: {error}"
        ) from None
