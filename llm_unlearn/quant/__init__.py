"""Post-hoc quantizers, found by name through one registry: `get_quantizer("rtn-w4-g128")`."""

from llm_unlearn.quant.registry import QUANTIZER_FAMILIES, Quantizer, get_quantizer, register_quantizer

# importing a module registers its quantizers
from llm_unlearn.quant import rtn  # noqa: E402,F401  isort: skip

__all__ = ["QUANTIZER_FAMILIES", "Quantizer", "get_quantizer", "register_quantizer"]
