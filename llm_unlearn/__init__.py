"""llm-unlearn: unlearn data from Hugging Face causal LMs and audit whether it survives quantization."""

from llm_unlearn.audit.report import write_report
from llm_unlearn.data.corpora import MuseCorpus, load_muse
from llm_unlearn.methods import METHODS
from llm_unlearn.metrics import METRICS, EvalContext, evaluate
from llm_unlearn.pipeline import run
from llm_unlearn.quant import get_quantizer
from llm_unlearn.recipe import Recipe, load_recipe
from llm_unlearn.trainer import UnlearningConfig, UnlearningTrainer

__all__ = [
    "METHODS",
    "METRICS",
    "EvalContext",
    "MuseCorpus",
    "Recipe",
    "UnlearningConfig",
    "UnlearningTrainer",
    "evaluate",
    "get_quantizer",
    "load_muse",
    "load_recipe",
    "run",
    "write_report",
]
