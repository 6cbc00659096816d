"""The registries' names, answerable without importing them: a recipe's or a command line's
misspelled quantizer, column, metric or method is refused before torch is imported, and
`llm-unlearn evaluate --help` lists the metrics' reference flags without importing them.

The registries (`columns.COLUMN_FAMILIES`, `quant.QUANTIZER_FAMILIES`, `metrics.METRICS`,
`methods.METHODS`) stay the one source of truth: `names.json` is their snapshot, each column
family with the naming pattern it shows users and each reference flag with its help, written from
them by `tests/test_names.py`, which fails whenever the two drift. A name this module accepts may
still be refused by its registry (a pattern says which settings a name may spell, not every rule
its factory checks), never the reverse: the test holds each pattern to its factory. A name
registered at run time (a user's own metric or method, from Python) is not in the snapshot: a
registry this process has already imported answers for it, so the Python API keeps the registries
open while the command line stays torch-free.
"""

from __future__ import annotations

import json
import re
import sys
from functools import cache
from importlib.resources import files
from typing import Any, Literal

from llm_unlearn.errors import UserError

Kind = Literal["column", "quantizer", "metric", "method"]
#: each kind's registry (module, attribute), looked up only where already imported: never imported here
_REGISTRIES = {
    "column": ("llm_unlearn.columns", "COLUMN_FAMILIES"),
    "quantizer": ("llm_unlearn.quant.registry", "QUANTIZER_FAMILIES"),
    "metric": ("llm_unlearn.metrics.registry", "METRICS"),
    "method": ("llm_unlearn.methods", "METHODS"),
}
#: a pattern's parts: `{a,b}` one of, `{1..99}` a whole number in range, `{k}` a whole number,
#: `[...]` optional, `|` or (inside `[...]`), `...` the optional part repeated
_TOKEN = re.compile(r"\{([^}]*)\}|\[|\]|\||\.\.\.")


def column_family(name: str) -> str:
    """The family of a column name, its registry key: `rtn-w4-g128-asym` -> `rtn`,
    `gptq-w4-g128@forget` -> `gptq` (a suffix after `@` is the column's own variant)."""
    return name.split("@", 1)[0].split("-", 1)[0]


@cache
def snapshot() -> dict[str, Any]:
    """`names.json`: {"column"|"quantizer": {family: pattern}, "metric"|"method": [name, ...],
    "reference_flag": {flag: help}}."""
    return json.loads((files("llm_unlearn") / "names.json").read_text(encoding="utf-8"))


def check_name(kind: Kind, name: str) -> None:
    """Raise the one-line UserError the `kind` registry would raise for a name it does not know, or
    a column name its family's pattern does not spell (`rtn-w5`)."""
    known = snapshot()[kind]
    if isinstance(known, list):
        if name not in known and not _registered_at_run_time(kind, name):
            raise UserError(f"unknown {kind} {name!r}; known: {', '.join(known)}")
        return
    family = column_family(name)
    if family not in known and _registered_at_run_time(kind, family):
        return  # a family the snapshot cannot know: its own factory checks the name
    if family not in known:  # the message `get_column` and `get_quantizer` give: quantize: lists both
        raise UserError(f"unknown quantizer {name!r}; known: {', '.join(p or f for f, p in known.items())}")
    # the part before `@` only: which quantizers take an `@source` the registry says (Wanda's and
    # SparseGPT's patterns do not show it), and which sources
    if known[family] and not pattern_regex(known[family]).fullmatch(name.partition("@")[0]):
        raise UserError(f"malformed name {name!r}; expected {known[family]}")


def _registered_at_run_time(kind: Kind, key: str) -> bool:
    """Whether `key` is in the `kind` registry, if this process has imported it already."""
    module, attribute = _REGISTRIES[kind]
    registry = getattr(sys.modules.get(module), attribute, None)
    return registry is not None and key in registry


def reference_flag_help() -> dict[str, str]:
    """`llm-unlearn evaluate`'s retrain-reference flags (`metrics.reference_flags`) with their help:
    what its parser shows, and accepts as text, before the metrics (and torch) are imported."""
    return snapshot()["reference_flag"]


@cache
def pattern_regex(pattern: str) -> re.Pattern[str]:
    """The names a naming pattern spells, e.g. `rtn-w{2,3,4,8}[-g{32,64,128}][-asym|-min]`; a
    pattern may list several, `prune-mag-{1..99}, prune-24`."""
    return re.compile("|".join(f"(?:{_regex(part)})" for part in pattern.split(", ")))


def _regex(pattern: str) -> str:
    out, start, repeated = [], 0, False
    for token in _TOKEN.finditer(pattern):
        out.append(re.escape(pattern[start : token.start()]))
        start = token.end()
        if token[1] is not None:
            out.append(_choice(token[1]))
        elif token[0] == "...":
            repeated = True
        elif token[0] == "[":
            out.append("(?:")
        elif token[0] == "]":
            out.append(")*" if repeated else ")?")
            repeated = False
        else:
            out.append("|")
    return "".join(out) + re.escape(pattern[start:])


def _choice(inside: str) -> str:
    """`a,b` -> one of them; `1..99` -> a whole number in range; a placeholder `k` -> any."""
    low, sep, high = inside.partition("..")
    if sep:
        return "(?:" + "|".join(str(n) for n in range(int(high), int(low) - 1, -1)) + ")"
    if "," in inside:
        return "(?:" + "|".join(re.escape(choice) for choice in inside.split(",")) + ")"
    return r"\d+"
