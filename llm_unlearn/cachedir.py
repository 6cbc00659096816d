"""Where built models are cached (demo checkpoints, converted GGUF and pickle checkpoints, llama.cpp's
converter): one folder, below every stage that writes there (`models.py`, `quant/gguf.py`)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """Where built models are cached: $LLM_UNLEARN_CACHE or ~/.cache/llm_unlearn."""
    return Path(os.environ.get("LLM_UNLEARN_CACHE", Path.home() / ".cache" / "llm_unlearn"))
