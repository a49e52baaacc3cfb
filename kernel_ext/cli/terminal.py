"""Tables for a terminal, drawn by rich; plain, stable text where the output goes to a pipe, a log or a notebook.

rich is imported only when a table is drawn: `durable --help` and the commands that print no table do not wait
for it.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

# Wider than any row: a piped row stays one line, whatever terminal the reader has or had.
_UNWRAPPED = 1_000_000


def console(file: TextIO, *, plain: bool = False) -> Console:
    """A rich console on `file`; `plain`: no styles and no width, for text that is read by scripts and logs.

    Session names, queries' values and cells' code are shown as they are: no rich markup, emoji codes or
    highlighting in them. rich itself honours NO_COLOR and TERM=dumb on a terminal.
    """
    from rich.console import Console

    kept = {"markup": False, "emoji": False, "highlight": False}
    if not plain:
        return Console(file=file, **kept)
    # Forced off: FORCE_COLOR or TTY_COMPATIBLE in the environment would otherwise style a pipe.
    return Console(file=file, width=_UNWRAPPED, color_system=None, force_terminal=False, force_jupyter=False,
                   force_interactive=False, **kept)


def table(*columns: str, right: tuple[str, ...] = ()) -> Table:
    """A table without borders, its columns two spaces apart; the `right` columns (numbers) aligned right."""
    from rich.table import Table

    drawn = Table(box=None, pad_edge=False, header_style="bold")
    for name in columns:
        drawn.add_column(name, justify="right" if name in right else "left")
    return drawn


def plain(*shown: Any, file: TextIO | None = None) -> str:
    """What `echo` prints on a pipe: rich renderables and strings as lines without styles or trailing spaces.

    `file` is where the text goes (standard output by default): its encoding decides whether the text may
    use more than ASCII.
    """
    drawn = console(file or sys.stdout, plain=True)
    with drawn.capture() as captured:
        drawn.print(*shown, sep="\n")
    return "\n".join(line.rstrip() for line in captured.get().splitlines())


def echo(*shown: Any, file: TextIO | None = None) -> None:
    """Print tables and lines: styled on a terminal, plain text (`plain`) anywhere else."""
    file = file or sys.stdout
    if file.isatty():
        console(file).print(*shown, sep="\n")
    else:
        print(plain(*shown, file=file), file=file)
