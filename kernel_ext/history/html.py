"""The history as a picture in plain HTML: totals and what replay saved, a legend, each step's calls as
bars on its timeline, and a call's request and response as chat bubbles.

Inline styles only, no script and no stylesheet: the same markup renders in an nbclient output, on a
code host, in a notebook opened untrusted (JupyterLab's sanitizer keeps these properties), and inside
the history widget. Colours are tints over the theme's own text colour, readable on light and dark themes.
"""

from __future__ import annotations

import html
import json
import shlex

from .browse import Place, opened, places
from .detail import CallDetail, Message
from .layout import Track, step_track
from .model import PAGE_ROWS, SHADES, CallView, SessionHistory, StepView, duration, money

COLOURS = {"live": "#2563eb", "replayed": "#16a34a", "person": "#d97706", "failed": "#dc2626", "earlier": "#6b7280"}
SHORT = {"live": "live", "replayed": "replayed", "person": "waiting for a person", "failed": "failed / in doubt",
         "earlier": "earlier record"}
_NUMBER_WIDTH = 0.05  # of a track: a bar narrower than its number is drawn wider, and kept inside the track
MAX_ROWS = PAGE_ROWS  # calls drawn per step; the journal (durable show, SQL) has the rest
LABEL_WIDTH, FIGURES_WIDTH = "34%", "24%"  # of a call's row: its name, its bar's track, its figures
MARK_WIDTH = "52px"  # of a row's name, in a step with turns: a model call's "turn N", else the indent
WHOLE = 30  # calls: a history this short opens every step; a longer one opens those worth a look

FONT = "font-family:var(--jp-ui-font-family,system-ui,sans-serif);font-size:13px;line-height:1.4"
_MUTED = "opacity:.75"
_SMALL = "font-size:11px;opacity:.75"
_PRE = ("margin:2px 0 6px;padding:6px 8px;border-radius:4px;background:rgba(128,128,128,.12);white-space:pre-wrap;"
        "font-family:var(--jp-code-font-family,monospace);font-size:12px;overflow-x:auto")


def esc(text: object) -> str:
    return html.escape(str(text))


def swatch(shade: str, size: int = 12) -> str:
    return (f"<span style='display:inline-block;width:{size}px;height:{size}px;border-radius:3px;"
            f"background:{COLOURS[shade]};vertical-align:middle'></span>")


def legend_html() -> str:
    items = "".join(f"<span title='{esc(SHADES[s])}' style='white-space:nowrap'>{swatch(s)} {esc(SHORT[s])}</span>"
                    for s in COLOURS)
    return (f"<div class='dk-legend' style='{FONT};display:flex;flex-wrap:wrap;gap:4px 14px;margin:4px 0 8px;"
            f"font-size:12px'><span style='{_MUTED}'>legend:</span>{items}</div>")


def _card(title: str, value: str, note: str, accent: str | None = None, css: str = "") -> str:
    edge = f"border-left:4px solid {accent};" if accent else ""
    return (f"<div class='{css}' style='border:1px solid rgba(128,128,128,.35);{edge}border-radius:6px;"
            f"padding:4px 10px;min-width:130px'><div style='{_SMALL}'>{esc(title)}</div>"
            f"<div style='font-size:16px;font-weight:600'>{esc(value)}</div>"
            f"<div style='{_SMALL}'>{esc(note)}</div></div>")


def header_html(history: SessionHistory) -> str:
    """The session's totals and what replay saved, as a row of figures under its title."""
    saved, overall = history.saved, history.overall
    cost = money(history.cost, history.currency) if history.cost is not None else "no price set"
    cards = [
        _card("calls", f"{history.calls:,}", f"last runs: {overall.live:,} live, {overall.replayed:,} replayed"),
        _card("tokens", f"{history.tokens:,}", "prompt + completion, all calls"),
        _card("cost", cost, "at your prices" if history.cost is not None else "%durable prices FILE"),
        _card("replay saved", f"{saved.tokens:,} tokens",
              f"{saved.cost_text()} · {duration(saved.model_seconds)} of model time · "
              f"{saved.calls:,} calls not made again", COLOURS["replayed"], "dk-saved"),
    ]
    note = f"<div class='dk-left-out' style='{_SMALL}'>{esc(history.note())}</div>" if history.left_out else ""
    return (f"<div class='dk-head' style='{FONT}'><div style='font-weight:600;font-size:14px'>"
            f"{esc(history.totals())}</div>"
            f"<div style='display:flex;flex-wrap:wrap;gap:8px;margin:6px 0'>{''.join(cards)}</div>{note}</div>")


