"""Everyday folders named like our packages (`journal/`, `widgets/`) beside a notebook do not break the
extension, with the editable install the tests run from and with a regular install in a separate venv;
a user's own module of that name gets one line saying which file to rename."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import ROOT, Kernel

SETUP = """%load_ext kernel_ext
from openai import OpenAI
client = OpenAI(max_retries=0)
"""

AGENT = """%%durable plan
reply = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "Plan a day in Lisbon"}])
print(reply.choices[0].message.content)
"""

WHERE = """import journal, kernel_ext, widgets
print(journal.__file__, kernel_ext.__file__, widgets.__file__, sep="\\n")
"""

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def everyday_folders(notebook_dir: Path) -> None:
    (notebook_dir / "journal").mkdir(exist_ok=True)
    (notebook_dir / "widgets").mkdir()
    (notebook_dir / "widgets" / "sales.csv").write_text("region,amount\nnorth,12\n")


def streams(outputs: list[dict]) -> str:
    return "".join(o["text"] for o in outputs if o["output_type"] == "stream")


def run_agent_and_history(kernel: Kernel, model_server) -> None:
    kernel.ok(SETUP)
    first = kernel.ok(AGENT)
    second = kernel.ok(AGENT)
    assert model_server.stats()["requests"] == 1  # the second run replayed from the journal
    assert "[scripted]" in streams(first) and streams(second) == streams(first)
    # The history view is the widget (from our widgets package), with its HTML rendering for where widgets cannot.
    (shown,) = [o for o in kernel.ok("%durable history") if o["output_type"] in ("display_data", "execute_result")]
    assert WIDGET_VIEW in shown["data"]
    assert "plan" in shown["data"]["text/html"] and "Plan a day in Lisbon" in shown["data"]["text/html"]


def python(code: str, cwd: Path, executable: str = sys.executable) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_folders_named_journal_and_widgets_beside_the_notebook(kernel_env, model_server, tmp_path):
    everyday_folders(tmp_path)
    kernel = Kernel(kernel_env, tmp_path)
    try:
        run_agent_and_history(kernel, model_server)
        # The user's `import journal` is ours too, as it is with a regular install (a package beats a folder).
        assert streams(kernel.ok(WHERE)).split() == [str(ROOT / p / "__init__.py")
                                                      for p in ("journal", "kernel_ext", "widgets")]
    finally:
        kernel.shutdown()
    assert sorted(p.name for p in (tmp_path / "journal").iterdir()) == []
    assert sorted(p.name for p in (tmp_path / "widgets").iterdir()) == ["sales.csv"]


def test_users_own_journal_module_is_named_with_what_to_rename(kernel_env, tmp_path):
    (tmp_path / "journal.py").write_text("entries = []\n")
    kernel = Kernel(kernel_env, tmp_path)
    try:
        status, outputs = kernel.execute("%load_ext kernel_ext")
        assert status == "error"
        (error,) = [o for o in outputs if o["output_type"] == "error"]
        assert error["ename"] == "ShadowedPackageError"
        assert error["evalue"] == (f"{tmp_path / 'journal.py'} shadows durable-kernel's `journal` package; "
                                   "rename your file (for example to my_journal.py) and restart the kernel")
        # The user's module keeps its name.
        assert streams(kernel.ok("import journal\nprint(journal.entries)")) == "[]\n"
    finally:
        kernel.shutdown()


def test_users_own_journal_package_is_named_by_its_folder(tmp_path):
    (tmp_path / "journal").mkdir()
    (tmp_path / "journal" / "__init__.py").write_text("")
    done = python("import kernel_ext", tmp_path)
    assert done.returncode == 1
    assert done.stderr.splitlines()[-1] == (
        f"kernel_ext._shadowing.ShadowedPackageError: {tmp_path / 'journal'} shadows durable-kernel's `journal` "
        "package; rename your folder (for example to my_journal/) and restart the kernel")


def test_users_own_widgets_module_gets_one_line_and_keeps_its_name(tmp_path):
    (tmp_path / "widgets.py").write_text("SLIDERS = 3\n")
    done = python("""
