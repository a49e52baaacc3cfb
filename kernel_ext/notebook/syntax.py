"""Notebook cells as plain Python, for exported scripts.

A notebook accepts more than Python: magics, `!shell` lines, `obj?`, top-level `await`, and it
shows the value of a cell's last expression. IPython's own input transformer finds that syntax
(it knows about strings and continuation lines, so a `%` inside a string is left alone); what
has a script equivalent is translated here, and the rest becomes a comment saying it was not
run. Nothing a cell did is dropped without a note.
"""

from __future__ import annotations

import ast
import inspect
import io
import json
import tokenize
from collections.abc import Iterator
from dataclasses import dataclass, field

NOT_RUN = "# notebook-only, not run: "
_HINTS = {  # what to do instead, for a few `%durable` commands and installers
    "status": "from a terminal: durable show SESSION",
    "history": "from a terminal: durable show SESSION",
    "approvals": "from a terminal: durable show SESSION",
    "sql": "from a terminal: durable sql QUERY",
    "pip": "install it where the script runs",
    "conda": "install it where the script runs",
}
_BODY_ONLY_CELL_MAGICS = ("time", "capture")  # their body is plain Python and the script runs it
_SHOWN_AS_IS = ("print", "display")  # a last expression calling these shows nothing more


@dataclass
class CellCode:
    """A cell as plain Python, and the lines the script's header needs for it (`import os`, ...)."""

    code: str
    header: list[str] = field(default_factory=list)


def cell_as_python(source: str, *, ipython_syntax: bool = True) -> CellCode:
    """Translate a cell's source into plain Python (top-level `await` stays; see `is_async`).

    `ipython_syntax=False` for a durable step's body, which the kernel compiles as Python as is.
    """
    if ipython_syntax and source.startswith("%%"):
        return _cell_magic(source)
    code = _ipython_transform(source) if ipython_syntax else source
    try:
        tree = ast.parse(code)
    except SyntaxError as exc:
        return CellCode(_commented(source, f"(not valid Python: {exc.msg}, line {exc.lineno})"))
    cell = CellCode(code)
    edits: list[_Edit] = []
    _translate_block(tree.body, code, edits, cell, top=True)
    last = tree.body[-1] if tree.body else None
    if isinstance(last, ast.Expr) and not _uses_ipython(last) and _shows_value(last, code):
        edits.append(_Edit.around(code, last.value, "sys.displayhook(", ")"))
        cell.header.append("import sys")
    cell.code = _apply(code, edits)
    return cell


def is_async(code: str) -> bool:
    """Whether the code awaits at its top level (compiled as IPython does, to be exact)."""
    flags = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
    return bool(compile(code, "<cell>", "exec", flags, dont_inherit=True).co_flags & inspect.CO_COROUTINE)


def has_statements(code: str) -> bool:
    return bool(ast.parse(code).body)


def without_annotations(code: str) -> str:
    """`x: T = v` at the top level becomes `x = v`: an annotated name cannot be declared global."""
    tree = ast.parse(code)
    edits = []
    for node in tree.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            text = f"{node.target.id} = {ast.get_source_segment(code, node.value)}" if node.value else \
                f"# annotation only, dropped in an async step: {ast.get_source_segment(code, node)}"
            edits.append(_Edit.of(code, node, text))
    return _apply(code, edits)


def indent(code: str, prefix: str = "    ") -> str:
    """Indent code, leaving alone the lines inside multi-line strings (indenting would change them)."""
    inside: set[int] = set()
    for token in tokenize.generate_tokens(io.StringIO(code).readline):
        if token.start[0] < token.end[0] and token.type not in (tokenize.NEWLINE, tokenize.NL):
            inside.update(range(token.start[0] + 1, token.end[0] + 1))
    return "\n".join(line if i in inside or not line.strip() else prefix + line
                     for i, line in enumerate(code.split("\n"), start=1))


# -- IPython syntax --------------------------------------------------------------------------------


def _ipython_transform(source: str) -> str:
    from IPython.core.inputtransformer2 import TransformerManager

    return TransformerManager().transform_cell(source)


def _cell_magic(source: str) -> CellCode:
    first, _, body = source.partition("\n")
    name = (first[2:].split() or [""])[0]
    if name in _BODY_ONLY_CELL_MAGICS:
        inner = cell_as_python(body)
        note = f"# {first.strip()}: the body runs; its {'timing' if name == 'time' else 'capture'} is notebook-only"
        return CellCode(note + "\n" + inner.code, inner.header)
    return CellCode(_commented(source))


def _commented(source: str, why: str = "") -> str:
    first, *rest = source.rstrip("\n").split("\n")
    lines = [f"{NOT_RUN}{first}" + (f"  {why}" if why else "")]
    return "\n".join(lines + [f"#     {line}".rstrip() for line in rest])


def _translate_block(body: list[ast.stmt], code: str, edits: list[_Edit], cell: CellCode, *, top: bool) -> None:
    """Replace the IPython statements of one block; a block left with comments only gets a `pass`."""
    runs = False
    for node in body:
        text = _replacement(node, code, cell)
        if text is None:
            runs = True
            for block in _blocks(node):
                _translate_block(block, code, edits, cell, top=False)
            continue
        edits.append(_Edit.of(code, node, text))
        runs = runs or any(line.strip() and not line.lstrip().startswith("#") for line in text.split("\n"))
    if not runs and not top:
        edits[-1].text += f"\n{edits[-1].indentation}pass"


