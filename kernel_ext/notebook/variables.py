"""Which variables a durable step changed, pickled so that `%durable restore` can bring them back.

A step "changed" a name it assigns at module level, or one it only reads whose value is
different afterwards (`messages.append(...)` mutates `messages` in place). Names the cell
never mentions cannot have been changed by it, so nothing else is pickled. Pickles are
content-addressed in the journal: a large value that did not change is not stored again. They are
sealed with this user's key (trust.py): restore loads only the pickles this user wrote or trusted.
"""

from __future__ import annotations

import ast
import hashlib
import types
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import cloudpickle

from .. import trust
from ..errors import UntrustedPickleError
from ..secrets import holds_secret, secret_values

_IGNORED = frozenset({"In", "Out", "exit", "quit", "get_ipython", "open"})


def names_in(source: str) -> tuple[set[str], set[str]]:
    """(names the code assigns at module level, names it reads anywhere)."""
    tree = ast.parse(source)
    assigned: set[str] = set()
    read: set[str] = set()
    declared_global: set[str] = set()

    def visit(node: ast.AST, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                if top:
                    assigned.add(child.name)
                visit(child, False)
            elif isinstance(child, (ast.Lambda, ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)):
                visit(child, False)  # their own scope: their names are not the module's
            elif isinstance(child, ast.Global):
                declared_global.update(child.names)
            elif isinstance(child, ast.Name):
                if isinstance(child.ctx, ast.Load):
                    read.add(child.id)
                elif top or child.id in declared_global:
                    assigned.add(child.id)
            elif isinstance(child, (ast.Import, ast.ImportFrom)) and top:
                assigned.update((a.asname or a.name).split(".")[0] for a in child.names if a.name != "*")
            else:
                visit(child, top)

    visit(tree, True)
    return assigned | declared_global, read


def _pickle(value: Any) -> bytes | None:
    try:
        return cloudpickle.dumps(value)
    except Exception:  # noqa: BLE001 - unpicklable values are reported by name, not raised
        return None


def _candidate(name: str, value: Any) -> bool:
    return not name.startswith("_") and name not in _IGNORED and not isinstance(value, types.ModuleType)


class VariableTracker:
    """Snapshot before a step, compare after it."""

    def __init__(self, source: str, namespace: Mapping[str, Any]) -> None:
        self.assigned, read = names_in(source)
        self.namespace = namespace
        self.before = {
            name: hashlib.blake2b(data, digest_size=16).digest()
            for name in read - self.assigned
            if name in namespace and _candidate(name, namespace[name])
            and (data := _pickle(namespace[name])) is not None
        }

    def changed(self) -> tuple[dict[str, bytes], list[str]]:
        """({name: sealed pickle} of what the step assigned or mutated, names left out because their value
        holds a credential). A value that cannot be pickled is journaled as a marker that restore names."""
        pickles: dict[str, bytes] = {}
        secret: list[str] = []
        known = secret_values(self.namespace)
        for name in sorted(self.assigned | set(self.before)):
            if name not in self.namespace or not _candidate(name, self.namespace[name]):
                continue
            data = _pickle(self.namespace[name])
            if data is None:
                if name in self.assigned:
                    pickles[name] = trust.seal(Unpicklable())
            elif name in self.assigned or hashlib.blake2b(data, digest_size=16).digest() != self.before[name]:
                if holds_secret(data, known):
                    secret.append(name)
                    pickles[name] = trust.seal(Withheld())  # so that restore can name it
                else:
                    pickles[name] = trust.seal_pickle(data)
        return pickles, secret


class Withheld:
    """Journaled in place of a variable whose value held a credential: restore names it, and its step."""


class Unpicklable:
    """Journaled in place of a variable whose value could not be pickled: restore names it, and its step."""


@dataclass
class Restored:
    """What `%durable restore` did, by variable name."""

    restored: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # a pickle that would not load (its class is gone)
    withheld: dict[str, str] = field(default_factory=dict)  # name -> step: it held a credential
    unpicklable: dict[str, str] = field(default_factory=dict)  # name -> step: it could not be pickled
    untrusted: list[str] = field(default_factory=list)  # pickles this user neither wrote nor trusted


def restore(values: Mapping[str, tuple[str, bytes]], namespace: dict[str, Any], journal: Any = None) -> Restored:
    """Unpickle journaled variables into `namespace`, those this user wrote or trusted (trust.py)."""
    done = Restored()
    for name, (step, data) in values.items():
        try:
            value = trust.unseal(data, f"variable {name!r} (step {step!r})", journal)
        except UntrustedPickleError:
            done.untrusted.append(name)
            continue
        except Exception:  # noqa: BLE001 - e.g. a class whose module is gone; reported by name
            done.failed.append(name)
            continue
        if isinstance(value, Withheld):
            done.withheld[name] = step
        elif isinstance(value, Unpicklable):
            done.unpicklable[name] = step
        else:
            namespace[name] = value
            done.restored.append(name)
    return done


def describe(names: Iterable[str]) -> str:
    return ", ".join(sorted(names))
