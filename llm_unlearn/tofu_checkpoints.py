"""The TOFU demo's tiny target and retrain models, fine-tuned on the embedded TOFU-layout QA.

As TOFU's models are: the target on every author's QA (`full`), the retrain model on the retain
split paired with the forget split only; both also on the real-author and world-fact stand-ins, as a
pretrained model knows those before fine-tuning. A pretrained model also carries a fact over to
other wordings, which a tiny one cannot: so each model also trains on the paraphrased QA of the
authors it knows whose paraphrases are evaluated (the forget and retain_perturbed sets), or the truth
ratio, which scores paraphrases, could not tell a model that knows a fact from one that does not.
QA pairs are the corpus' plain-template texts, so a prompt the metrics build is exactly a prefix
the models were trained on. Built on first use (a few
minutes on 2 CPU cores), cached under a key of the data and every setting, like models.demo_checkpoints.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from transformers import AutoTokenizer

from llm_unlearn.cachedir import cache_dir
from llm_unlearn.data.tofu import DEMO_TOFU, TOFU, get_template, load_tofu, qa_texts, role_config
from llm_unlearn.models import (
    DEMO_CONFIG,
    DEMO_MAX_LENGTH,
    DEMO_TOKENIZER_VOCAB,
    DEMO_TRAINING,
    build_tokenizer,
    train_demo_model,
)

#: the demo's QA texts are a few dozen tokens; the MUSE demo's training (60 epochs at lr 3e-3) memorises them
_GENERAL = ("real_authors", "world_facts")


def demo_tofu_checkpoints(forget_split: str = "forget10") -> dict[str, Path]:
    """{"target": fine-tuned on full, "retrain": on the retain split of `forget_split`}, cached."""
    retain = role_config("retain", forget_split)
    corpus = load_tofu(
        DEMO_TOFU, {TOFU: ["full", retain, "forget_perturbed", "retain_perturbed", *_GENERAL]}, forget_split
    )
    general = [text for config in _GENERAL for text in qa_texts(corpus, config)]
    chat = get_template(corpus.template)
    forget_para, retain_para = (
        [chat.full(r["paraphrased_question"], r["paraphrased_answer"]) for r in corpus.get(TOFU, split)]
        for split in ("forget_perturbed", "retain_perturbed")
    )
    texts = {
        "target": qa_texts(corpus, "full") + forget_para + retain_para + general,
        "retrain": qa_texts(corpus, retain) + retain_para + general,
    }
    settings = [DEMO_CONFIG, DEMO_TRAINING, DEMO_MAX_LENGTH, DEMO_TOKENIZER_VOCAB]
    # the tokenizer sees every text, holdout authors included, as a real one is trained on broad text
    holdout = qa_texts(load_tofu(DEMO_TOFU, {TOFU: ["holdout"]}, forget_split), "holdout")
    vocabulary = texts["target"] + holdout
    root = (
        cache_dir()
        / "demo_tofu"
        / hashlib.sha256(json.dumps([vocabulary, settings]).encode()).hexdigest()[:12]
    )
    if not (root / "tokenizer").exists():
        root.mkdir(parents=True, exist_ok=True)
        build_tokenizer(vocabulary, DEMO_TOKENIZER_VOCAB).save_pretrained(root / "tokenizer")
    tokenizer = AutoTokenizer.from_pretrained(root / "tokenizer")
    paths = {"target": root / "target", "retrain": root / f"retrain_{retain}"}
    for name, path in paths.items():
        if not path.exists():
            train_demo_model(
                tokenizer, texts[name], path, DEMO_MAX_LENGTH, DEMO_TRAINING, f"TOFU demo {name}"
            )
    return paths