def _blocks(node: ast.stmt) -> Iterator[list[ast.stmt]]:
    for name in ("body", "orelse", "finalbody"):
        block = getattr(node, name, None)
        if isinstance(block, list) and block and isinstance(block[0], ast.stmt):
            yield block
    for part in [*getattr(node, "handlers", []), *getattr(node, "cases", [])]:
        yield part.body


def _replacement(node: ast.stmt, code: str, cell: CellCode) -> str | None:
    """The text that replaces an IPython statement, or None for plain Python (kept as it is)."""
    if isinstance(node, ast.Expr) and (call := _ipython_call(node.value)) is not None:
        method, args = call
        if method == "run_line_magic" and len(args) == 2:
            return _line_magic(args[0], args[1], cell)
        if method == "system" and args:
            return _shell(args[0])
    if isinstance(node, ast.Assign) and len(node.targets) == 1 and (call := _ipython_call(node.value)):
        method, args = call
        target = ast.get_source_segment(code, node.targets[0])
        if method == "getoutput" and args:
            return f"{NOT_RUN}{target} = !{args[0]}"
        if method == "run_line_magic" and len(args) == 2:
            return f"{NOT_RUN}{target} = %{args[0]} {args[1]}".rstrip()
    if isinstance(node, ast.ImportFrom) and node.module == "__future__":
        statement = ast.get_source_segment(code, node)
        cell.header.insert(0, statement)
        return f"# moved to the top of the script: {statement}"
    if _uses_ipython(node, shallow=True):
        return _commented(ast.get_source_segment(code, node) or "", "(uses get_ipython())")
    return None


def _line_magic(name: str, line: str, cell: CellCode) -> str:
    words = line.split()
    if name == "load_ext" and words == ["kernel_ext"]:
        return "# not needed in a script: %load_ext kernel_ext (importing kernel_ext journals the openai client)"
    if name == "durable" and words[:1] == ["session"]:
        return f"# %durable {line}: the script's session is set at its top (script_session; --session overrides it)"
    if name == "env" and "=" in line and "$" not in line and "{" not in line:
        key, _, value = line.partition("=")
        cell.header.append("import os")
        return f"os.environ[{json.dumps(key.strip())}] = {json.dumps(value.strip())}  # from: %env {line}"
    if name == "time" and _is_python(line.strip()):
        return f"{line.strip()}  # from: %time (the timing is notebook-only)"
    hint = _HINTS.get(words[0] if name == "durable" and words else name)
    return f"{NOT_RUN}%{name} {line}".rstrip() + (f"  ({hint})" if hint else "")


def _shell(command: str) -> str:
    hint = _HINTS.get((command.split() or [""])[0])
    return f"{NOT_RUN}!{command}" + (f"  ({hint})" if hint else "")


def _ipython_call(node: ast.expr) -> tuple[str, list[str]] | None:
    """`get_ipython().METHOD('a', 'b')`, as IPython's transformer writes magics: (METHOD, args)."""
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and _is_get_ipython(node.func.value)):
        return None
    args = [a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
    return (node.func.attr, args) if len(args) == len(node.args) else None


def _is_get_ipython(node: ast.AST) -> bool:
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "get_ipython"


def _uses_ipython(node: ast.AST, *, shallow: bool = False) -> bool:
    """Whether the statement calls get_ipython(); `shallow` ignores the blocks of a compound statement."""
    stack = [node]
    while stack:
        current = stack.pop()
        if _is_get_ipython(current):
            return True
        for name, value in ast.iter_fields(current):
            if shallow and current is node and name in ("body", "orelse", "finalbody", "handlers", "cases"):
                continue
            stack.extend(v for v in (value if isinstance(value, list) else [value]) if isinstance(v, ast.AST))
    return False


def _shows_value(node: ast.Expr, code: str) -> bool:
    """A notebook shows a cell's last expression unless the cell ends with `;`."""
    if code.rstrip().endswith(";"):
        return False
    value = node.value
    return not (isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id in _SHOWN_AS_IS)


def _is_python(text: str) -> bool:
    try:
        ast.parse(text)
    except SyntaxError:
        return False
    return True


# -- text edits at AST positions (columns are UTF-8 byte offsets) -------------------------------


@dataclass
class _Edit:
    start: int  # byte offsets into the code
    end: int
    text: str
    indentation: str = ""

    @classmethod
    def of(cls, code: str, node: ast.stmt, text: str) -> _Edit:
        """Replace a statement; continuation lines of the new text get the statement's indentation."""
        start, end = _offsets(code, node)
        line = code.split("\n")[node.lineno - 1]
        indentation = line[: len(line) - len(line.lstrip())]
        return cls(start, end, text.replace("\n", "\n" + indentation), indentation)

    @classmethod
    def around(cls, code: str, node: ast.expr, before: str, after: str) -> _Edit:
        start, end = _offsets(code, node)
        return cls(start, end, before + (ast.get_source_segment(code, node) or "") + after)


def _offsets(code: str, node: ast.stmt | ast.expr) -> tuple[int, int]:
    starts = [0]
    for line in code.encode().split(b"\n"):
        starts.append(starts[-1] + len(line) + 1)
    end_line, end_col = node.end_lineno or node.lineno, node.end_col_offset or 0
    return starts[node.lineno - 1] + node.col_offset, starts[end_line - 1] + end_col


def _apply(code: str, edits: list[_Edit]) -> str:
    data = code.encode()
    for edit in sorted(edits, key=lambda e: e.start, reverse=True):
        data = data[: edit.start] + edit.text.encode() + data[edit.end:]
    return data.decode()
