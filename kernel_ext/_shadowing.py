"""Detect a user's own `journal.py` or `widgets.py` hiding our packages of the same name.

The kernel puts the notebook's folder first on `sys.path`, so a file named like one of our
top-level packages next to a notebook is imported instead of it.
"""

from __future__ import annotations

import importlib.util
import sys
import warnings
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[1]


class ShadowedPackageError(ImportError):
    """A module of the user's is imported in place of one of durable-kernel's packages."""


def _origin(name: str) -> Path | None:
    module = sys.modules.get(name)
    spec = module.__spec__ if module is not None else importlib.util.find_spec(name)
    origin = getattr(spec, "origin", None)
    return Path(origin).resolve() if origin else None


def check_shadowing() -> None:
    for name, required in (("journal", True), ("widgets", False)):
        origin = _origin(name)
        if origin is None or origin == _ROOT / name / "__init__.py":
            continue
        message = (f"{origin} shadows durable-kernel's `{name}` package; "
                   f"rename your file (for example to my_{name}.py) and restart the kernel")
        if required:
            raise ShadowedPackageError(message)
        warnings.warn(message, stacklevel=3)
