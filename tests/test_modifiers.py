"""The modifier registry: each registered modifier is one optional section of a method entry, and
recipe, training config and `.method.json` take what they know of it from the registration."""

from __future__ import annotations

from pathlib import Path

import pytest

from llm_unlearn.methods import METHODS
from llm_unlearn.modifiers import MODIFIERS, modifiers
from llm_unlearn.recipe import MethodSection, validate_recipe
from llm_unlearn.trainer import training_config
from llm_unlearn.unlearning_config import UnlearningConfig

BASE = {
    "name": "tiny",
    "model": {"target": "demo"},
    "train": {"max_steps": 1},
    "output": {"dir": "/tmp/unused"},
}


def test_every_modifier_is_an_optional_section_of_a_method_entry() -> None:
    assert [m.name for m in modifiers()] == ["sure", "quail", "projection", "dual"]  # run-name order
    for modifier in modifiers():
        field = MethodSection.model_fields[modifier.name]
        assert field.default is None and field.description == modifier.description
    section = MethodSection.model_validate({"name": "ga_gdr", "sure": {}, "quail": {"margin": 0.1}})
    assert isinstance(section.sure, MODIFIERS.get("sure").section)
    assert [m.name for m, _ in section.active_modifiers()] == ["sure", "quail"]
    # OEU's projection is on by method, with its section's defaults when none is given
    assert [m.name for m, s in MethodSection(name="oeu").active_modifiers()] == ["projection"]


def test_run_names_take_each_modifiers_suffix_in_registry_order() -> None:
    section = MethodSection.model_validate({"name": "ga_gdr", "quail": {"margin": 0.1}, "sure": {}})
    assert section.run_name == "ga_gdr+sure+quail"
    assert (
        MethodSection.model_validate({"name": "oeu", "projection": {"scope": "global"}}).run_name
        == "oeu+global"
    )
    assert MethodSection.model_validate({"name": "oeu", "projection": {"scope": "layer"}}).run_name == "oeu"


def test_each_active_modifier_sets_its_training_config() -> None:
    recipe = validate_recipe(
        {**BASE, "method": [{"name": "npo_gdr", "sure": {"percentile": 70}, "quail": {}}, {"name": "oeu"}]}
    )
    both, oeu = recipe.method
    with pytest.raises(ValueError, match="QUAIL margin 'auto' must be resolved"):
        training_config(recipe, both, Path("/tmp/unused"))
    config = training_config(recipe, both, Path("/tmp/unused"), hinge_margin=0.02)
    assert config.modifiers == {
        "sure": {"percentile": 70},
        "quail": {"weight": 1.0, "margin": 0.02, "distance": "mean_abs"},
    }
    config = training_config(recipe, oeu, Path("/tmp/unused"))
    assert config.modifiers == {"projection": {"scope": "layer", "alpha": 1.0}}


def test_records_name_every_modifier_even_when_off() -> None:
    """`.method.json` holds every modifier's keys (None when off), so a card reads any run's file."""
    recipe = validate_recipe({**BASE, "method": [{"name": "ga_gdr"}]})
    args = training_config(recipe, recipe.method[0], Path("/tmp/unused"))
    trainer = type("T", (), {"saliency": None})()
    record = {}
    for modifier in modifiers():
        record.update(modifier.record(getattr(recipe.method[0], modifier.name), args, trainer))
    assert record == {
        "sure": None,
        "hinge_margin": None,
        "projection": None,
        "projection_alpha": None,
        **dict.fromkeys(("dual_epsilon", "dual_step_size", "dual_lambda")),
    }
    assert all(m.facts({"terms": {}, **record}) == [] for m in modifiers())
    assert all(m.hyper_parameters(record) == {} for m in modifiers())
    assert METHODS.get("ga_gdr").projection is None


def test_the_trainer_runs_the_hooks_of_the_modifiers_a_method_turns_on() -> None:
    """`UnlearningTrainer` decides from the training config which modifiers' hooks run: those the
    method entry turned on, but QUAIL, whose hinge is a loss term and has no trainer hook."""
    recipe = validate_recipe(
        {
            **BASE,
            "method": [
                {"name": "npo_gdr", "sure": {}, "quail": {"margin": 0.1}},
                {"name": "oeu", "projection": {"scope": "global"}},
                {"name": "ga_gdr"},
            ],
        }
    )
    enabled = [
        [m.name for m in modifiers() if m.enabled(training_config(recipe, method, Path("/tmp/unused")))]
        for method in recipe.method
    ]
    assert enabled == [["sure"], ["projection"], []]


def test_the_training_config_validates_each_modifiers_settings_through_the_modifier(tmp_path) -> None:
    """`UnlearningConfig.modifiers` holds plain dicts; each modifier's `training` model checks its own."""
    out = str(tmp_path)
    with pytest.raises(ValueError, match=r"names no registered modifier: \['frob'\]"):
        UnlearningConfig(output_dir=out, modifiers={"frob": {}})
    with pytest.raises(ValueError, match=r"modifiers\.sure\.percentile: Input should be less than or equal"):
        UnlearningConfig(output_dir=out, modifiers={"sure": {"percentile": 101}})
    with pytest.raises(ValueError, match=r"modifiers\.quail\.distance"):
        UnlearningConfig(output_dir=out, modifiers={"quail": {"weight": 1, "margin": 0, "distance": "l3"}})
    with pytest.raises(ValueError, match="projection needs a retain term"):
        UnlearningConfig(output_dir=out, forget_loss="entropy", modifiers={"projection": {"scope": "layer"}})


def test_quails_hinge_sits_between_the_forget_and_the_retain_term(tmp_path) -> None:
    quail = {"weight": 0.5, "margin": 2.0, "distance": "l2"}
    config = UnlearningConfig(output_dir=str(tmp_path), retain_loss="gdr", modifiers={"quail": quail})
    assert config.weighted_terms() == [("ga", 1.0), ("hinge", 0.5), ("gdr", 1.0)]
    assert config.resolved_params()["hinge"].model_dump() == {"margin": 2.0, "distance": "l2"}
    off = UnlearningConfig(output_dir=str(tmp_path), modifiers={"quail": {**quail, "weight": 0.0}})
    assert off.weighted_terms() == [("ga", 1.0)]
