"""Loss terms, the unit of extension: one file per term, registered by name with `register_term`.

A method (methods.py) names a forget term and a retain term; the trainer sums `weight · term`.
Every module of this package is imported here, so a new term file registers itself. The pure
functions of the baselines' terms are exported too, for code that composes them by hand.
"""

import importlib
import pkgutil

from llm_unlearn.terms import entropy as _entropy
from llm_unlearn.terms import ga as _ga
from llm_unlearn.terms import gdr as _gdr
from llm_unlearn.terms import hinge as _hinge
from llm_unlearn.terms import klr as _klr
from llm_unlearn.terms import npo as _npo
from llm_unlearn.terms.base import (
    IGNORE_INDEX,
    TERMS,
    Params,
    Term,
    TermInput,
    ce,
    names,
    register_term,
    sequence_nll,
    token_nll,
)

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

ga, gdr, npo, klr, entropy = _ga.ga, _gdr.gdr, _npo.npo, _klr.klr, _entropy.entropy
quail_hinge, HINGE_DISTANCES = _hinge.quail_hinge, _hinge.HINGE_DISTANCES
npo_muse, klr_muse = _npo.npo_muse, _klr.klr_muse

__all__ = [
    "HINGE_DISTANCES",
    "IGNORE_INDEX",
    "TERMS",
    "Params",
    "Term",
    "TermInput",
    "ce",
    "entropy",
    "ga",
    "gdr",
    "klr",
    "klr_muse",
    "names",
    "npo",
    "npo_muse",
    "quail_hinge",
    "register_term",
    "sequence_nll",
    "token_nll",
]
