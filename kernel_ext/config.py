"""Settings: where the journal is, its sync, strictness, prices, the progress line, budgets and live-call limits.

Each setting is read from several places; the first that has it wins:

    explicit argument or option > environment variable > %config Durable.NAME
        > [tool.durable] in the nearest pyproject.toml > default

The environment comes before `%config` because `durable run` hands its --journal and --strict to
the notebook's kernel through the environment: a notebook must not send a CI run's records to
another journal, nor turn its strictness off. A `%config` that an environment variable overrides
says so when it is set.

An invalid value anywhere is an error (`SettingError`, one line that lists the valid values), not
a silent fallback: a mistyped durability mode must not quietly weaken the journal.

Nothing here imports IPython or traitlets until the extension registers `Durable` with a shell,
so an exported script pays for neither.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from journal._log import SYNC_MODES

from .errors import DurableError

_ON = ("1", "true", "yes", "on")
_OFF = ("0", "false", "no", "off")
_MAYBE_OURS = re.compile(r"\bdurable\b")  # a pyproject.toml without it is not parsed at all


class SettingError(DurableError, ValueError):
    """A setting has a value it cannot take; the message names where it came from and the valid values."""


@dataclass(frozen=True)
class Setting:
    name: str
    env: str
    kind: Literal["path", "choice", "switch", "number", "key", "limit"]
    default: Any
    valid: str  # shown in every error about this setting
    help: str


_LIMIT_VALUES = "a number of calls > 0, or MODEL=N pairs with * for all models (e.g. gpt-4o-mini=5,*=20)"

SETTINGS: dict[str, Setting] = {s.name: s for s in (
    Setting("journal", "DURABLE_JOURNAL", "path", None, "a file path",
            "The journal file (DuckDB). Default: .durable/journal.duckdb under the working directory. "
            "A relative path is taken from the working directory; in pyproject.toml, from that file's folder."),
    Setting("sync", "DURABLE_SYNC", "choice", "effects", ", ".join(SYNC_MODES),
            "When journal records are fdatasync'ed. always: every record, before the call returns (survives "
            "power loss). effects: survives a killed process with nothing lost; records whose loss after a "
            "power cut could repeat an effect (a non-idempotent tool's start, an approval decision) are "
            "fdatasync'ed. never: survives a killed process, not a power cut."),
    Setting("strict", "DURABLE_STRICT", "switch", False, "true or false (also 1/0, yes/no, on/off)",
            "Every durable step replays only: a call that would go live is an error (CI mode; "
            "`durable run --strict` sets it). A cell's --rerun is then refused."),
    Setting("prices", "DURABLE_PRICES", "path", None, "a file path",
            "A JSON or TOML price file ({model: {input, output, currency}} per million tokens), loaded into "
            "the journal before a durable step when it changed, and by `%durable prices` / `durable prices`."),
    Setting("progress", "DURABLE_PROGRESS", "switch", True, "true or false (also 1/0, yes/no, on/off)",
            "The line under a running durable cell that is updated as calls are made. Off, the cell shows "
            "only its summary line when it ends."),
    Setting("budget_tokens", "DURABLE_BUDGET_TOKENS", "number", None, "a number of tokens > 0",
            "A token budget for every session: once its model calls recorded in the journal used this many "
            "tokens, no further live model call is sent (BudgetExceeded). `%durable session NAME "
            "--budget-tokens N` sets one session's instead; `%%durable NAME --budget-tokens N` adds a step's."),
    Setting("budget_usd", "DURABLE_BUDGET_USD", "number", None, "a number of US dollars > 0",
            "A budget in US dollars for every session, counted with the prices set by %durable prices (a model "
            "without a USD price makes it fail closed). As budget_tokens otherwise."),
    Setting("key", "DURABLE_KEY", "key", None, "a key file's path (or the key itself)",
            "Encrypt what the agent saw and made (requests, answers, tool results, variables, outputs) with this "
            "key before it is written; the journal's structure stays readable. A path to a file holding the key "
            "(make one with `durable key new FILE`) or the key itself; never shown in any message. A journal "
            "written with a key is read only with it."),
    Setting("max_concurrent", "DURABLE_MAX_CONCURRENT", "limit", None, _LIMIT_VALUES,
            "At most this many live model calls at once (threads together; coroutines per event loop): the "
            "others wait for their turn. A number limits all calls; MODEL=N pairs limit a model's calls, and "
            "*=N all of them (gpt-4o=5,*=20; a table in pyproject.toml). Replayed calls are not limited."),
    Setting("max_per_minute", "DURABLE_MAX_PER_MINUTE", "limit", None, _LIMIT_VALUES,
            "At most this many live model calls in any minute, in this process: the others wait. A number or "
            "MODEL=N pairs, as max_concurrent. Replayed calls are not limited."),
)}


@dataclass(frozen=True)
class Settings:
    """The settings in effect, and where each came from (for messages that say how to change it).

    `journal` is absolute, except an explicit argument's, which is kept as given.
    """

    journal: Path
    sync: str
    strict: bool
    prices: Path | None
    progress: bool
    budget_tokens: float | None
    budget_usd: float | None
    max_concurrent: dict[str, float] | None  # {model, or "*" for all: calls}
    max_per_minute: dict[str, float] | None
    key: str | None
    origins: Mapping[str, str]

    def origin(self, name: str) -> str:
        return self.origins[name]


def settings(**explicit: Any) -> Settings:
    """The settings in effect now; `explicit` values (None: not given) win over every other source.

    Cheap enough to call once per step (a few stat calls; pyproject.toml is parsed once per change),
    not once per journal record: read it once per unit of work and keep the value.
    """
    unknown = set(explicit) - set(SETTINGS)
    if unknown:
        raise TypeError(f"no such setting: {', '.join(sorted(unknown))}; settings: {', '.join(SETTINGS)}")
    chosen = _resolve(explicit, _configured_values())
    # Whoever reads the settings is about to use the journal: it seals and opens with this key.
    from journal import use_key

    use_key(chosen.key)
    return chosen


def find_pyproject(start: Path | None = None) -> Path | None:
    """The nearest pyproject.toml in `start` (default: the working directory) or its parents."""
    folder = (start or Path.cwd()).resolve()
    for candidate in (folder, *folder.parents):
        path = candidate / "pyproject.toml"
        if path.is_file():
            return path
    return None


def _resolve(explicit: Mapping[str, Any], configured: Mapping[str, Any]) -> Settings:
    cwd = Path.cwd()
    project = find_pyproject(cwd)
    table = _project_table(project) if project is not None else {}
    values: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for name, setting in SETTINGS.items():
        # Every source is checked, also those that lose: a typo stays an error until it is fixed.
        found: list[tuple[Any, str]] = []  # (value, where it came from), first wins
        secret = setting.kind == "key"  # a key is never shown, not even in an error about it
        if explicit.get(name) is not None:
            given = "..." if secret else repr(explicit[name])
            found.append((_parse(setting, explicit[name], f"{name}={given}"), "explicit argument"))
        raw = os.environ.get(setting.env, "")
        if raw:
            shown = "..." if secret else raw
            found.append((_parse(setting, raw, f"{setting.env}={shown!r}", cwd), f"{setting.env}={shown}"))
        if configured.get(name) is not None:
            where = f"%config Durable.{name} = {'...' if secret else repr(configured[name])}"
            found.append((_parse(setting, configured[name], where, cwd), where))
        if name in table:
            where = f"[tool.durable] in {project}"
            given = "..." if secret else repr(table[name])
            found.append((_parse(setting, table[name], f"{name} = {given} in {where}", project.parent), where))
        values[name], origins[name] = found[0] if found else (setting.default, "default")
    if values["journal"] is None:
        values["journal"] = cwd / ".durable" / "journal.duckdb"
    return Settings(origins=origins, **values)


def _parse(setting: Setting, value: Any, where: str, base: Path | None = None) -> Any:
    """A value checked and normalised; a relative path is taken from `base`, else kept as given."""
    def invalid() -> SettingError:
        return SettingError(f"{where} is not a valid {setting.name} setting; valid values: {setting.valid}")

    if setting.kind == "path":
        if isinstance(value, Path):
            value = str(value)
        if not isinstance(value, str) or not value.strip():
            raise invalid()
        path = Path(value).expanduser()
        return base / path if base is not None and not path.is_absolute() else path
    if setting.kind == "key":
        if not isinstance(value, str) or not value.strip():
            raise invalid()
        path = Path(value.strip()).expanduser()
        if base is not None and not path.is_absolute() and len(value) < 4096 and (base / path).is_file():
            return str(base / path)
        return value.strip()
    if setting.kind == "choice":
        if not isinstance(value, str) or value.strip().lower() not in SYNC_MODES:
            raise invalid()
        return value.strip().lower()
    if setting.kind == "limit":
        return _limits(value, invalid)
    if setting.kind == "number":
        number = _positive(value)
        if number is None:
            raise invalid()
        return number
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _ON + _OFF:
        return value.strip().lower() in _ON
    raise invalid()


def _positive(value: Any) -> float | None:
    """`value` as a finite number > 0 (a boolean is not one), else None."""
    try:
        number = float(value) if not isinstance(value, bool) else None
    except (TypeError, ValueError):
        return None
    return number if number is not None and 0 < number < float("inf") else None


def _limits(value: Any, invalid: Callable[[], SettingError]) -> dict[str, float]:
    """{model or "*": calls} from a number, "MODEL=N,..." text, or a table."""
    if isinstance(value, Mapping):
        pairs = list(value.items())
    elif isinstance(value, str) and "=" in value:
        pairs = [part.partition("=")[::2] for part in value.split(",") if part.strip()]
    else:
        pairs = [("*", value)]
    out = {}
    for model, given in pairs:
        number = _positive(given)
        name = model.strip() if isinstance(model, str) else ""
        if not name or number is None:
            raise invalid()
        out[name] = number
    if not out:
        raise invalid()
    return out


_project_cache: dict[Path, tuple[tuple[int, int], dict[str, Any]]] = {}


def _project_table(path: Path) -> dict[str, Any]:
    """`[tool.durable]` of a pyproject.toml, checked for unknown keys; parsed again only when the file changes."""
    try:
        stat = path.stat()
        signature = (stat.st_mtime_ns, stat.st_size)
        cached = _project_cache.get(path)
        if cached is not None and cached[0] == signature:
            return cached[1]
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SettingError(f"cannot read {path}: {exc.strerror or exc}") from None
    table: dict[str, Any] = {}
    if _MAYBE_OURS.search(text):
        data = _load_toml(path, text)
        tool = data.get("tool", {})
        table = tool.get("durable", {}) if isinstance(tool, dict) else {}
        if not isinstance(table, dict):
            raise SettingError(f"tool.durable in {path} must be a table ([tool.durable]), not {type(table).__name__}")
        unknown = sorted(set(table) - set(SETTINGS))
        if unknown:
            raise SettingError(f"[tool.durable] in {path} has no setting {', '.join(map(repr, unknown))}; "
                               f"valid settings: {', '.join(SETTINGS)}")
    _project_cache[path] = (signature, table)
    return table


def _load_toml(path: Path, text: str) -> dict[str, Any]:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ImportError:
            raise SettingError(f"reading [tool.durable] in {path} needs Python 3.11 or the tomli package") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SettingError(f"{path} is not valid TOML: {exc}") from None


# -- %config Durable.NAME (only once the extension is loaded) ------------------------------------------

_registered: Any = None  # the shell's Durable instance


def _configured_values() -> dict[str, Any]:
    if _registered is None:
        return {}
    return {name: value for name in SETTINGS if (value := getattr(_registered, name)) is not None}


@functools.cache
def configurable_class() -> type:
    """The `traitlets` Configurable `Durable`, built on first use so that scripts never import traitlets."""
    import traitlets
    from traitlets.config import Configurable

    class _OneLine:
        # traitlets' own message names the instance and the trait type; ours the valid values, as elsewhere.
        def error(self, obj: Any, value: Any, error: Exception | None = None, info: str | None = None) -> None:
            setting = SETTINGS[self.name]  # type: ignore[attr-defined]
            raise traitlets.TraitError(
                f"Durable.{setting.name} = {'...' if setting.kind == 'key' else repr(value)} is not valid; "
                f"valid values: {setting.valid}")

    # Named as traitlets' own types: `%config Durable` shows the name, and lists an Enum's choices.
    class Unicode(_OneLine, traitlets.Unicode):
        def validate(self, obj: Any, value: Any) -> Any:
            if value is not None and (not isinstance(value, str) or not value.strip()):
                self.error(obj, value)
            return super().validate(obj, value)

    class Enum(_OneLine, traitlets.Enum):
        pass

    class Bool(_OneLine, traitlets.Bool):
        pass

    class Float(_OneLine, traitlets.Float):
        def validate(self, obj: Any, value: Any) -> Any:
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not 0 < value < float("inf")):
                self.error(obj, value)
            return super().validate(obj, float(value) if isinstance(value, int) else value)

    class Limit(_OneLine, traitlets.Any):  # a number, or MODEL=N pairs as text or a dict
        def validate(self, obj: Any, value: Any) -> Any:
            if value is not None:
                try:
                    _limits(value, lambda: SettingError(""))
                except SettingError:
                    self.error(obj, value)
            return value

    def trait(setting: Setting) -> Any:
        if setting.kind in ("path", "key"):
            made = Unicode(None, allow_none=True)
        elif setting.kind == "choice":
            made = Enum(SYNC_MODES, None, allow_none=True)
        elif setting.kind == "number":
            made = Float(None, allow_none=True)
        elif setting.kind == "limit":
            made = Limit(None, allow_none=True)
        else:
            made = Bool(None, allow_none=True)
        default = "" if setting.default is None else f" Default: {str(setting.default).lower()}."
        made.help = (f"{setting.help}{default} ${setting.env}, when set, wins over this; this wins over "
                     f"[tool.durable] in pyproject.toml. None: not set here.")
        return made.tag(config=True)

    class Durable(Configurable):
        """durable-kernel's settings; docs/settings.md has the sources and their order."""

        journal = trait(SETTINGS["journal"])
        sync = trait(SETTINGS["sync"])
        strict = trait(SETTINGS["strict"])
        prices = trait(SETTINGS["prices"])
        progress = trait(SETTINGS["progress"])
        budget_tokens = trait(SETTINGS["budget_tokens"])
        budget_usd = trait(SETTINGS["budget_usd"])
        max_concurrent = trait(SETTINGS["max_concurrent"])
        max_per_minute = trait(SETTINGS["max_per_minute"])
        key = trait(SETTINGS["key"])

        @traitlets.observe(*SETTINGS)
        def _changed(self, change: Any) -> None:
            if self is _registered:
                _configuration_changed(change["name"])

    return Durable


