"""Wrapping an SDK's methods in place, and putting them back."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class Patches:
    """The methods one integration wrapped, with their originals, so that uninstall restores them."""

    def __init__(self) -> None:
        self._originals: dict[tuple[Any, str], Any] = {}

    def wrap(self, owner: Any, attribute: str, make: Callable[[Any], Any]) -> None:
        """Replace `owner.attribute` with `make(original)`, once however often it is asked."""
        if (owner, attribute) not in self._originals:
            self._originals[owner, attribute] = original = owner.__dict__[attribute]
            setattr(owner, attribute, make(original))

    def undo(self) -> None:
        for (owner, attribute), original in self._originals.items():
            setattr(owner, attribute, original)
        self._originals.clear()
