"""The core is a pure library: importing it must not pull in front-end or heavy packages."""

from __future__ import annotations

import subprocess
import sys

FORBIDDEN = ["IPython", "ipywidgets", "jupyter_server", "torch", "plotly", "pandas", "distributed",
             "memray"]


def test_core_and_package_import_no_front_end_or_heavy_module() -> None:
    code = (
        "import sys, pkgutil, importlib, meno_jupyter.core as core\n"
        "for m in pkgutil.iter_modules(core.__path__):\n"
        "    importlib.import_module('meno_jupyter.core.' + m.name)\n"
        "import meno_jupyter\n"
        f"print([name for name in {FORBIDDEN!r} if name in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_loading_the_extension_imports_neither_plotly_nor_pandas() -> None:
    code = (
        "import sys\n"
        "from IPython.testing.globalipapp import start_ipython\n"
        "ip = start_ipython()\n"
        "ip.run_line_magic('load_ext', 'meno_jupyter')\n"
        "assert ip.find_cell_magic('memprofile') and ip.find_line_magic('memstatus')\n"
        "print([m for m in ('plotly', 'pandas', 'psutil') if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout + out.stderr


def test_no_core_module_imports_a_front_end_anywhere_not_even_lazily() -> None:
    # The load-time check above misses imports inside functions: read every core module.
    import ast
    from pathlib import Path

    from meno_jupyter import core

    banned = {"IPython", "ipywidgets", "jupyter_server", "torch", "meno_jupyter.magics",
              "meno_jupyter.widgets", "meno_jupyter.server", "meno_jupyter.display",
              "meno_jupyter.topics", "meno_jupyter.shell"}
    found = []
    for path in sorted(Path(core.__path__[0]).glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            found += [f"{path.name}:{node.lineno} {name}" for name in names
                      if any(name == b or name.startswith(b + ".") for b in banned)]
    assert found == []
