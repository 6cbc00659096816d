"""quant/calibration.py: calibration windows are seeded and recorded; a recipe's calibration source
refuses the forget set unless asked."""

from __future__ import annotations

import pytest
from helpers import recipe

from llm_unlearn.errors import UserError
from llm_unlearn.quant.calibration import build_calibration, calibration_texts, sample_windows
from llm_unlearn.recipe import RecipeError, validate_recipe


def test_calibration_windows_are_seeded_and_recorded(tok):
    ids = list(range(100))
    assert sample_windows(ids, 5, 10, seed=1) == sample_windows(ids, 5, 10, seed=1)
    assert sample_windows(ids, 5, 10, seed=1) != sample_windows(ids, 5, 10, seed=2)
    assert all(w == list(range(w[0], w[0] + 10)) for w in sample_windows(ids, 5, 10, seed=1))
    with pytest.raises(UserError, match="too few"):
        sample_windows(ids, 92, 10, seed=0)
    record = build_calibration(["abc " * 50], tok, "retain", 3, 16, 7).record()
    assert record | {"sha256": None} == {
        "source": "retain",
        "samples": 3,
        "seq_len": 16,
        "seed": 7,
        "sha256": None,
    }
    assert calibration_texts("forget", ["f"], ["r"]) == ["f"] and calibration_texts(
        "retain", ["f"], ["r"]
    ) == ["r"]


def test_forget_calibration_is_refused_unless_explicit(tmp_path):
    assert validate_recipe(recipe()).calibration.source == "generic"
    with pytest.raises(RecipeError, match="calibration: source 'forget'.*allow_forget: true"):
        validate_recipe(recipe(source="forget"))
    assert validate_recipe(recipe(source="forget", allow_forget=True)).calibration.source == "forget"
    with pytest.raises(RecipeError, match="not generic, retain, forget or a text file"):
        validate_recipe(recipe(source=str(tmp_path / "missing.txt")))
    text = tmp_path / "calib.txt"
    text.write_text("some text")
    assert validate_recipe(recipe(source=str(text))).calibration.source == str(text)
