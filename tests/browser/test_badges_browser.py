"""Per-cell memory badges in a real JupyterLab: under the cells, saved, reloaded, dimmed."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from meno_jupyter import notebook_memory
from tests.browser.conftest import ARTIFACTS, Lab, open_notebook, run_cell, show_memory_panel

pytestmark = pytest.mark.browser

KEEP = "kept = b'x' * (200 * 2**20)"
SPIKE = "spike = b'x' * (300 * 2**20)\ndel spike"
BADGE = ".jp-Notebook .jp-Cell >> nth={} >> .jp-Meno-badge"
MIB = 2**20


def badge_of(page: Any, index: int) -> Any:
    return page.locator(".jp-Notebook .jp-Cell").nth(index).locator(".jp-Meno-badge")


def figure(text: str, name: str) -> float:
    """The MiB after ``name`` in a badge line ("peak +300.0 MiB · kept …")."""
    found = re.search(rf"{name} ([+-][\d.]+) (KiB|MiB|GiB|B)\b", text)
    assert found is not None, text
    scale = {"B": 1 / MIB, "KiB": 1 / 1024, "MiB": 1, "GiB": 1024}[found.group(2)]
    return float(found.group(1)) * scale


def test_each_cell_shows_its_memory_and_keeps_it_in_the_notebook(lab: Lab, page: Any) -> None:
    path = lab.notebook("badges.ipynb", "%load_ext meno_jupyter\n%memwatch on", KEEP, SPIKE,
                        "print('done')")
    open_notebook(page, lab, "badges.ipynb")
    for index in range(4):
        run_cell(page, index)
    kept_badge, spike_badge = badge_of(page, 1), badge_of(page, 2)
    spike_badge.wait_for(timeout=30_000)
    badge_of(page, 3).wait_for(timeout=30_000)
    kept_text, spike_text = kept_badge.inner_text(), spike_badge.inner_text()
    assert abs(figure(kept_text, "kept") - 200) <= 20, kept_text
    assert abs(figure(spike_text, "peak") - 300) <= 30, spike_text
    assert abs(figure(spike_text, "kept")) <= 20, spike_text
    assert re.search(r" · \d+ % of limit$", kept_text), kept_text
    assert re.search(r" · (\d+ ms|[\d.]+ s) · ", kept_text), kept_text
    # The heaviest cell is marked; the exact bytes are in the tooltip.
    assert spike_text.startswith("▲ heaviest #1")
    assert "peak increase" in (spike_badge.get_attribute("title") or "")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "badges-under-cells.png"))

    # Saved with the notebook: the file carries the figures, a script reads them back.
    page.evaluate("() => window.jupyterapp.commands.execute('docmanager:save')")
    page.wait_for_function(
        "() => !window.jupyterapp.shell.currentWidget.context.model.dirty", timeout=20_000)
    saved = json.loads(path.read_text())
    assert saved["cells"][2]["metadata"]["meno"]["peak_increase"] >= 270 * MIB
    frame = notebook_memory(path)
    assert list(frame["index"]) == [1, 2, 3]  # recording began with cell 0
    assert abs(frame.iloc[1]["peak_increase"] / MIB - figure(spike_text, "peak")) < 0.1

    # A fresh page and a fresh kernel: the lines come back from the metadata alone.
    lab.shut_down_kernels()
    open_notebook(page, lab, "badges.ipynb")
    badge_of(page, 2).wait_for(timeout=30_000)
    assert badge_of(page, 2).inner_text() == spike_text
    assert badge_of(page, 1).inner_text() == kept_text
    # Under each cell's input, above its output (restored cells get their input late).
    badge_of(page, 3).wait_for(timeout=30_000)
    places = page.evaluate(
        "() => [...document.querySelectorAll('.jp-Notebook .jp-Cell')].slice(1, 4).map("
        "c => c.querySelector(':scope > .jp-Meno-badge')?.previousElementSibling?.className)")
    assert all("jp-Cell-inputWrapper" in (place or "") for place in places), places

    # Editing a cell dims its figures (they no longer describe it).
    editor = page.locator(".jp-Notebook .jp-Cell").nth(1).locator(".cm-content")
    editor.click()
    page.keyboard.press("End")
    page.keyboard.type("  # changed")
    page.wait_for_function(
        "() => document.querySelectorAll('.jp-Notebook .jp-Cell')[1]"
        ".querySelector('.jp-Meno-badge').classList.contains('jp-Meno-badge-stale')",
        timeout=10_000)
    stale = "jp-Meno-badge-stale" in (badge_of(page, 2).get_attribute("class") or "")
    assert not stale
    page.screenshot(path=str(ARTIFACTS / "badges-reloaded-and-stale.png"))


def test_the_panel_turns_recording_on_and_goes_to_the_heaviest_cell(
        lab: Lab, page: Any) -> None:
    lab.notebook("heavy.ipynb", "small = b'x' * (20 * 2**20)", "big = b'x' * (120 * 2**20)",
                 "print('ok')")
    open_notebook(page, lab, "heavy.ipynb")
    show_memory_panel(page)
    button = page.locator(".jp-Meno-watch-button")
    button.wait_for(state="visible", timeout=30_000)
    button.click()  # %memwatch on, silently, in this kernel
    page.wait_for_function("() => document.querySelector('.jp-Meno-watch-button')"
                           ".style.display === 'none'", timeout=30_000)
    for index in range(3):
        run_cell(page, index)
    badge_of(page, 1).wait_for(timeout=30_000)
    badge_of(page, 2).wait_for(timeout=30_000)
    page.evaluate("() => { window.jupyterapp.shell.currentWidget.content.activeCellIndex = 2; }")
    page.evaluate("() => window.jupyterapp.commands.execute('meno-jupyter:goto-heaviest-cell')")
    page.wait_for_function(
        "() => window.jupyterapp.shell.currentWidget.content.activeCellIndex === 1",
        timeout=5_000)
    assert badge_of(page, 1).inner_text().startswith("▲ heaviest #1")
