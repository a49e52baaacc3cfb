"""The SDKs and frameworks whose calls are journaled: one module each, all meeting one interface.

Each module here exposes `INTEGRATION`, an `Integration`: the modules whose import installs it
(`triggers`), `install(module)`, called once per trigger right after that module is imported (or
at once if it already is), `uninstall()`, and the releases of its SDK the suite was run against
(`tested`; the README's coverage table shows them, and `constraints.txt` pins the newest).
Every module hands its calls to the runtime's one replay decision, `ActiveStep.claim`. An SDK that
is not installed is never imported, so its integration simply never installs. Adding an SDK means
adding one module and one name below.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

from .._hooks import after_import

NAMES = ("openai", "anthropic", "google_genai", "google_genai_afc", "openai_agents", "pydantic_ai", "langchain",
         "langgraph", "mcp", "outbound_http", "child_processes")


class Unsupported(Exception):
    """The installed version of an SDK lacks the place where its calls are intercepted."""


class Slower(Exception):
    """The installed version of an SDK lacks what replay above it needs: its HTTP path replays instead."""


@dataclass(frozen=True)
class Tested:
    """The releases of a distribution the suite ran against: from `lowest` to `newest` (major.minor)."""

    distribution: str
    lowest: str
    newest: str

    def __str__(self) -> str:
        return f"{self.distribution} {self.lowest}–{self.newest}"


@dataclass(frozen=True)
class Integration:
    name: str
    triggers: tuple[str, ...]
    install: Callable[[ModuleType], None]
    uninstall: Callable[[], None]
    tested: Tested | None = None  # None: no SDK of its own (the HTTP libraries of the standard kind)


installed: dict[str, Integration] = {}
unsupported: dict[str, str] = {}  # name -> why its calls cannot be journaled
slower: dict[str, str] = {}  # name -> why its recorded calls replay through the HTTP path


def replays_slower(name: str, why: str) -> None:
    """Say once that `name`'s recorded calls replay through the SDK's HTTP path: still offline, no longer fast."""
    if name in slower:
        return
    slower[name] = why
    print(f"durable-kernel: {why}; recorded {name} calls replay through its HTTP path instead "
          "(still offline, slower)", file=sys.stderr)


def enable() -> None:
    """Install each integration as soon as its SDK is imported (idempotent)."""
    for name in NAMES:
        integration: Integration = importlib.import_module(f"{__name__}.{name}").INTEGRATION
        for trigger in integration.triggers:
            after_import(trigger, _installer(integration))


def disable() -> None:
    for integration in installed.values():
        integration.uninstall()
    installed.clear()


def _installer(integration: Integration) -> Callable[[ModuleType], None]:
    def install(module: ModuleType) -> None:
        try:
            integration.install(module)
        except Slower as exc:
            replays_slower(integration.name, str(exc))
        except Unsupported as exc:
            # Never break the user's import; say loudly that these calls are not journaled.
            if integration.name not in unsupported:
                unsupported[integration.name] = str(exc)
                print(f"durable-kernel: {exc}; calls through it are NOT journaled "
                      "(the step summary names the HTTP requests that escaped)", file=sys.stderr)
            return
        installed[integration.name] = integration

    return install
