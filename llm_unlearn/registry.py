"""Name -> object registries: the only way a method, quantizer or metric is found.

Modelled on peft's name -> class mapping: registering is a decorator next to the definition,
and an unknown name is a user error that lists what is known.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError, ValueError):
    """A name that no registry entry matches; the message lists the known names.

    A ValueError too, so validators (pydantic's among them) report it as a bad value.
    """

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = obj
            return obj

        return add

    def register_instance(self, name: str) -> Callable[[type], type]:
        """Class decorator: name the class `name` and register one instance of it (terms, modifiers)."""

        def add(cls: type) -> type:
            cls.name = name
            self.register(name)(cls())
            return cls

        return add

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