def step_title_html(step: StepView) -> str:
    mark, _, rest = step.label().partition(" · ")
    return (f"<div class='dk-step-head' style='{FONT}'><b>{esc(mark)}</b> "
            f"<span style='{_MUTED}'>{esc(rest)}</span></div>")


def axis_html(track: Track) -> str:
    """The time axis a step's bars are drawn on, lined up with the bars' track, with its shortened gaps."""
    breaks = "".join(
        f"<span title='{esc(duration(gap))} without calls, drawn shortened' style='position:absolute;"
        f"left:{where * 100:.2f}%;transform:translateX(-50%);white-space:nowrap'>"
        f"⋯ {esc(duration(gap))} later ⋯</span>"
        for where, gap in track.breaks)
    return (f"<div style='{FONT};display:flex;gap:8px;{_SMALL}'><span style='width:{LABEL_WIDTH}'></span>"
            f"<span style='flex:1;position:relative;display:flex;justify-content:space-between'>"
            f"<span>0 s</span>{breaks}<span>{esc(duration(track.seconds))}</span></span>"
            f"<span style='width:{FIGURES_WIDTH}'></span></div>")


def bar_html(call: CallView, track: Track) -> str:
    """The call's bar on its step's track, with its number; margins, not positioning, so sanitizers keep it."""
    bar = track.bars[call.id]
    left = min(bar.left, 1 - max(bar.width, _NUMBER_WIDTH))  # room for the number at the track's end
    return (f"<span style='flex:1;display:block;height:16px;background:rgba(128,128,128,.15);border-radius:3px'>"
            f"<span title='{esc(call.label())}' class='dk-bar' style='display:block;height:100%;"
            f"margin-left:{left * 100:.2f}%;width:{bar.width * 100:.2f}%;min-width:18px;border-radius:3px;"
            f"background:{COLOURS[call.shade]};color:#fff;font-size:10px;font-weight:600;line-height:16px;"
            f"text-align:center;overflow:hidden'>{call.seq}</span></span>")


def figures_text(call: CallView) -> str:
    return " · ".join(call.figures()) or call.state


def turn_mark_html(place: Place) -> str:
    """A model call's turn, on its row: "turn 3" (or "earlier" for a model call the last run did not use)."""
    tint = "rgba(128,128,128,.5)" if place.earlier else COLOURS["live"]
    return (f"<span class='dk-turn' title='a turn: this model call and the calls after it until the next one' "
            f"style='display:inline-block;font-size:10px;line-height:14px;padding:0 5px;border-radius:7px;"
            f"border:1px solid {tint};white-space:nowrap;{_MUTED if place.earlier else ''}'>{esc(place.mark)}</span>")


def _place_html(place: Place | None) -> str:
    """Before a row's name: its turn's mark, the indent of a call under a model call, or nothing."""
    if place is None or not place.turned:
        return ""
    inner = turn_mark_html(place) if place.leads else ""
    guide = "<span style='opacity:.45'>└ </span>" if place.under else ""
    return f"<span style='display:inline-block;width:{MARK_WIDTH}'>{inner}</span>{guide}"


def call_row_html(call: CallView, track: Track, inner: str, place: Place | None = None) -> str:
    """One call: its number and name, its bar, its figures; opens onto its request and response. `place`:
    where it stands in its step's turns (a model call carries its turn, the calls after it are indented)."""
    summary = (f"<summary style='display:flex;align-items:center;gap:8px;cursor:pointer;padding:1px 0'>"
               f"<span style='width:{LABEL_WIDTH};white-space:nowrap;overflow:hidden;text-overflow:ellipsis'>"
               f"{_place_html(place)}▸ <b>{esc(call.number)}</b> · {esc(call.what)}</span>{bar_html(call, track)}"
               f"<span style='width:{FIGURES_WIDTH};{_SMALL};white-space:nowrap;overflow:hidden;"
               f"text-overflow:ellipsis'>{esc(figures_text(call))}</span></summary>")
    body = f"<div style='margin:4px 0 10px 14px'>{inner}</div>" if inner else ""
    return f"<details class='dk-call'>{summary}{body}</details>"


# -- one call as a conversation -------------------------------------------------------------------

