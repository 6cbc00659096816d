"""The column base: each recorded configuration finds its kind, its route and whether it is a format."""

import pytest

from llm_unlearn.audit.relearn import Relearning
from llm_unlearn.columns import ROUTES, column_kind, get_column, is_format, route
from llm_unlearn.errors import UserError
from llm_unlearn.metrics import METRICS
from llm_unlearn.quant import get_quantizer
from llm_unlearn.registry import UnknownNameError


def _relearning() -> Relearning:
    return Relearning(
        name="relearn-forget", split="forget", texts=("a", "b"), steps=2, learning_rate=1e-3,
        batch_size=1, seed=0, max_length=16,
    )  # fmt: skip


def test_a_quantizer_is_a_shipped_format_and_relearning_an_attack() -> None:
    rtn, relearned = get_quantizer("rtn-w4-g32").config(), _relearning().config()
    assert (
        column_kind(rtn) is None and column_kind(relearned) is Relearning
    )  # a quantizer claims what no kind does
    assert (route(rtn), is_format(rtn)) == ("shipped", True)
    assert (route(relearned), is_format(relearned)) == ("attack", False)
    assert set(ROUTES) == {"shipped", "attack"}


def test_a_configuration_no_kind_claims_is_shipped() -> None:
    assert route({"name": "mystery", "method": "nobody-knows"}) == "shipped"


def test_every_quantizer_name_is_a_column_name_and_unknown_names_read_as_before() -> None:
    for name in ("fp", "rtn-w4-g32", "cast-bf16"):
        assert get_column(name).config() == get_quantizer(name).config()
    known = r"^unknown quantizer 'xyz-w4'; known: .*incontext-forget-\{k\}"
    with pytest.raises(UnknownNameError, match=known):
        get_column("xyz-w4")
    with pytest.raises(UserError, match="malformed"):
        get_column("rtn-w5")


@pytest.mark.parametrize(
    ("column", "cells"),
    [
        (get_column("fp"), {"verbmem", "knowmem_forget", "knowmem_retain", "privleak"}),
        (get_column("cast-bf16"), {"verbmem", "knowmem_forget", "knowmem_retain", "privleak"}),
        (get_column("prune-mag-50"), {"verbmem", "knowmem_forget", "privleak"}),
        (_relearning(), {"verbmem", "knowmem_forget", "privleak"}),
        (get_column("incontext-forget-3"), {"knowmem_forget"}),
    ],
)
def test_a_shipped_column_has_every_cell_and_an_attack_the_forget_ones(column, cells) -> None:
    # under attack the gate asks only whether the forget set comes back: no retain/utility cells
    names = ("verbmem", "knowmem_forget", "knowmem_retain", "privleak")
    assert {m for m in names if column.evaluates(METRICS.get(m))} == cells
