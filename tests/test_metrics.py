"""metrics/__init__.py: `evaluate` runs every metric end to end on a tiny Llama, and `required_splits`
loads only what the named metrics read."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch
from conftest import tiny_llama
from helpers import CONTEXT, SHOTS, corpus, tiny_gpt2
from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

from llm_unlearn.data.corpora import MuseCorpus
from llm_unlearn.errors import UserError
from llm_unlearn.metrics import METRICS, EvalContext, evaluate, privleak, required_splits
from llm_unlearn.registry import UnknownNameError


def test_evaluate_all_metrics_on_tiny_llama(llama: LlamaForCausalLM, tok: PreTrainedTokenizerFast) -> None:
    qa = [{"question": "Who?", "answer": "Ann"}, {"question": "Where?", "answer": "Rome"}]
    data = corpus(
        verbmem={"forget": [{"prompt": "Once upon", "gt": "a time there was"}] * 3},
        knowmem={"forget_qa": qa, "forget_qa_icl": qa[:1], "retain_qa": qa, "retain_qa_icl": qa[1:]},
        privleak={"forget": ["alpha beta", "gamma delta epsilon"], "holdout": ["zeta eta", "theta"]},
    )
    # the MUSE metrics; TOFU's, WMDP's and lm-eval's read other data (test_metrics_tofu.py,
    # test_metrics_wmdp.py, test_metrics_harness.py)
    names = [n for n in METRICS.names() if not n.startswith(("tofu_", "lm_eval", "wmdp_", "mmlu"))]
    results = evaluate(llama, EvalContext(tok, data, batch_size=2, limit=2), names)
    assert list(results) == names
    for name, result in results.items():
        # without a retrain model the reference-model attack has no reference: nan, as TOFU's forget quality
        assert math.isfinite(result["agg_value"]) == (name != "privleak_reference"), name
        assert len(result["value_by_index"]) == (4 if name.startswith("privleak") else 2), name
    assert 0 <= results["knowmem_forget"]["recall"] <= 100


def test_required_splits_and_unknown_names() -> None:
    assert required_splits(["verbmem", "knowmem_forget", "knowmem_retain", "privleak", "privleak_zlib"]) == {
        "verbmem": {"forget"},
        "knowmem": {"forget_qa", "forget_qa_icl", "retain_qa", "retain_qa_icl"},
        "privleak": {"forget", "holdout"},
    }
    with pytest.raises(UnknownNameError, match="privleak_min_k_plus_plus"):
        required_splits(["nope"])
    with pytest.raises(UnknownNameError):
        evaluate(None, None, ["verbmem", "nope"])


# --- every MUSE metric on 256-position models ------------------------------------------------

LONG = "word " * 70  # 350 chars: BOS + 350 tokens, over the context and over 256 - 128 prompt tokens
QA = [
    {"question": "Who?", "answer": "Ann"},  # BOS + 3 x 100 + 23: fits (224) without the first shot
    {"question": "Where " + "x" * 300 + "?", "answer": "Rome"},  # too long alone
]
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


def test_no_room_to_generate_is_one_user_error(tok: PreTrainedTokenizerFast) -> None:
    model = tiny_gpt2(tok, n_positions=100)  # fewer than VerbMem's 128 new tokens
    data = MuseCorpus("v", {"verbmem": {"forget": [{"prompt": SHORT, "gt": "gamma"}]}})
    with pytest.raises(UserError, match="verbmem: the model's context is 100 tokens"):
        evaluate(model, EvalContext(tok, data), ["verbmem"])


def test_importing_the_metrics_and_the_loader_leaves_the_heavy_scorers_out() -> None:
    """An `evaluate` start pays for no scorer before its first forward pass: rouge_score (nltk),
    scipy.stats, sklearn and transformers' Trainer (datasets, pandas) are imported on first use."""
    code = (
        "import sys, llm_unlearn.metrics, llm_unlearn.models;"
        "print(' '.join(m for m in ('rouge_score', 'nltk', 'scipy.stats', 'sklearn', 'datasets',"
        " 'pandas', 'transformers.trainer') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == []
    assert privleak.membership_auc([0.1, 0.2], [0.3, 0.4]) == 0.0  # and they still load when used
