"""The CNN track: LSQ-quantized ResNet-18 / MobileNetV2, Retrain/FT/GA/RL/SalUn/Q-MUL/OEU, FA/RA/TA/MIA/AG."""

from llm_unlearn.cnn.methods import METHODS
from llm_unlearn.cnn.metrics import average_gap, evaluate, mia_efficacy
from llm_unlearn.cnn.models import ARCHS, build_model
from llm_unlearn.cnn.qat import export_codes, quantize_model
from llm_unlearn.cnn.recipe import CNNRecipe, load_cnn_recipe
from llm_unlearn.cnn.run import run_cnn

__all__ = [
    "ARCHS",
    "METHODS",
    "CNNRecipe",
    "average_gap",
    "build_model",
    "evaluate",
    "export_codes",
    "load_cnn_recipe",
    "mia_efficacy",
    "quantize_model",
    "run_cnn",
]
