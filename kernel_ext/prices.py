"""Prices per million tokens, as the user sets them: cost is shown only where a price is known.

No vendor price ships with durable-kernel: prices change, differ by contract, and a number
presented as fact would be wrong somewhere. The user loads a file of their own into the journal.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from journal import Journal

from .errors import StepError

EXAMPLE = '{"my-model": {"input": 0.15, "output": 0.60, "currency": "USD"}}'


def read_prices(path: Path) -> dict[str, dict[str, Any]]:
    """Read and check a JSON or TOML price file: {model: {input, output, currency}} per million tokens."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise StepError(f"cannot read the price file {path}: {exc.strerror}") from None
    try:
        if path.suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        else:
            data = json.loads(text)
    except ValueError as exc:
        raise StepError(f"{path} is not valid {'TOML' if path.suffix == '.toml' else 'JSON'}: {exc}") from None
    if not isinstance(data, dict):
        raise StepError(f"{path}: expected a table of models, for example {EXAMPLE}")
    for model, price in data.items():
        ok = isinstance(price, dict) and all(
            isinstance(price.get(k), (int, float)) and price[k] >= 0 for k in ("input", "output"))
        if not ok:
            raise StepError(f"{path}: model {model!r} needs non-negative numbers 'input' and 'output' "
                            f"(per million tokens), for example {EXAMPLE}")
    return data


def load_prices(journal: Journal, path: Path | str) -> str:
    path = Path(path)
    prices = read_prices(path)
    with journal.open() as store:
        store.set_prices(prices, str(path.resolve()))
    return f"loaded prices for {len(prices)} models from {path}; cost is shown for calls of these models"


def render_prices(journal: Journal) -> str:
    with journal.open() as store:
        prices = store.prices()
    if not prices:
        return (f"no prices set, so no cost is shown. Load yours: %durable prices FILE (or durable prices FILE), "
                f"a JSON or TOML file like {EXAMPLE} (per million prompt and completion tokens)")
    lines = ["model  input/1M  output/1M  currency"]
    lines += [f"{p['model']}  {p['input']:g}  {p['output']:g}  {p['currency']}" for p in prices]
    lines.append(f"(from {prices[0]['source']})")
    return "\n".join(lines)