_BUBBLES = {  # role: (side, tint)
    "user": ("flex-end", "rgba(37,99,235,.14)"),
    "assistant": ("flex-start", "rgba(128,128,128,.14)"),
    "tool result": ("flex-start", "rgba(22,163,74,.14)"),
}


def detail_head_html(detail: CallDetail) -> str:
    return (f"<div class='dk-detail-head' style='display:flex;flex-wrap:wrap;align-items:baseline;gap:4px 10px;"
            f"margin-bottom:4px'>{swatch(detail.shade)}<b style='font-size:14px'>{esc(detail.title)}</b>"
            f"<span style='{_MUTED}'>{esc(detail.subtitle)}</span>"
            f"<span style='{_SMALL}'>journal id {detail.journal_id}</span></div>")


def _bubble(message: Message) -> str:
    role = "assistant" if message.role == "model" else message.role  # gemini's name for it
    side, tint = _BUBBLES.get(role, ("stretch", "transparent"))
    who = role + (" · reply" if message.reply else "") + (f" · to {message.about}" if message.about else "")
    edge = f"border-left:3px solid {COLOURS['replayed']};" if message.reply else ""
    border = "1px dashed rgba(128,128,128,.6)" if side == "stretch" else "1px solid rgba(128,128,128,.2)"
    text = _json_or_text(message.text) if role == "tool result" else (
        f"<div style='white-space:pre-wrap'>{esc(message.text)}</div>" if message.text else "")
    asked = "".join(f"<div style='{_SMALL};margin-top:4px'>asks to run <b>{esc(name)}</b></div>"
                    f"<pre style='{_PRE}'>{esc(arguments)}</pre>" for name, arguments in message.tool_calls)
    return (f"<div style='display:flex;justify-content:{side};margin:4px 0'>"
            f"<div class='dk-bubble' style='max-width:85%;padding:5px 10px;border-radius:10px;background:{tint};"
            f"border:{border};{edge}'><div style='{_SMALL};margin-bottom:2px'>{esc(who)}</div>{text}{asked}"
            "</div></div>")


def _json_or_text(text: str) -> str:
    try:
        text = json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    except ValueError:
        return f"<div style='white-space:pre-wrap'>{esc(text)}</div>"
    return f"<pre style='{_PRE}'>{esc(text)}</pre>"


def detail_html(detail: CallDetail) -> str:
    parts = [detail_head_html(detail)]
    if detail.omitted:
        parts.append(f"<div style='{_SMALL}'>… {detail.omitted} earlier messages not shown</div>")
    parts += [_bubble(m) for m in detail.conversation]
    for heading, text in detail.sections:
        parts.append(f"<div style='{_SMALL};margin-top:4px'>{esc(heading)}</div><pre style='{_PRE}'>{esc(text)}</pre>")
    return f"<div class='dk-detail' style='{FONT}'>{''.join(parts)}</div>"


def history_html(history: SessionHistory, details: dict[int, CallDetail]) -> str:
    """The picture of the steps given (a page of a long session: its header says what is left out); each
    call opens (a <details>) onto its request and response where given."""
    parts = [f"<div class='durable-history' style='{FONT}'>", header_html(history), legend_html()]
    # A step is a <details> too: a long history opens on the steps worth a look (browse.opened).
    shown = opened(history.steps, whole=WHOLE)
    if not all(shown):
        parts.append(f"<div style='{_SMALL}'>steps that finished are closed: click one to open it</div>")
    for step, open_ in zip(history.steps, shown, strict=True):
        track = step_track(step.calls)
        parts.append(f"<details class='dk-step'{' open' if open_ else ''} style='margin-top:10px'>"
                     f"<summary style='display:flex;gap:6px;align-items:baseline;cursor:pointer'>"
                     f"<span>▸</span>{step_title_html(step)}</summary>")
        if step.calls:
            parts.append(axis_html(track))
        where = places(step.calls)
        for call in step.calls[:MAX_ROWS]:
            inner = detail_html(details[call.id]) if call.id in details else ""
            parts.append(call_row_html(call, track, inner, where[call.id]))
        if len(step.calls) > MAX_ROWS:
            parts.append(f"<div style='{_SMALL}'>… {len(step.calls) - MAX_ROWS:,} more calls: durable show "
                         f"{esc(shlex.quote(history.session))} --step {esc(shlex.quote(step.name))}, "
                         "or %durable sql</div>")
        if not step.calls:
            parts.append(f"<div style='{_SMALL}'>no calls</div>")
        parts.append("</details>")
    parts.append("</div>")
    return "".join(parts)
