"""Post-hoc quantizers, found by name through one registry: `get_quantizer("rtn-w4-g128")`.

The backends (llm-compressor for GPTQ/AWQ, bitsandbytes, llama-cpp-python for GGUF, hqq) are
imported only when a quantizer runs, so every name is known, and validated in recipes, without them installed.
"""

from llm_unlearn.quant.registry import (
    QUANTIZER_FAMILIES,
    Quantizer,
    WeightCodes,
    family,
    get_quantizer,
    register_quantizer,
)

# importing a module registers its quantizers
from llm_unlearn.quant import bnb, calibrated, cast, fp8, gguf, hqq, prune, rtn  # noqa: E402,F401  isort: skip

__all__ = ["QUANTIZER_FAMILIES", "Quantizer", "WeightCodes", "family", "get_quantizer", "register_quantizer"]
