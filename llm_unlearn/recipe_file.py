"""A recipe file read into a mapping, with `--set` overrides: the checks on the path, the YAML, the
overrides and the registries' names (`names.py`), which need no registry.

Kept apart from `recipe.py` (which validates the mapping against the method, metric, quantizer and
column registries, and so imports torch and transformers) so that a missing file, bad YAML, a
malformed `--set` or a misspelled method, quantizer or metric is refused in a fraction of a second,
before torch is imported.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from llm_unlearn.errors import UserError
from llm_unlearn.names import check_name

#: what an unlearning recipe looks like, for the refusal of a file that is no mapping
RECIPE_SHAPE = "a recipe is a YAML mapping with sections model, method (or models), output, ..."
CNN_RECIPE_SHAPE = "a CNN recipe is a YAML mapping with sections data, model, methods, ..."


class RecipeError(UserError):
    """A user-fixable recipe problem, one line: `where: field: what is wrong; what is allowed`."""


def quote(value: Any, limit: int = 200) -> str:
    """`value` as a message quotes it: repr, cut to `limit` characters (YAML aliases can make a
    300-byte recipe hold a value whose repr is megabytes)."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `a.b=value` overrides (value parsed as YAML) to the raw recipe mapping."""
    for item in overrides:
        path, sep, raw = item.partition("=")
        if not sep or not path:
            raise RecipeError(f"--set {item!r}: expected KEY.PATH=VALUE, e.g. train.learning_rate=2e-4")
        node: Any = data
        *parents, leaf = path.split(".")
        for depth, key in enumerate(parents):
            if isinstance(node, list) and key.isdigit() and int(key) < len(node):
                node = node[int(key)]
                continue
            if not isinstance(node, dict):
                raise RecipeError(f"--set {path}: {'.'.join(parents[:depth]) or 'recipe'} is not a section")
            node = node.setdefault(key, {})
        try:
            value = yaml.load(raw, Loader=_StrictLoader)
        except yaml.YAMLError as err:
            raise RecipeError(
                f"--set {path}: value {quote(raw)} is not valid YAML: {_problem(err)}"
            ) from None
        if isinstance(node, list) and leaf.isdigit() and int(leaf) < len(node):
            node[int(leaf)] = value
        elif isinstance(node, dict):
            node[leaf] = value
        else:
            raise RecipeError(f"--set {path}: {'.'.join(parents) or 'recipe'} is not a section")
    return data


def read_recipe_file(path: str | Path, overrides: list[str], shape: str) -> dict[str, Any]:
    """A recipe file as a mapping, with `--set` overrides applied and `name` defaulting to the file
    stem; `shape` tells a user what a recipe of this kind looks like."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"{path}: recipe file not found")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_StrictLoader)
    except UnicodeDecodeError as err:
        raise RecipeError(f"{path}: not UTF-8 text (byte {err.start}); save the recipe as UTF-8") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise RecipeError(f"{path}: not valid YAML{where}: {_problem(err)}") from None
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: {shape}")
    data = apply_overrides(data, list(overrides))
    data.setdefault("name", path.stem)
    return data


def read_unlearning_recipe(path: str | Path, overrides: list[str] = ()) -> dict[str, Any]:
    """An unlearning recipe file as a mapping (`read_recipe_file`), refusing a CNN-track one."""
    data = read_recipe_file(path, overrides, RECIPE_SHAPE)
    if "methods" in data and "method" not in data:
        raise RecipeError(
            f"{path}: a CNN-track recipe (it has `methods:`); run it with `llm-unlearn cnn {path}`"
        )
    check_names(data, str(path))
    return data


def check_names(data: dict[str, Any], where: str) -> None:
    """Refuse an unknown method or metric, or a column name no family spells, in `data` (an
    unlearning or audit recipe), as its validation would; a value of the wrong shape is left to it."""
    methods = data.get("method")
    methods = [methods] if isinstance(methods, dict) else methods if isinstance(methods, list) else []
    named = [
        (f"method.{i}.name", "method", m.get("name")) for i, m in enumerate(methods) if isinstance(m, dict)
    ]
    for field, kind in (("quantize", "column"), ("evaluate", "metric")):
        values = data.get(field)
        named += [(field, kind, name) for name in values] if isinstance(values, list) else []
    for field, kind, name in named:
        if isinstance(name, str):
            try:
                check_name(kind, name)
            except UserError as err:
                raise RecipeError(f"{where}: {field}: {err}") from None


class _StrictLoader(yaml.SafeLoader):
    """yaml's safe loader that refuses a key given twice in one mapping (yaml keeps the last one
    silently, so a recipe could run with a setting its author thought was overridden)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                line = key_node.start_mark.line + 1
                raise yaml.constructor.ConstructorError(None, None, f"key {key!r} given twice (line {line})")
            seen.add(key)
        return super().construct_mapping(node, deep)


def _problem(err: yaml.YAMLError) -> str:
    return str(getattr(err, "problem", None) or err).splitlines()[0][:200]
