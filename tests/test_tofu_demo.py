"""The TOFU demo end to end (slow: the demo models are trained on first use): the fine-tuned target
knows the forget authors and the retrain model does not, forget quality tells them apart, and
unlearning on answer-only windows lowers the answers' probability but not the paraphrases'."""

from __future__ import annotations

import pytest

from llm_unlearn.data.collate import ForgetRetainDataset
from llm_unlearn.data.tofu import DEMO_TOFU, TOFU, load_tofu, training_windows
from llm_unlearn.metrics import EvalContext, evaluate, required_splits
from llm_unlearn.metrics import tofu as m
from llm_unlearn.models import load_model, load_tokenizer
from llm_unlearn.tofu_checkpoints import demo_tofu_checkpoints
from llm_unlearn.trainer import UnlearningTrainer
from llm_unlearn.unlearning_config import UnlearningConfig

NAMES = ["tofu_forget_quality", "tofu_model_utility", "tofu_prob"]


@pytest.mark.slow
def test_demo_tofu_target_retrain_and_unlearning(tmp_path) -> None:
    paths = demo_tofu_checkpoints("forget10")
    tok = load_tokenizer(paths["target"])
    needs = required_splits(NAMES)
    needs[TOFU] |= {"forget", "retain"}
    corpus = load_tofu(DEMO_TOFU, needs, "forget10")
    ctx = EvalContext(tokenizer=tok, corpus=corpus, batch_size=32)
    retrain = evaluate(load_model(paths["retrain"]), ctx, NAMES)
    ctx.extra[m.REFERENCE_KEY] = m.reference_truth_ratios(retrain["tofu_forget_quality"])
    target_model = load_model(paths["target"])
    target = evaluate(target_model, ctx, NAMES)
    # the target answers the forget authors' questions, the retrain model never saw them
    assert target["tofu_prob"]["agg_value"] > 0.9 > 0.5 > retrain["tofu_prob"]["agg_value"]
    assert target["tofu_forget_quality"]["agg_value"] < 1e-3
    # both keep the retain authors and the general-knowledge stand-ins
    assert min(target["tofu_model_utility"]["agg_value"], retrain["tofu_model_utility"]["agg_value"]) > 0.3

    settings = dict(learning_rate=3e-4, num_train_epochs=5, per_device_train_batch_size=8, seed=0)
    args = UnlearningConfig(
        output_dir=str(tmp_path), forget_loss="npo", retain_loss="gdr", report_to="none", save_strategy="no",
        disable_tqdm=True, use_cpu=True, **settings,
    )  # fmt: skip
    forget = training_windows(corpus, "forget", tok, max_length=128)
    retain = training_windows(corpus, "retain", tok, max_length=128)
    UnlearningTrainer(
        model=target_model, args=args, train_dataset=ForgetRetainDataset(forget, retain), processing_class=tok
    ).train()
    unlearned = evaluate(target_model, ctx, NAMES)
    assert unlearned["tofu_prob"]["agg_value"] < target["tofu_prob"]["agg_value"] - 0.3
    assert unlearned["tofu_model_utility"]["agg_value"] > 0.3
    # unlearning the answers' wording leaves the paraphrased wording the target also learned: the
    # truth ratios, which score paraphrases, still tell it from the retrain model
    assert unlearned["tofu_forget_quality"]["agg_value"] < 1e-3
