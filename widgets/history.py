"""The history widget: the session's totals and what replay saved, a legend, and each step's calls as
bars on the step's timeline. A call's name and its bar are buttons; the call selected opens under its
row onto its request and response, as a conversation. Where widgets cannot render, the same output
carries the HTML picture (kernel_ext.history.html) with every call's request and response.

A long session reads by its turns and its exceptions: within a step, each model call carries its turn
and the calls it led to sit indented under it; the steps that finished start closed, those that failed,
wait or hold a call in doubt start open, as does the latest. Filters by kind and status, and a search
through what calls asked and answered, show only the calls that match, in their steps.

Plain ipywidgets (buttons, boxes, HTML) and one scoped <style>: nothing to build or fetch, so it renders
alike in JupyterLab, Notebook 7 and VS Code.
"""

from __future__ import annotations

from typing import Any

import ipywidgets as w
from ipywidgets.widgets.widget_string import HTMLStyle

from journal import Journal, JournalError
from kernel_ext.errors import StepError
from kernel_ext.history import CallView, SessionHistory, StepView, history_text
from kernel_ext.history import html as picture
from kernel_ext.history.browse import KINDS, MIN_QUERY, STANDINGS, Filter, Place, opened, places, words
from kernel_ext.history.detail import all_details, call_detail, details_of
from kernel_ext.history.layout import Bar, step_track

_PROMPT = ("<div class='dk-prompt' style='opacity:.75;margin-top:6px'>select a call (its name or its bar) "
           "to see its request and response</div>")
_FALLBACK_DETAILS = 300  # calls whose request and response go into the HTML rendering too
_OPEN_CALLS = 150  # rows drawn at once; steps past them open (and are built) on a click
_SEARCH_CALLS = 600  # calls whose request and response one search reads at most: the latest drawn
_BAR_MIN = "26px"  # wide enough for a two-digit number
_KIND_TIPS = {"all": "every call", "model": "model calls", "tool": "tool calls", "approval": "approvals",
              "value": "recorded values: now(), random(), uuid(), sleep()"}

# Buttons restyled as list rows and timeline bars. Scoped to the view's class; colours are the call's
# own (set on each bar) or tints over the theme's text colour, so light and dark themes both read.
# A row under a model call is indented as far as the model call's turn mark reaches, plus a guide.
_CSS = """<style>
.dk-history button.dk-label { background: transparent; color: inherit; text-align: left; box-shadow: none;
  height: 22px; line-height: 22px; padding: 0 6px; font-size: 12px; border-radius: 4px; }
.dk-history button.dk-label:hover { background: rgba(128,128,128,.16); }
.dk-history button.dk-label.dk-selected { background: rgba(37,99,235,.2); font-weight: 600; }
.dk-history button.dk-label.dk-indent { padding-left: calc(MARK + 6px); }
.dk-history button.dk-label.dk-under::before { content: "└ "; opacity: .45; }
.dk-history button.dk-bar { height: 18px; line-height: 18px; padding: 0 3px; font-size: 11px; border-radius: 3px;
  box-shadow: none; }
.dk-history button.dk-bar.dk-selected { outline: 2px solid currentColor; outline-offset: 1px;
  box-shadow: 0 0 0 3px rgba(37,99,235,.45); }
.dk-history .dk-track { background: rgba(128,128,128,.15); border-radius: 3px; height: 18px; }
.dk-history button.dk-toggle { background: transparent; color: inherit; box-shadow: none; padding: 0; }
.dk-history .dk-controls .widget-toggle-button { font-size: 12px; height: 24px; line-height: 24px; padding: 0 8px; }
</style>""".replace("MARK", picture.MARK_WIDTH)


