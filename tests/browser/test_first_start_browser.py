"""What a new user meets first: the quickstart opens clean in a real JupyterLab."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest

from tests.browser.conftest import Lab, open_notebook

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]


def lab_notebooks() -> Any:
    """``scripts/lab_notebooks.py``, which ``make lab`` runs."""
    spec = importlib.util.spec_from_file_location("lab_notebooks",
                                                  ROOT / "scripts" / "lab_notebooks.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_quickstart_opens_without_being_modified(lab: Lab, page: Any) -> None:
    target = lab.root / "lab-copies"
    made = lab_notebooks().copy_notebooks(ROOT / "notebooks", target)
    assert (target / "01_quickstart.ipynb") in made
    quickstart = target / "01_quickstart.ipynb"
    quickstart.write_text(quickstart.read_text() + "\n")  # the user's own change
    assert lab_notebooks().copy_notebooks(ROOT / "notebooks", target) == []  # kept
    open_notebook(page, lab, "lab-copies/01_quickstart.ipynb")
    page.wait_for_timeout(2000)  # the kernel's info has arrived and been applied
    model = "window.jupyterapp.shell.currentWidget.context.model"
    dirty = page.evaluate(f"() => {model}.dirty")
    metadata = page.evaluate(f"() => JSON.stringify({model}.toJSON().metadata)")
    assert dirty is False, metadata  # nothing to save, nothing asked on closing
