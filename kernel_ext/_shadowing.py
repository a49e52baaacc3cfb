"""Our `journal` and `widgets` packages, imported from beside kernel_ext whatever the notebook's folder holds.

The kernel puts the notebook's folder on `sys.path` ahead of site-packages. There a plain folder named `journal/` or
`widgets/` (data, say) is a namespace package, and with an editable install it wins over ours, because
setuptools' editable finder is consulted after the path finder. So the extension does not import these
two by name: it loads them from the files that sit beside kernel_ext (the source tree of an editable
install, site-packages of a regular one) and registers them in `sys.modules` before anything imports them.

A user's own module of that name (`journal.py`, or a `journal/` folder with an `__init__.py`) is
different: taking the name would hide it from the user's code, so it gets one line saying which file to
rename instead.
"""

from __future__ import annotations

import importlib.util
import sys
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

_ROOT = Path(__file__).resolve().parents[1]


class ShadowedPackageError(ImportError):
    """A module of the user's is imported in place of one of durable-kernel's packages."""


class ShadowedPackageWarning(UserWarning):
    """A module of the user's holds the name of one of durable-kernel's optional packages (widgets)."""


def _init_file(name: str) -> Path:
    return _ROOT / name / "__init__.py"


def _is_folder(spec: Any) -> bool:
    # A namespace package: a plain folder on sys.path, holding no code of its own.
    return (spec is not None and getattr(spec, "origin", None) in (None, "namespace")
            and spec.submodule_search_locations is not None)


def _shadow(name: str) -> Path | str | None:
    """The foreign module (its file) that is, or would be, imported as `name` in place of ours."""
    module = sys.modules.get(name)
    if module is None:
        spec = importlib.util.find_spec(name)
        if spec is None or _is_folder(spec) or not spec.origin:
            return None
        where = Path(spec.origin).resolve()
    else:
        spec = getattr(module, "__spec__", None)
        if _is_folder(spec):
            return None
        file = getattr(module, "__file__", None) or getattr(spec, "origin", None)
        if not file:
            return repr(module)
        where = Path(file).resolve()
    return None if where == _init_file(name) else where


def _message(name: str, where: Path | str) -> str:
    if isinstance(where, Path) and where.name == "__init__.py":
        return (f"{where.parent} shadows durable-kernel's `{name}` package; "
                f"rename your folder (for example to my_{name}/) and restart the kernel")
    return (f"{where} shadows durable-kernel's `{name}` package; "
            f"rename your file (for example to my_{name}.py) and restart the kernel")


def _load(name: str) -> ModuleType:
    init = _init_file(name)
    spec = importlib.util.spec_from_file_location(name, init, submodule_search_locations=[str(init.parent)])
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # Registered before it runs, as the import system does, so that its own submodules find their parent.
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return sys.modules[name]


def own_package(name: str) -> ModuleType:
    """Our package `name` ("journal" or "widgets"), imported from beside kernel_ext if it is not yet.

    Raises ShadowedPackageError (an ImportError) naming the user's module when one holds the name.
    """
    where = _shadow(name)
    if where is not None:
        raise ShadowedPackageError(_message(name, where))
    module = sys.modules.get(name)
    if module is not None and not _is_folder(getattr(module, "__spec__", None)):
        return module
    if not _init_file(name).is_file():
        # Not laid out beside kernel_ext (a zipped or vendored copy): only the import system knows where it is.
        return importlib.import_module(name)
    return _load(name)


def import_own_packages() -> None:
    """Bind `journal` and `widgets` to ours before anything imports them; say which user file is in the way."""
    own_package("journal")
    try:
        own_package("widgets")
    except ShadowedPackageError as error:
        # The runtime works without the views (approvals and history fall back to text). Attributed to no
        # source line, so that the warning prints as the one line that says what to rename.
        warnings.warn_explicit(str(error), ShadowedPackageWarning, "durable-kernel", 0)