def __getattr__(name: str) -> Any:
    if name == "Durable":
        return configurable_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def register(shell: Any) -> Any:
    """Make `%config Durable...` work in `shell`; also reads `c.Durable.*` from the IPython config files."""
    global _registered
    if _registered is None or _registered.parent is not shell:
        unregister(shell)
        _registered = configurable_class()(parent=shell)
    if _registered not in shell.configurables:
        shell.configurables.append(_registered)
    return _registered


def unregister(shell: Any) -> None:
    global _registered
    if _registered is not None and _registered in getattr(shell, "configurables", []):
        shell.configurables.remove(_registered)
    _registered = None


_listeners: list[Callable[[str], None]] = []  # told the name of a setting that %config changed


def on_change(listener: Callable[[str], None]) -> None:
    """Call `listener(name)` when `%config Durable.NAME` changes a setting that no environment variable overrides.

    Settings know nothing of sessions: whoever moves a session when its journal setting changes listens here.
    """
    if listener not in _listeners:
        _listeners.append(listener)


def _configuration_changed(name: str) -> None:
    setting = SETTINGS[name]
    overriding = os.environ.get(setting.env, "")
    if overriding:
        shown = "..." if setting.kind == "key" else overriding
        print(f"durable: %config Durable.{name} has no effect while {setting.env}={shown} is set "
              f"(the environment comes first); `%env {setting.env}=` clears it", file=sys.stderr)
        return
    for listener in list(_listeners):
        with contextlib.suppress(SettingError):  # the next durable cell says what is wrong
            listener(name)
