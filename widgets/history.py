"""The history widget: the session's totals and what replay saved, a legend, and each step's calls as
bars on the step's timeline. A call's name and its bar are buttons; the call selected opens under its
row onto its request and response, as a conversation. Where widgets cannot render, the same output
carries the HTML picture (kernel_ext.history.html) with every call's request and response.

Plain ipywidgets (buttons, boxes, HTML) and one scoped <style>: nothing to build or fetch, so it renders
alike in JupyterLab, Notebook 7 and VS Code.
"""

from __future__ import annotations

from typing import Any

import ipywidgets as w

from journal import Journal, JournalError
from kernel_ext.errors import StepError
from kernel_ext.history import CallView, SessionHistory, StepView, history_text
from kernel_ext.history import html as picture
from kernel_ext.history.detail import all_details, call_detail
from kernel_ext.history.layout import Bar, step_track

_PROMPT = ("<div class='dk-prompt' style='opacity:.75;margin-top:6px'>select a call (its name or its bar) "
           "to see its request and response</div>")
_FALLBACK_DETAILS = 300  # calls whose request and response go into the HTML rendering too
_OPEN_CALLS = 150  # calls drawn at once; steps past them open (and are built) on a click
_BAR_MIN = "26px"  # wide enough for a two-digit number

# Buttons restyled as list rows and timeline bars. Scoped to the view's class; colours are the call's
# own (set on each bar) or tints over the theme's text colour, so light and dark themes both read.
_CSS = """<style>
.dk-history button.dk-label { background: transparent; color: inherit; text-align: left; box-shadow: none;
  height: 22px; line-height: 22px; padding: 0 6px; font-size: 12px; border-radius: 4px; }
.dk-history button.dk-label:hover { background: rgba(128,128,128,.16); }
.dk-history button.dk-label.dk-selected { background: rgba(37,99,235,.2); font-weight: 600; }
.dk-history button.dk-bar { height: 18px; line-height: 18px; padding: 0 3px; font-size: 11px; border-radius: 3px;
  box-shadow: none; }
.dk-history button.dk-bar.dk-selected { outline: 2px solid currentColor; outline-offset: 1px;
  box-shadow: 0 0 0 3px rgba(37,99,235,.45); }
.dk-history .dk-track { background: rgba(128,128,128,.15); border-radius: 3px; height: 18px; }
.dk-history button.dk-toggle { background: transparent; color: inherit; box-shadow: none; padding: 0; }
</style>"""


class HistoryView(w.VBox):
    def __init__(self, journal: Journal, session_history: SessionHistory) -> None:
        self.journal, self.history = journal, session_history
        self.detail = w.HTML(layout=w.Layout(margin="2px 0 10px 24px"), _dom_classes=("dk-detail-panel",))
        self.prompt = w.HTML(_PROMPT)
        self.selected: CallRow | None = None
        # Shared by every row (one widget model each, not one per call): the rows' layouts, a style per shade.
        self.bar_styles = {shade: w.ButtonStyle(button_color=colour, text_color="white", font_weight="bold")
                           for shade, colour in picture.COLOURS.items()}
        self.layouts = {"label": w.Layout(width=picture.LABEL_WIDTH, margin="0"),
                        "figures": w.Layout(width=picture.FIGURES_WIDTH, margin="0 0 0 8px", overflow="hidden"),
                        "track": w.Layout(flex="1 1 auto", margin="2px 0", overflow="visible"),
                        "line": w.Layout(align_items="center", width="100%", margin="0")}
        sections, budget = [], _OPEN_CALLS
        for step in session_history.steps:
            sections.append(StepSection(self, step, open_=len(step.calls) <= budget))
            budget -= len(step.calls)
        # A long session opens on its latest page (kernel_ext.history.view); earlier pages on a click.
        self.page = session_history
        self.earlier = w.Button(layout=w.Layout(width="auto", margin="6px 0 0 0"), _dom_classes=("dk-earlier",))
        self.earlier.on_click(lambda _: self.show_earlier())
        self._label_earlier()
        head = w.HTML(_CSS + picture.header_html(session_history) + picture.legend_html())
        super().__init__([head, self.earlier, *sections, self.prompt], layout=w.Layout(width="100%"),
                         _dom_classes=("dk-history",))

    def _label_earlier(self) -> None:
        hidden = len(self.page.earlier)
        self.earlier.description = f"▴ show earlier steps ({hidden:,} not shown)"
        self.earlier.layout.display = "flex" if hidden else "none"

    def show_earlier(self) -> None:
        """Draw the page before the earliest drawn, above it; its steps closed until opened."""
        page = self.page.earlier_page()
        if page is None:
            return
        self.page = page
        sections = [StepSection(self, step, open_=False) for step in page.steps]
        head, button, *rest = self.children
        self.children = (head, button, *sections, *rest)
        self._label_earlier()

    def select(self, row: CallRow) -> None:
        """Show one call's request and response under its row; one call at a time."""
        if self.selected is not None:
            self.selected.mark(False)
        self.selected = row
        row.mark(True)
        try:
            self.detail.value = picture.detail_html(call_detail(self.journal, row.call))
        except (JournalError, StepError) as exc:  # a click has no traceback to show: say it where it was asked
            self.detail.value = f"<div style='color:#b91c1c'>{picture.esc(row.call.ref)}: {picture.esc(exc)}</div>"
        row.children = (row.line, self.detail)
        self.prompt.value = ""

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        bundle = super()._repr_mimebundle_(**kwargs) or {}
        calls = self.history.calls
        details = all_details(self.journal, self.history) if calls <= _FALLBACK_DETAILS else {}
        bundle["text/html"] = picture.history_html(self.history, details)
        bundle["text/plain"] = history_text(self.history)
        return bundle


