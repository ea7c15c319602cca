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
