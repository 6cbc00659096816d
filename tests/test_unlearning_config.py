"""unlearning_config.py: the training config refuses a term parameter out of range and parameters of a
term the run does not use."""

from __future__ import annotations

import pytest

from llm_unlearn.unlearning_config import UnlearningConfig


def test_config_rejects_a_bad_term_parameter(tmp_path) -> None:
    with pytest.raises(ValueError, match=r"term_params\.npo\.beta: Input should be greater than 0"):
        UnlearningConfig(output_dir=str(tmp_path), forget_loss="npo", term_params={"npo": {"beta": -1}})
    with pytest.raises(ValueError, match=r"names terms this run does not use: \['npo'\]"):
        UnlearningConfig(output_dir=str(tmp_path), forget_loss="ga", term_params={"npo": {}})