class StepSection(w.VBox):
    """A step's title and time axis over its calls' rows; built when first opened."""

    def __init__(self, view: HistoryView, step: StepView, *, open_: bool) -> None:
        self.view, self.step = view, step
        self.track = step_track(step.calls)
        self.toggle = w.Button(description="▾" if open_ else "▸", tooltip="show or hide the step's calls",
                               layout=w.Layout(width="24px", height="22px", margin="0"), _dom_classes=("dk-toggle",))
        self.toggle.on_click(lambda _: self.flip())
        self.calls = w.VBox(layout=w.Layout(width="100%", display="flex" if open_ else "none"))
        title = w.HBox([self.toggle, w.HTML(picture.step_title_html(step))], layout=w.Layout(align_items="center"))
        children: list[w.Widget] = [title]
        if step.calls:
            children.append(w.HTML(picture.axis_html(self.track), layout=w.Layout(margin="0 0 0 24px")))
        else:
            children.append(w.HTML("<div style='opacity:.75;margin-left:24px'>no calls</div>"))
        super().__init__([*children, self.calls], layout=w.Layout(margin="8px 0 0 0", width="100%"))
        if open_:
            self._build()

    def _build(self) -> None:
        shown = self.step.calls[:picture.MAX_ROWS]
        rows: list[w.Widget] = [CallRow(self.view, c, self.track.bars[c.id]) for c in shown]
        if len(self.step.calls) > picture.MAX_ROWS:
            rows.append(w.HTML(f"<div style='opacity:.75'>… {len(self.step.calls) - picture.MAX_ROWS} more calls: "
                               f"durable show {picture.esc(self.view.history.session)}, or %durable sql</div>"))
        self.calls.children = tuple(rows)

    def flip(self) -> None:
        opening = self.calls.layout.display == "none"
        if opening and not self.calls.children:
            self._build()
        self.calls.layout.display = "flex" if opening else "none"
        self.toggle.description = "▾" if opening else "▸"


class CallRow(w.VBox):
    """One call: its number and name, its bar on the step's timeline, its figures. Both buttons select it."""

    def __init__(self, view: HistoryView, call: CallView, bar: Bar) -> None:
        self.call = call
        shade = f"dk-{call.shade}"
        self.label = w.Button(description=f"{call.number} · {call.what}", tooltip=call.label(),
                              layout=view.layouts["label"], _dom_classes=("dk-label", shade))
        left = f"{bar.left * 100:.2f}%"
        self.bar = w.Button(description=str(call.seq), tooltip=f"{call.ref} · {call.label()}",
                            style=view.bar_styles[call.shade], _dom_classes=("dk-bar", shade),
                            layout=w.Layout(width=f"{bar.width * 100:.2f}%", min_width=_BAR_MIN,
                                            margin=f"0 0 0 min({left}, calc(100% - {_BAR_MIN}))", height="18px"))

        def select(_: w.Button) -> None:
            view.select(self)

        self.label.on_click(select)
        self.bar.on_click(select)
        track = w.Box([self.bar], layout=view.layouts["track"], _dom_classes=("dk-track",))
        text = picture.esc(picture.figures_text(call))
        figures = w.HTML(f"<span style='font-size:11px;opacity:.75;white-space:nowrap'>{text}</span>",
                         layout=view.layouts["figures"])
        self.line = w.HBox([self.label, track, figures], layout=view.layouts["line"])
        super().__init__([self.line], layout=w.Layout(width="100%", margin="0"), _dom_classes=("dk-call",))

    def mark(self, selected: bool) -> None:
        for button in (self.label, self.bar):
            if selected:
                button.add_class("dk-selected")
            else:
                button.remove_class("dk-selected")
        if not selected:
            self.children = (self.line,)
