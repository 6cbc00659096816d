"""llm-unlearn: unlearn data from Hugging Face causal LMs and audit whether it survives quantization.

The public API is imported on first use (PEP 562), so `llm-unlearn --help` and `check` do not pay
for importing torch, transformers and the quantization backends.
"""

import importlib
import logging
from typing import Any

# bitsandbytes' CPU backend (on CPUs with AVX512-BF16) tries to fetch a kernel from the Hub on
# import, through the `kernels` package that transformers >= 5.25 installs, and both warn when it
# cannot (always, offline); bitsandbytes then uses its own CPU kernel, so the lines are noise on
# every command, and they broke the CLI's one-line errors.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
logging.getLogger("kernels").setLevel(logging.ERROR)

_EXPORTS = {
    "write_report": "llm_unlearn.audit.write",
    "MuseCorpus": "llm_unlearn.data.corpora",
    "load_muse": "llm_unlearn.data.corpora",
    "METHODS": "llm_unlearn.methods",
    "METRICS": "llm_unlearn.metrics",
    "EvalContext": "llm_unlearn.metrics",
    "evaluate": "llm_unlearn.metrics",
    "run": "llm_unlearn.pipeline",
    "get_quantizer": "llm_unlearn.quant",
    "Recipe": "llm_unlearn.recipe",
    "load_recipe": "llm_unlearn.recipe",
    "UnlearningConfig": "llm_unlearn.unlearning_config",
    "UnlearningTrainer": "llm_unlearn.trainer",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'llm_unlearn' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
