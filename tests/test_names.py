"""`llm_unlearn/names.py`: the registries' names answered without torch, held to the registries.

`names.json` is written from the registries by running this file (`python tests/test_names.py`);
`test_snapshot_is_the_registries` fails whenever a registration changes without it.
"""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path

import pytest

from llm_unlearn.columns import COLUMN_FAMILIES, get_column
from llm_unlearn.errors import UserError
from llm_unlearn.methods import METHODS
from llm_unlearn.metrics import METRICS, reference_flags
from llm_unlearn.names import check_name, pattern_regex, snapshot
from llm_unlearn.quant import QUANTIZER_FAMILIES, get_quantizer
from llm_unlearn.registry import UnknownNameError

SNAPSHOT = Path(__file__).parents[1] / "llm_unlearn" / "names.json"
#: the words column names are made of, and some they are not, for names spelled every which way
WORDS = (
    "w2", "w3", "w4", "w5", "w8", "g32", "g64", "g100", "g128", "asym", "min", "nf4", "fp4", "int8",
    "fp16", "bf16", "fp32", "e4m3", "mag", "wanda", "sparsegpt", "24", "50", "0", "100", "forget",
    "3", "s1", "q4_0", "q8_0", "",
)  # fmt: skip
SUFFIXES = ("", "@forget", "@generic", "@x")


def registry_snapshot() -> dict:
    """What `names.json` must hold: each registry's names, column families with their patterns, the
    metrics' reference flags with their help."""
    return {
        "column": {f: getattr(COLUMN_FAMILIES.get(f), "pattern", "") for f in COLUMN_FAMILIES},
        "quantizer": {f: getattr(QUANTIZER_FAMILIES.get(f), "pattern", "") for f in QUANTIZER_FAMILIES},
        "metric": METRICS.names(),
        "method": METHODS.names(),
        "reference_flag": {flag: r.flag.help for flag, r in reference_flags().items()},
    }


def test_snapshot_is_the_registries() -> None:
    assert snapshot() == registry_snapshot(), "names.json is stale: run `python tests/test_names.py`"


def _refuses(make, name: str) -> bool:
    try:
        make(name)
    except (UserError, UnknownNameError):
        return True
    return False


@pytest.mark.parametrize(("kind", "make"), [("column", get_column), ("quantizer", get_quantizer)])
def test_patterns_never_refuse_what_the_registry_accepts(kind: str, make) -> None:
    """Every family's words in every order (two at most) with every suffix: a name the registry makes
    passes the light check, and one the light check refuses the registry refuses too."""
    names = [
        "-".join(filter(None, (family, *words))) + suffix
        for family in [*snapshot()[kind], "rtm", "quant"]
        for words in itertools.product(WORDS, repeat=2)
        for suffix in SUFFIXES
    ]
    accepted = [n for n in names if not _refuses(make, n)]
    assert len(accepted) > 100  # the sample reaches every family's good names, not only bad ones
    assert [n for n in accepted if _refuses(lambda n: check_name(kind, n), n)] == []


@pytest.mark.parametrize(
    ("kind", "name", "message"),
    [
        ("column", "rtn-w5", "malformed name 'rtn-w5'; expected rtn-w{2,3,4,8}[-g{32,64,128}]"),
        ("column", "prune-mag-100", "malformed name 'prune-mag-100'; expected prune-mag-{1..99}, "),
        ("column", "cast-fp16-fp32", "malformed name 'cast-fp16-fp32'; expected cast-{fp16,bf16}"),
        ("column", "rtm-w4", "unknown quantizer 'rtm-w4'; known: awq-w4-g{32,64,128}[@generic|"),
        ("quantizer", "incontext-forget-3", "unknown quantizer 'incontext-forget-3'; known: awq-"),
        ("metric", "verbmemm", "unknown metric 'verbmemm'; known: exact_memorization, "),
        ("method", "npoo", "unknown method 'npoo'; known: "),
    ],
)
def test_refusals(kind: str, name: str, message: str) -> None:
    with pytest.raises(UserError) as refused:
        check_name(kind, name)
    assert str(refused.value).startswith(message)


def test_unknown_names_read_as_their_registries_say() -> None:
    """The light refusal of an unknown name is the registry's own message, word for word."""
    cases = [
        ("column", get_column, "rtm-w4"),
        ("quantizer", get_quantizer, "x"),
        ("metric", METRICS.get, "verbmemm"),
        ("method", METHODS.get, "npoo"),
    ]
    for kind, registry_get, name in cases:
        with pytest.raises(UnknownNameError) as theirs:
            registry_get(name)
        with pytest.raises(UserError, match="unknown") as ours:
            check_name(kind, name)
        assert str(ours.value) == str(theirs.value)


@pytest.mark.parametrize(
    ("pattern", "spelled", "not_spelled"),
    [
        ("rtn-w{2,3,4,8}[-g{32,64,128}][-asym|-min]", ["rtn-w4", "rtn-w8-g32-min"], ["rtn-w4-asym-min"]),
        ("cast-{fp16,bf16}[-{fp16,bf16}...]", ["cast-bf16", "cast-fp16-bf16-fp16"], ["cast-", "cast-fp16-"]),
        ("prune-mag-{1..99}, prune-24", ["prune-mag-1", "prune-mag-99", "prune-24"], ["prune-mag-0"]),
        ("incontext-forget-{k}[-s{seed}]", ["incontext-forget-12-s0"], ["incontext-forget-1-s"]),
    ],
)
def test_pattern_regex(pattern: str, spelled: list[str], not_spelled: list[str]) -> None:
    regex = pattern_regex(pattern)
    assert [n for n in spelled if not regex.fullmatch(n)] == []
    assert [n for n in not_spelled if regex.fullmatch(n)] == []


if __name__ == "__main__":  # rewrite names.json from the registries
    SNAPSHOT.write_text(json.dumps(registry_snapshot(), indent=1) + "\n", encoding="utf-8")
    sys.exit(0)


def test_a_name_registered_at_run_time_is_accepted(monkeypatch) -> None:
    # a user's own metric, method or column family, registered from Python: not in names.json, but
    # its registry is imported, so the snapshot does not refuse what the registry would accept
    for kind, registry, name in (
        ("metric", METRICS, "my_metric"),
        ("method", METHODS, "my_method"),
        ("column", COLUMN_FAMILIES, "mine"),
    ):
        with pytest.raises(UserError):
            check_name(kind, name if kind != "column" else "mine-w4")
        monkeypatch.setitem(registry._entries, name, object())
        check_name(kind, name if kind != "column" else "mine-w4")
