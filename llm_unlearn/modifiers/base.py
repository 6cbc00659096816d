"""What a modifier is, and its registry.

A modifier changes how any unlearning method trains without being a method itself (SURE, QUAIL,
OEU's projection): a recipe turns one on with its section in a method entry (`sure:`, `quail:`,
`projection:`). A registered modifier holds everything the rest of the package needs to know
about it, so recipe, trainer, pipeline and Hub card iterate over `MODIFIERS` and name none:

- `section`: its recipe section, a pydantic model with a description per field;
- `suffix`: what it adds to the run's default name (`ga_gdr+sure`);
- `check_method`, `check_recipe`: its refusals, raised as `ValueError` while the recipe is
  validated, before anything is built;
- `quantizers`: the quantizers it applies to the target before training (checked with the others);
- `prepare`: what it resolves from the target before training (QUAIL's margin `auto`);
- `training`, `settings`: its training settings (a pydantic model, `UnlearningConfig.modifiers[name]`
  holds them as a dict) and how its section and the resolved values fill them; `terms` are the
  loss terms they add (QUAIL's hinge) and `check_config` their refusals against the rest of the
  training config;
- `record`: what `.method.json` records of it after training;
- `facts`, `hyper_parameters`, `tags`: what the Hub card says of it, read back from `.method.json`;
- its trainer hooks, run by `UnlearningTrainer` for the modifiers a training config turns on
  (`enabled`): `check_trainer` (refusals that depend on the training arguments),
  `prepare_trainer` (once, before the optimizer exists: SURE's saliency pass) and
  `training_step` (a step of its own: OEU's projected update); `trainer_attributes` are the
  attributes every trainer carries for it, on or off (`trainer.saliency`).

The order of `modifiers()` (by `position`) is the order of the suffixes, records and card lines.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from llm_unlearn.methods import Method
from llm_unlearn.registry import Registry


class Section(BaseModel):
    """A modifier's recipe section: every field has a default, a range and a description."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Settings(BaseModel):
    """A modifier's training settings, what the trainer runs with (the recipe section's values with
    `auto`s resolved): every field has a range and a description."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Modifier:
    """One modifier. Subclasses set the class attributes and override the hooks they need;
    `register_modifier` adds one. `section` arguments are None where the recipe has no section."""

    name: ClassVar[str]
    #: order among the modifiers: run-name suffixes, `.method.json` and the card follow it
    position: ClassVar[int]
    section: ClassVar[type[Section]]
    #: its training settings, held by `UnlearningConfig.modifiers[name]` when the run uses it
    training: ClassVar[type[Settings]]
    #: the method entry's field description
    description: ClassVar[str]
    #: the run-name suffix, as the `label` field's description shows it
    suffix_label: ClassVar[str]
    #: attributes every `UnlearningTrainer` carries for this modifier, with their (immutable) value
    #: when it is off; `prepare_trainer` sets them when on, and records and reports read them
    trainer_attributes: ClassVar[dict[str, Any]] = {}

    def active(self, method: Method, section: Section | None) -> bool:
        """Whether this run uses the modifier: by default, when its section is given."""
        return section is not None

    def suffix(self, section: Section | None) -> str:
        """What the modifier adds to the method's name in the run's default name."""
        return self.suffix_label if section is not None else ""

    def check_method(self, method: Method, section: Section | None) -> None:
        """Refuse (ValueError) a section the method entry cannot take."""

    def check_recipe(self, recipe: Any, index: int, section: Section | None) -> None:
        """Refuse (ValueError, whole message) what the rest of the recipe rules out, for an active
        modifier of `recipe.method[index]`."""

    def quantizers(self, section: Section | None) -> list[tuple[str, str]]:
        """(field inside the section, quantizer name): the quantizers the run applies to the target
        for this modifier, checked against it before anything trains."""
        return []

    def prepare(self, section: Section | None, model: Any) -> dict[str, Any]:
        """Values resolved from the target model before training, for `settings`."""
        return {}

    def settings(self, method: Method, section: Section | None, resolved: dict[str, Any]) -> Settings:
        """Its training settings for an active modifier, from its section and the resolved values."""
        raise NotImplementedError

    def terms(self, settings: Settings) -> list[tuple[str, float, dict[str, Any]]]:
        """(term, weight, parameters): the loss terms these settings add to the method's, summed
        between the forget and the retain term."""
        return []

    def check_config(self, settings: Settings, retain_loss: str | None) -> None:
        """Refuse (ValueError) settings the rest of the training config cannot run with."""

    def of(self, args: Any) -> Settings | None:
        """Its validated training settings in a training config, None when the run does not use it."""
        values = args.modifiers.get(self.name)
        return None if values is None else self.training(**values)

    def record(self, section: Section | None, args: Any, trainer: Any) -> dict[str, Any]:
        """Its entries of `.method.json` (written for every modifier, active or not: None when off)."""
        return {}

    def facts(self, resolved: dict[str, Any]) -> list[tuple[str, str]]:
        """What the Hub card says of it, from `.method.json`."""
        return []

    def hyper_parameters(self, resolved: dict[str, Any]) -> dict[str, Any]:
        """Its entries of the card's hyper-parameters, from `.method.json`."""
        return {}

    def tags(self, section: Section | None) -> list[str]:
        """The card's tags for it."""
        return [self.name] if section is not None else []

    # --- trainer hooks: `UnlearningTrainer` runs them for the modifiers its config turns on --------

    def enabled(self, args: Any) -> bool:
        """Whether a training config (`UnlearningConfig`, which `settings` filled) runs this modifier."""
        return self.name in args.modifiers

    def check_trainer(self, args: Any, model: Any, distributed_type: str) -> None:
        """Refuse (UserError, one line) what the trainer cannot run with this modifier on: `args`, the
        model and accelerate's distributed type ('' before the accelerator exists)."""

    def prepare_trainer(self, trainer: Any, dataset: Any, pad_id: int) -> None:
        """Run once, when the trainer is built: after θ₀'s references, before the optimizer exists
        (parameters frozen here get no optimizer state)."""

    def training_step(self, trainer: Any, model: Any, inputs: dict[str, Any]) -> Any:
        """The training step's loss when this modifier takes the step over; None leaves it to the
        Trainer. At most one enabled modifier takes it over."""
        return None


MODIFIERS: Registry[Modifier] = Registry("modifier")


def register_modifier(name: str) -> Callable[[type], type]:
    """Class decorator: register one instance of the modifier under `name`."""
    return MODIFIERS.register_instance(name)


def modifiers() -> list[Modifier]:
    """Every registered modifier, in `position` order."""
    return sorted((MODIFIERS.get(n) for n in MODIFIERS.names()), key=lambda m: m.position)
