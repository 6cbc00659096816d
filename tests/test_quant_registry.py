"""Quantizer names: a calibrated quantizer's `@source` suffix, its refusals, and the route it records."""

from __future__ import annotations

import pytest
from helpers import with_

from llm_unlearn.columns import column_kind, is_format, route
from llm_unlearn.errors import UserError
from llm_unlearn.quant import family, get_quantizer
from llm_unlearn.quant.calibrated import CalibratedQuantizer
from llm_unlearn.quant.calibration import GENERIC_TEXT, build_calibration
from llm_unlearn.recipe import RecipeError, validate_recipe
from llm_unlearn.registry import UnknownNameError


@pytest.mark.parametrize("base", ["gptq-w4-g128", "gptq-w2-g32", "awq-w4-g64"])
@pytest.mark.parametrize("source", ["generic", "retain", "forget"])
def test_a_calibrated_name_carries_its_source(base: str, source: str) -> None:
    plain, named = get_quantizer(base), get_quantizer(f"{base}@{source}")
    assert (named.name, named.calibration_source, family(named.name)) == (
        f"{base}@{source}",
        source,
        family(base),
    )
    assert (named.bits, named.group_size, named.algorithm) == (plain.bits, plain.group_size, plain.algorithm)
    assert (plain.name, plain.calibration_source) == (base, None)  # the deployer's column, unchanged


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("rtn-w4-g32@forget", "rtn-w4-g32 reads no calibration text"),
        ("fp@retain", "fp reads no calibration text"),
        ("gptq-w4-g128@holdout", "@holdout is not a calibration source; use @generic or @retain or @forget"),
        ("gptq-w4-g128@", "@ is not a calibration source"),
        ("gptq-w5-g128@forget", "malformed GPTQ quantizer name 'gptq-w5-g128'"),
    ],
)
def test_a_source_a_quantizer_cannot_take_is_refused_in_one_line(name: str, says: str) -> None:
    with pytest.raises(UserError, match=says) as err:
        get_quantizer(name)
    assert "\n" not in str(err.value)


def test_an_unknown_family_with_a_source_is_unknown() -> None:
    with pytest.raises(UnknownNameError, match="unknown quantizer 'nope@forget'"):
        get_quantizer("nope@forget")


def _recorded(name: str, source: str, tok) -> dict:
    """A calibrated column's results config as `CalibratedQuantizer.config` writes it (without
    llm-compressor, whose version it names): its method and its calibration's record."""
    quantizer = get_quantizer(name)
    calibration = build_calibration([GENERIC_TEXT.read_text()], tok, source, samples=2, seq_len=16, seed=0)
    return {"name": name, "method": quantizer.algorithm, "calibration": calibration.record()}


@pytest.mark.parametrize(
    ("name", "source", "expected"),
    [
        ("gptq-w4-g128@forget", "forget", "attack"),
        ("awq-w4-g128@forget", "forget", "attack"),
        ("gptq-w4-g128@retain", "retain", "shipped"),
        ("gptq-w4-g128", "generic", "shipped"),
        ("gptq-w4-g128", "forget", "attack"),  # the section's allow_forget: the recorded text decides
    ],
)
def test_the_recorded_calibration_decides_the_route(name: str, source: str, expected: str, tok) -> None:
    config = _recorded(name, source, tok)
    assert column_kind(config) is CalibratedQuantizer
    assert (route(config), is_format(config)) == (expected, True)


def test_old_lines_keep_their_route() -> None:
    # a results line recorded before the suffix existed, and an uncalibrated one: still shipped formats
    assert route({"name": "gptq-w4-g128", "method": "gptq", "calibration": None}) == "shipped"
    rtn = get_quantizer("rtn-w4-g32").config()
    assert column_kind(rtn) is None and route(rtn) == "shipped"


def test_a_recipe_takes_forget_columns_without_allow_forget() -> None:
    recipe = validate_recipe(with_(quantize=["gptq-w4-g128", "gptq-w4-g128@forget", "awq-w4-g128@retain"]))
    assert recipe.quantize == ("fp", "gptq-w4-g128", "gptq-w4-g128@forget", "awq-w4-g128@retain")
    assert recipe.calibration.source == "generic" and not recipe.calibration.allow_forget


def test_a_recipe_refuses_a_source_on_an_uncalibrated_quantizer() -> None:
    with pytest.raises(RecipeError, match="quantize.*rtn-w4-g32 reads no calibration text"):
        validate_recipe(with_(quantize=["rtn-w4-g32@forget"]))
