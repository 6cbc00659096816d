"""Modifiers, the unit of extension for what changes any method's training: one file per modifier,
registered by name with `register_modifier` (base.py says what one holds). Every module of this
package is imported here, so a new modifier file registers itself."""

import importlib
import pkgutil

from llm_unlearn.modifiers.base import MODIFIERS, Modifier, Section, Settings, modifiers, register_modifier

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["MODIFIERS", "Modifier", "Section", "Settings", "modifiers", "register_modifier"]