import kernel_ext, widgets
from kernel_ext._shadowing import ShadowedPackageError, own_package
print(widgets.SLIDERS)
try:
    own_package("widgets")
except ShadowedPackageError:
    print("not ours")
""", tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["3", "not ours"]
    assert done.stderr.splitlines() == [
        f"durable-kernel:0: ShadowedPackageWarning: {tmp_path / 'widgets.py'} shadows durable-kernel's `widgets` "
        "package; rename your file (for example to my_widgets.py) and restart the kernel"]


def test_a_foreign_module_already_imported_under_our_name_is_named(tmp_path):
    done = python("import sys, types\nsys.modules['journal'] = types.ModuleType('journal')\nimport kernel_ext",
                  tmp_path)
    assert done.returncode == 1
    assert done.stderr.splitlines()[-1].endswith(
        "<module 'journal'> shadows durable-kernel's `journal` package; "
        "rename your file (for example to my_journal.py) and restart the kernel")


def test_scripts_beside_the_folders_get_our_packages_even_after_importing_the_folder(tmp_path):
    everyday_folders(tmp_path)
    # A plain folder imported first (a namespace package, no code) gives way to ours once kernel_ext is imported.
    done = python("import journal\nimport kernel_ext\n" + WHERE + "from kernel_ext import step\nprint(step.__module__)",
                  tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [*(str(ROOT / p / "__init__.py") for p in ("journal", "kernel_ext", "widgets")),
                                   "kernel_ext.runtime"]


def test_journal_imports_in_a_plain_process_without_ipython(tmp_path):
    done = python("import sys, journal\nprint(journal.__file__, journal.Journal.__module__)\n"
                  "print(sorted({m.split('.')[0] for m in sys.modules} & {'IPython', 'ipywidgets', 'openai', "
                  "'kernel_ext', 'widgets'}))", tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [f"{ROOT / 'journal' / '__init__.py'} journal._store", "[]"]


@pytest.mark.slow
def test_regular_install_in_a_separate_venv(kernel_env, model_server, tmp_path):
    # The wheel is built from a copy, so that the build leaves nothing in the source tree.
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for name in ("journal", "kernel_ext", "widgets"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "-w", str(tmp_path / "dist")],
                   check=True, capture_output=True, timeout=600)
    (wheel,) = (tmp_path / "dist").glob("durable_kernel-*.whl")

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)],
                   check=True, timeout=300)
    venv_python = str(venv / "bin" / "python")
    subprocess.run([sys.executable, "-m", "pip", "--python", venv_python, "install", "--no-deps", "--no-index",
                    str(wheel)], check=True, capture_output=True, timeout=600)
    purelib = Path(python("import sysconfig; print(sysconfig.get_path('purelib'))", tmp_path,
                          venv_python).stdout.strip())
    # The dependencies come from this environment, which may itself be a venv that --system-site-packages does not
    # reach. Its own .pth files (the editable install's finder) are not run from a path added this way.
    (purelib / "_test_dependencies.pth").write_text("\n".join(p for p in sys.path if p.endswith("-packages")) + "\n")

    notebook_dir = tmp_path / "notebooks"
    notebook_dir.mkdir()
    everyday_folders(notebook_dir)
    ours = [str(purelib / p / "__init__.py") for p in ("journal", "kernel_ext", "widgets")]
    # Without kernel_ext, in a plain process beside the folders: a regular package beats a plain folder.
    plain = python("import journal; print(journal.__file__)", notebook_dir, venv_python)
    assert plain.stdout.split() == ours[:1], plain.stderr

    # The journal itself kept in the `journal/` folder.
    env = {k: v for k, v in kernel_env.items() if k != "PYTHONPATH"}
    env["DURABLE_JOURNAL"] = str(notebook_dir / "journal" / "agent.duckdb")
    kernel = Kernel(env, notebook_dir, python=venv_python)
    try:
        assert streams(kernel.ok(WHERE)).split() == ours
        run_agent_and_history(kernel, model_server)
    finally:
        kernel.shutdown()
    assert (notebook_dir / "journal" / "agent.duckdb").exists()
