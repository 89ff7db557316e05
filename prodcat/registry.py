"""Registries for swappable parts (encoders, fusion modules, masking modes, adapters parsers).

Modelled on timm's ``@register_model`` / ``list_models()`` / ``create_model(name)``: an unknown
name raises an error that lists the valid ones.
"""

from __future__ import annotations

from typing import Callable, Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """A named collection of constructors of one kind (``"encoder"``, ``"fusion"``, ...)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: register ``obj`` under ``name``.

        Raises:
            ValueError: when ``name`` is already registered.
        """
        def decorate(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._items[name] = obj
            return obj
        return decorate

    def get(self, name: str) -> T:
        """The object registered as ``name``.

        Raises:
            KeyError: for an unknown name, listing the registered ones.
        """
        try:
            return self._items[name]
        except KeyError:
            raise KeyError(f"unknown {self.kind} {name!r}; choose one of: "
                           f"{', '.join(sorted(self._items)) or '(none registered)'}") from None

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items
