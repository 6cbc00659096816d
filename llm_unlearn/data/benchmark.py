"""One entry point for every benchmark layout: MUSE (corpora.py), TOFU (tofu.py) or WMDP (wmdp.py).

The recipe's `data.benchmark` says which, or "auto" detects it from the source (the embedded
demo_tofu or demo_wmdp, a folder of TOFU config files or of wmdp-* config folders, a Hub id naming
TOFU, or cais/wmdp); anything else is MUSE. WMDP loads as a MuseCorpus (its corpora under "raw"), so
it trains and relearns as MUSE does.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal, Protocol

from llm_unlearn.data.collate import chunk_texts
from llm_unlearn.data.corpora import MuseCorpus, load_muse
from llm_unlearn.data.tofu import TofuCorpus, is_tofu_source, load_tofu, qa_texts
from llm_unlearn.data.tofu import training_windows as qa_windows
from llm_unlearn.data.wmdp import is_wmdp_source, load_wmdp

Benchmark = Literal["muse", "tofu", "wmdp"]


class Splits(Protocol):
    """Which MUSE raw splits are the forget and retain sets: the recipe's data section is one (typed
    here, not imported: the recipe validates with this module, so data stays below it)."""

    @property
    def forget_split(self) -> str: ...

    @property
    def retain_split(self) -> str: ...


def detect_benchmark(source: str, benchmark: str = "auto") -> Benchmark:
    """`benchmark` when it names one, else the layout `source` has."""
    if benchmark in ("muse", "tofu", "wmdp"):
        return benchmark  # type: ignore[return-value]
    if is_wmdp_source(source):
        return "wmdp"
    return "tofu" if is_tofu_source(source) else "muse"


def load_benchmark(
    source: str,
    needs: Mapping[str, Iterable[str]],
    benchmark: str = "auto",
    forget_split: str = "forget10",
    template: str = "plain",
) -> MuseCorpus | TofuCorpus:
    """The corpus the metrics read: `load_muse(source, needs)`, or for TOFU `load_tofu` with the
    run's forget split (which the roles forget/retain/holdout resolve against) and chat template, or
    `load_wmdp(source, needs)`."""
    kind = detect_benchmark(source, benchmark)
    if kind == "muse":
        return load_muse(source, needs)
    if kind == "wmdp":
        return load_wmdp(source, needs)
    return load_tofu(source, needs, forget_split, template)


def training_texts(data: Splits, corpus: MuseCorpus | TofuCorpus, role: str) -> list[str]:
    """The whole texts of the forget or retain set (`role`), for relearning slices and calibration:
    MUSE's raw passages of data.forget_split / retain_split (WMDP's corpora), or TOFU's question-answer
    pairs in the run's chat template."""
    if isinstance(corpus, TofuCorpus):
        return qa_texts(corpus, role)
    return corpus.get("raw", data.forget_split if role == "forget" else data.retain_split)


def training_windows(
    data: Splits, corpus: MuseCorpus | TofuCorpus, role: str, tokenizer: Any, length: int
) -> list[list[int]]:
    """The forget or retain set as training windows: MUSE's passages cut into `length`-token windows
    (the loss on every token), or TOFU's QA pairs with the loss on the answer only."""
    if isinstance(corpus, TofuCorpus):
        return qa_windows(corpus, role, tokenizer, max_length=length)
    return chunk_texts(training_texts(data, corpus, role), tokenizer, length)
