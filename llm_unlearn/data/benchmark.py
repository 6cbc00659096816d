"""One entry point for every benchmark layout: MUSE (corpora.py) or TOFU (tofu.py).

The recipe's `data.benchmark` says which, or "auto" detects it from the source (the embedded
demo_tofu, a folder of TOFU config files, a Hub id naming TOFU); anything else is MUSE.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Literal

from llm_unlearn.data.corpora import MuseCorpus, load_muse
from llm_unlearn.data.tofu import TofuCorpus, is_tofu_source, load_tofu

Benchmark = Literal["muse", "tofu"]


def detect_benchmark(source: str, benchmark: str = "auto") -> Benchmark:
    """`benchmark` when it names one, else the layout `source` has."""
    if benchmark in ("muse", "tofu"):
        return benchmark  # type: ignore[return-value]
    return "tofu" if is_tofu_source(source) else "muse"


def load_benchmark(
    source: str,
    needs: Mapping[str, Iterable[str]],
    benchmark: str = "auto",
    forget_split: str = "forget10",
    template: str = "plain",
) -> MuseCorpus | TofuCorpus:
    """The corpus the metrics read: `load_muse(source, needs)`, or for TOFU `load_tofu` with the
    run's forget split (which the roles forget/retain/holdout resolve against) and chat template."""
    if detect_benchmark(source, benchmark) == "muse":
        return load_muse(source, needs)
    return load_tofu(source, needs, forget_split, template)