class HistoryView(w.VBox):
    """`%durable history` as a widget: a page of a session, its filters and search, a call's detail on a click."""

    def __init__(self, journal: Journal, session_history: SessionHistory) -> None:
        self.journal, self.history = journal, session_history
        self.detail = w.HTML(layout=w.Layout(margin="2px 0 10px 24px"), _dom_classes=("dk-detail-panel",))
        self.prompt = w.HTML(_PROMPT)
        self.selected: CallRow | None = None
        # Shared by every row (one widget model each, not one per call): the rows' layouts, a style per shade.
        self.bar_styles = {shade: w.ButtonStyle(button_color=colour, text_color="white", font_weight="bold")
                           for shade, colour in picture.COLOURS.items()}
        self.styles = {"button": w.ButtonStyle(), "html": HTMLStyle()}
        self.layouts = {"label": w.Layout(width=picture.LABEL_WIDTH, margin="0"),
                        "lead": w.Layout(width=f"calc({picture.LABEL_WIDTH} - {picture.MARK_WIDTH})", margin="0"),
                        "mark": w.Layout(width=picture.MARK_WIDTH, margin="0", overflow="hidden"),
                        "figures": w.Layout(width=picture.FIGURES_WIDTH, margin="0 0 0 8px", overflow="hidden"),
                        "track": w.Layout(flex="1 1 auto", margin="2px 0", overflow="visible"),
                        "line": w.Layout(align_items="center", width="100%", margin="0"),
                        "row": w.Layout(width="100%", margin="0"),
                        "title": w.Layout(align_items="center"),
                        "toggle": w.Layout(width="24px", height="22px", margin="0"),
                        "axis": w.Layout(margin="0 0 0 24px"),
                        "calls": w.Layout(width="auto", margin="0 0 0 24px")}
        self.filter = Filter()
        self.words: dict[int, str] = {}  # what a search reads of each call, read from the journal once
        self.controls = self._controls()
        steps = session_history.steps
        self.sections = [StepSection(self, step, open_=open_) for step, open_ in
                         zip(steps, opened(steps, whole=picture.WHOLE, budget=_OPEN_CALLS, rows=picture.MAX_ROWS),
                             strict=True)]
        # A long session opens on its latest page (kernel_ext.history.view); earlier pages on a click.
        self.page = session_history
        self.earlier = w.Button(layout=w.Layout(width="auto", margin="6px 0 0 0"), _dom_classes=("dk-earlier",))
        self.earlier.on_click(lambda _: self.show_earlier())
        self._label_earlier()
        self.head = w.HTML(_CSS + picture.header_html(session_history) + picture.legend_html())
        super().__init__(layout=w.Layout(width="100%"), _dom_classes=("dk-history",))
        self._lay_out()
        self._count()

    def _controls(self) -> w.Box:
        """The filters by kind and status, the search box, and the line that says what they let through."""
        toggles = {"style": {"button_width": "auto"}, "layout": w.Layout(width="auto", margin="0 16px 0 0")}
        kinds = ["all", *KINDS]
        self.kind = w.ToggleButtons(options=kinds, value="all", description="kind",
                                    tooltips=[_KIND_TIPS.get(kind, "") for kind in kinds], _dom_classes=("dk-kind",),
                                    **toggles)
        self.status = w.ToggleButtons(options=[("all", "all"), *((label, key) for key, label in STANDINGS.items())],
                                      value="all", description="status", _dom_classes=("dk-status",), **toggles)
        # Read when Enter is pressed or the box is left: a search reads the calls' requests from the journal.
        self.query = w.Text(placeholder="search prompts and results, then Enter", continuous_update=False,
                            description="search", layout=w.Layout(width="380px"), _dom_classes=("dk-search",))
        self.counts = w.HTML(layout=w.Layout(margin="0 0 0 12px"), _dom_classes=("dk-count",))
        for control in (self.kind, self.status, self.query):
            control.observe(lambda _: self.refilter(), names="value")
        wrap = w.Layout(flex_flow="row wrap", align_items="center", width="100%")
        return w.VBox([w.HBox([self.kind, self.status], layout=wrap),
                       w.HBox([self.query, self.counts], layout=wrap)],
                      layout=w.Layout(margin="0 0 4px 0"), _dom_classes=("dk-controls",))

    def _lay_out(self) -> None:
        self.children = (self.head, self.controls, self.earlier, *self.sections, self.prompt)

    def _label_earlier(self) -> None:
        hidden = len(self.page.earlier)
        self.earlier.description = f"▴ show earlier steps ({hidden:,} not shown)"
        self.earlier.layout.display = "flex" if hidden else "none"

    def show_earlier(self) -> None:
        """Draw the page before the earliest drawn, above it; only its steps worth a look open."""
        page = self.page.earlier_page()
        if page is None:
            return
        self.page = page
        wanted = opened(page.steps, budget=_OPEN_CALLS, rows=picture.MAX_ROWS, latest=False)
        self.sections[:0] = [StepSection(self, step, open_=open_) for step, open_ in zip(page.steps, wanted,
                                                                                        strict=True)]
        self._label_earlier()
        self._lay_out()
        self.refilter()

    def refilter(self) -> None:
        """Show the calls the filters and the search let through, in their steps; say how many."""
        query = self.query.value.strip()
        found, note = (None, "") if len(query) < MIN_QUERY else self._search(query)
        self.filter = Filter(self.kind.value, self.status.value, found)
        if not self.filter.active:
            for section in self.sections:
                section.apply(None, section.chosen)
        else:
            # The matches of the latest steps open first, within the rows drawn at once; the others on a click.
            budget, first = _OPEN_CALLS, True
            for section in reversed(self.sections):
                matching = self.filter.of(section.step.calls)
                rows = min(len(matching), picture.MAX_ROWS)
                open_ = bool(matching) and (first or rows <= budget)
                if open_:
                    budget, first = max(0, budget - rows), False
                section.apply(matching, open_)
        self._count(query, note)

    def _search(self, query: str) -> tuple[frozenset[int], str]:
        """The calls drawn whose request or response holds `query` (any case), and what was left unsearched.

        Reads the requests and responses once (together, in a few queries), of the latest calls drawn only:
        a search costs no more than opening a page's calls.
        """
        drawn = [c for s in self.sections for c in s.step.calls[:picture.MAX_ROWS]]
        searched = drawn[-_SEARCH_CALLS:]
        missing = [c for c in searched if c.id not in self.words]
        if missing:
            try:
                details = details_of(self.journal, missing)
            except (JournalError, StepError) as exc:  # a search has no traceback to show: say it where it was asked
                return frozenset(), f"could not read the calls: {exc}"
            self.words.update({c.id: words(c, details.get(c.id)) for c in missing})
        needle = query.lower()
        found = frozenset(c.id for c in searched if needle in self.words.get(c.id, ""))
        left = []
        if len(searched) < len(drawn):
            left.append(f"searched the latest {len(searched):,} of the {len(drawn):,} calls drawn")
        unlisted = sum(max(0, len(s.step.calls) - picture.MAX_ROWS) for s in self.sections)
        if unlisted:
            left.append(f"{unlisted:,} calls past the first {picture.MAX_ROWS} of a step not searched")
        if self.page.earlier:
            left.append(f"{len(self.page.earlier):,} earlier steps not searched (▴ show earlier steps)")
        return found, "; ".join(left)

    def _count(self, query: str = "", note: str = "") -> None:
        sections = self.sections
        calls = sum(len(s.step.calls) for s in sections)
        steps = f"{len(sections):,} step{'s' if len(sections) != 1 else ''} drawn"
        if not self.filter.active:
            text = f"{calls:,} calls in the {steps}"
            if any(not s.is_open for s in sections if s.step.calls):
                text += " · finished steps are closed: ▸ opens one"
            if 0 < len(query) < MIN_QUERY:
                text += f" · a search needs {MIN_QUERY} characters or more"
        else:
            matching = [s for s in sections if s.matching]
            matched = sum(len(s.matching or ()) for s in sections)
            text = (f"{matched:,} of {calls:,} calls match, in {len(matching):,} of the {steps}"
                    if matched else f"no call of the {calls:,} in the {steps} matches")
            if self.filter.found is not None:
                text = f"“{query}”: {text}"
            closed = sum(1 for s in matching if not s.is_open)
            if closed:
                text += f" · {closed:,} of those steps closed: ▸ opens one"
        if note:
            text += f" · {note}"
        self.counts.value = f"<span style='font-size:12px;opacity:.85'>{picture.esc(text)}</span>"

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
    """A step's title, and its time axis over its calls' rows; the axis and rows are built when first shown.

    Every widget is a model the front end keeps in step: those alike share their layout and style, and a
    filter's count of matches goes into the title's own HTML."""

    def __init__(self, view: HistoryView, step: StepView, *, open_: bool) -> None:
        self.view, self.step = view, step
        self.track = step_track(step.calls)
        self.places = places(step.calls)
        self.chosen = open_  # open or closed, at first or by a click, while no filter is set
        self.matching: list[CallView] | None = None  # the calls a filter lets through; None: no filter
        self.rows: dict[int, CallRow] = {}  # built once each, shown as the filters ask
        self._drawn: list[int] | None = None  # the ids the rows drawn are of
        self.toggle = w.Button(tooltip="show or hide the step's calls", layout=view.layouts["toggle"],
                               style=view.styles["button"], _dom_classes=("dk-toggle",))
        self.toggle.on_click(lambda _: self.flip())
        self.title = w.HTML(picture.step_title_html(step), style=view.styles["html"])
        self.calls = w.VBox(layout=view.layouts["calls"])
        self.body = w.VBox([self.calls], layout=w.Layout(width="100%"))
        children: list[w.Widget] = [w.HBox([self.toggle, self.title], layout=view.layouts["title"]), self.body]
        if not step.calls:
            children.append(w.HTML("<div style='opacity:.75;margin-left:24px'>no calls</div>",
                                   style=view.styles["html"]))
        super().__init__(children, layout=w.Layout(margin="8px 0 0 0", width="100%"), _dom_classes=("dk-step",))
        self.show(open_)

    @property
    def is_open(self) -> bool:
        return self.body.layout.display != "none"

    def show(self, open_: bool) -> None:
        if open_:
            self._build()
        self.body.layout.display = "flex" if open_ else "none"
        self.toggle.description = "▾" if open_ else "▸"

    def flip(self) -> None:
        opening = not self.is_open
        if self.matching is None:
            self.chosen = opening
        self.show(opening)

    def apply(self, matching: list[CallView] | None, open_: bool) -> None:
        """Show only `matching` (None: every call), open or closed; a step nothing matches is hidden."""
        self.matching = matching
        self.layout.display = "none" if matching is not None and not matching else "flex"
        title = picture.step_title_html(self.step)
        if matching is not None:
            title = (f"<div style='display:flex;align-items:baseline;gap:8px'>{title}<span class='dk-matches' "
                     f"style='font-size:12px;color:#2563eb;white-space:nowrap'>{len(matching):,} of "
                     f"{len(self.step.calls):,} calls match</span></div>")
        self.title.value = title
        self.show(open_)

    def _build(self) -> None:
        listed = self.step.calls if self.matching is None else self.matching
        shown = listed[:picture.MAX_ROWS]
        ids = [c.id for c in shown]
        if ids == self._drawn:
            return
        if self.step.calls and len(self.body.children) == 1:  # the axis, once the step is first shown
            axis = w.HTML(picture.axis_html(self.track), layout=self.view.layouts["axis"],
                          style=self.view.styles["html"])
            self.body.children = (axis, self.calls)
        rows: list[w.Widget] = []
        for call in shown:
            row = self.rows.get(call.id)
            if row is None:
                row = self.rows[call.id] = CallRow(self.view, call, self.track.bars[call.id], self.places[call.id])
            rows.append(row)
        if len(listed) > picture.MAX_ROWS:
            rows.append(w.HTML(f"<div style='opacity:.75'>… {len(listed) - picture.MAX_ROWS} more calls: "
                               f"durable show {picture.esc(self.view.history.session)}, or %durable sql</div>"))
        self.calls.children = tuple(rows)
        self._drawn = ids


