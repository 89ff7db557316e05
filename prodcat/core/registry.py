"""Registries for swappable parts (encoder families, fusion modules, masking modes, adapters).

Modelled on timm's ``@register_model`` / ``list_models()`` / ``create_model(name)``: an unknown
name raises an error that lists the valid ones. An entry is either the object itself
(``@registry.register("name")``) or a lazy ``"module:attribute"`` reference
(``registry.register_lazy("name", "pkg.mod:Class")``), imported on first :meth:`Registry.get`:
so a config can check names against a registry without importing torch.
"""

from __future__ import annotations

import importlib
from typing import Callable, Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """A named collection of constructors of one kind (``"encoder"``, ``"fusion"``, ...)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T | str] = {}
        self._lazy: set[str] = set()

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: register ``obj`` under ``name``.

        Raises:
            ValueError: when ``name`` is already registered.
        """
        def decorate(obj: T) -> T:
            self._add(name, obj)
            return obj
        return decorate

    def register_lazy(self, name: str, target: str) -> None:
        """Register ``"package.module:attribute"``, imported the first time ``name`` is looked up.

        Raises:
            ValueError: when ``name`` is already registered or ``target`` has no ``:``.
        """
        if ":" not in target:
            raise ValueError(f"lazy {self.kind} target must be 'module:attribute', got {target!r}")
        self._add(name, target)
        self._lazy.add(name)

    def _add(self, name: str, obj) -> None:
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._items[name] = obj

    def get(self, name: str) -> T:
        """The object registered as ``name`` (a lazy entry is imported now).

        Raises:
            KeyError: for an unknown name, listing the registered ones.
        """
        try:
            item = self._items[name]
        except KeyError:
            raise KeyError(f"unknown {self.kind} {name!r}; choose one of: "
                           f"{', '.join(sorted(self._items)) or '(none registered)'}") from None
        if name in self._lazy:
            module, _, attribute = str(item).partition(":")
            item = getattr(importlib.import_module(module), attribute)
            self._items[name] = item
            self._lazy.discard(name)
        return item  # type: ignore[return-value]

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items
