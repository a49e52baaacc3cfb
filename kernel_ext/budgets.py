"""Budgets: spending that cannot run away. Once a step's or a session's budget is spent, no live model call goes out.

A budget is in tokens and/or US dollars (the latter with the prices the user set, `%durable prices`).
What counts is what was spent live, as the journal records it: every model call recorded for the step
(or the session), by any earlier run, plus this run's live calls. A replayed call costs nothing, so a
run after raising a budget replays what was paid for and goes on; with everything recorded, even a
1-token budget replays to the end. The check is made before each live model call; a call already in
flight when the budget runs out is finished and recorded (it is paid for), so concurrent calls may
overshoot by what they were in flight with.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import StepError

if TYPE_CHECKING:
    from .runtime import ActiveStep


@dataclass(frozen=True)
class Budget:
    """A limit on live spending, and where it was set (said in every message about it)."""

    scope: str  # "step 'plan'" or "session 'trip'"
    where: str  # how it was set: "%%durable plan --budget-tokens 1000", "Durable.budget_tokens"
    tokens: int | None = None
    usd: float | None = None

    def shown(self) -> str:
        parts = ([f"{self.tokens:,} tokens"] if self.tokens is not None else []) + (
            [f"${self.usd:,.2f}"] if self.usd is not None else [])
        return " and ".join(parts)


def make_budget(scope: str, where: str, tokens: float | None, usd: float | None) -> Budget | None:
    """A budget from the numbers given (None: none given); a number that is not > 0 is a StepError."""
    for name, value in (("budget_tokens", tokens), ("budget_usd", usd)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0):
            raise StepError(f"{name} takes a number > 0, got {value!r}")
    if tokens is None and usd is None:
        return None
    return Budget(scope, where, int(tokens) if tokens is not None else None, float(usd) if usd is not None else None)


class BudgetExceeded(BaseException):  # noqa: N818 - the name is the public API's
    """A budget is spent: no further live model call is sent. A BaseException: agent code must not swallow it."""

    suspends_step = True  # the step is suspended, not failed: raising the budget lets it go on

    def __init__(self, budget: Budget, spent: str) -> None:
        self.budget = budget
        super().__init__(f"the budget of {budget.scope} ({budget.shown()}, set by {budget.where}) is spent: "
                         f"{spent} spent live; raise it there and run the step again (what was paid for replays)")

    def _render_traceback_(self) -> list[str]:  # IPython shows this instead of a traceback
        return [f"\u23f8 {self}"]


@dataclass
class Spent:
    """What the journal recorded for a scope before this run, and the prices to count money with."""

    tokens: int = 0
    usd: float = 0.0
    unpriced: set[str] = field(default_factory=set)  # models with recorded tokens and no USD price
    prices: dict[str, tuple[float, float]] = field(default_factory=dict)  # model -> USD per million in, out


def check(active: ActiveStep, model: str | None) -> None:
    """Before a live model call: raise BudgetExceeded if a budget of the step or its session is spent."""
    for budget in active.budgets:
        before = active.recorded_spend(budget)
        tokens = before.tokens + active.live_tokens
        if budget.tokens is not None and tokens >= budget.tokens:
            raise BudgetExceeded(budget, f"{tokens:,} tokens")
        if budget.usd is not None:
            unpriced = before.unpriced | {m for m in active.live_models if m not in before.prices}
            if model is not None and model not in before.prices:
                unpriced.add(model)
            if unpriced:
                raise StepError(f"the dollar budget of {budget.scope} ({budget.where}) cannot be checked: no USD "
                                f"price for {', '.join(sorted(unpriced))}; set one with %durable prices FILE, or "
                                "use a token budget")
            usd = _spent_usd(before, active)
            if usd >= budget.usd:
                raise BudgetExceeded(budget, f"${usd:,.4f}")


def _spent_usd(before: Spent, active: ActiveStep) -> float:
    """Dollars recorded before this run and spent live in it (models without a USD price count nothing)."""
    return before.usd + sum(_cost(before.prices.get(m, (0.0, 0.0)), u) for m, u in active.live_usage.items())


def _cost(price: tuple[float, float], usage: list[int]) -> float:
    return (usage[0] * price[0] + usage[1] * price[1]) / 1e6


def recorded(store: Any, session: str, step: str | None) -> Spent:
    """What the journal recorded as spent by `session` (by its `step`, if given), with the USD prices."""
    spent = Spent()
    for model, given, output, currency in store.con.execute(
            "SELECT model, input_per_million, output_per_million, currency FROM prices").fetchall():
        if str(currency).upper() == "USD":
            spent.prices[model] = (float(given), float(output))
    where, args = ("session = ?", [session]) if step is None else ("session = ? AND step = ?", [session, step])
    for model, prompt, completion in store.con.execute(
            f"SELECT model, sum(coalesce(prompt_tokens, 0)), sum(coalesce(completion_tokens, 0)) FROM calls "
            f"WHERE kind = 'llm' AND {where} GROUP BY model", args).fetchall():
        spent.tokens += int(prompt) + int(completion)
        if model in spent.prices:
            spent.usd += _cost(spent.prices[model], [int(prompt), int(completion)])
        elif prompt or completion:
            spent.unpriced.add(str(model))
    return spent


def left(active: ActiveStep) -> str | None:
    """What the step summary says of its budgets: what each allows, and what is left."""
    shown = []
    for budget in active.budgets:
        before = active.recorded_spend(budget)
        parts = []
        if budget.tokens is not None:
            parts.append(f"{max(0, budget.tokens - before.tokens - active.live_tokens):,} of {budget.tokens:,} "
                         "tokens left")
        if budget.usd is not None and not before.unpriced:
            usd = _spent_usd(before, active)
            parts.append(f"${max(0.0, budget.usd - usd):,.2f} of ${budget.usd:,.2f} left")
        if parts:
            shown.append(f"budget of {budget.scope}: {', '.join(parts)}")
    return "; ".join(shown) or None