class CallRow(w.VBox):
    """One call: its number and name, its bar on the step's timeline, its figures. Both buttons select it.

    In a step with turns a model call's row begins with its turn, and the calls after it are indented."""

    def __init__(self, view: HistoryView, call: CallView, bar: Bar, place: Place | None = None) -> None:
        self.call, self.place = call, place
        shade = f"dk-{call.shade}"
        leads = place is not None and place.turned and place.leads
        classes = ["dk-label", shade]
        if place is not None and place.turned and not place.leads:
            classes.append("dk-indent")
        if place is not None and place.under:
            classes.append("dk-under")
        self.label = w.Button(description=f"{call.number} · {call.what}", tooltip=call.label(),
                              layout=view.layouts["lead" if leads else "label"], style=view.styles["button"],
                              _dom_classes=tuple(classes))
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
                         layout=view.layouts["figures"], style=view.styles["html"])
        mark = ([w.HTML(picture.turn_mark_html(place), layout=view.layouts["mark"], style=view.styles["html"])]
                if leads and place else [])
        self.line = w.HBox([*mark, self.label, track, figures], layout=view.layouts["line"])
        super().__init__([self.line], layout=view.layouts["row"], _dom_classes=("dk-call",))

    def mark(self, selected: bool) -> None:
        for button in (self.label, self.bar):
            if selected:
                button.add_class("dk-selected")
            else:
                button.remove_class("dk-selected")
        if not selected:
            self.children = (self.line,)
