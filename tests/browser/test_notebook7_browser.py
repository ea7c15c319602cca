"""The labextension in Notebook 7 (the same server, /notebooks/): badges, panel, top bar, deaths."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.browser.conftest import ARTIFACTS, LAB_LIMIT_BYTES, Lab, open_notebook, run_cell
from tests.browser.test_deaths_browser import GROW, kernel_pid
from tests.cgrouphelp import MemoryCgroup, require_memory_cgroup

pytestmark = pytest.mark.browser

TOP_ITEM = "#jp-Meno-topbar-item"


def badge_text(page: Any, index: int) -> str:
    badge = page.locator(".jp-Notebook .jp-Cell").nth(index).locator(".jp-Meno-badge")
    badge.wait_for(timeout=30_000)
    return str(badge.inner_text())


def test_badges_panel_and_top_bar(lab: Lab, page: Any) -> None:
    lab.notebook("nb7.ipynb", "%load_ext meno_jupyter\n%memwatch on",
                 "kept = b'x' * (200 * 2**20)", "print('done')")
    open_notebook(page, lab, "nb7.ipynb", notebook7=True)
    assert page.locator("#main-panel .jp-NotebookPanel").count() == 1  # Notebook 7's shell
    for index in range(3):
        run_cell(page, index)
    kept = badge_text(page, 1)
    assert "kept +200.0 MiB" in kept and "% of limit" in kept, kept
    assert badge_text(page, 2).startswith("peak +")
    places = page.evaluate(
        "() => [...document.querySelectorAll('.jp-Notebook .jp-Cell')].slice(1).map("
        "c => c.querySelector(':scope > .jp-Meno-badge').previousElementSibling.className)")
    assert all("jp-Cell-inputWrapper" in place for place in places), places

    # No status bar in Notebook 7: the item sits in the top bar, against the limit.
    top = page.locator(TOP_ITEM)
    page.wait_for_function(
        f"() => document.querySelector('{TOP_ITEM}').textContent.includes(' / ')",
        timeout=20_000)
    assert top.inner_text().endswith(f"/ {LAB_LIMIT_BYTES / 2**20:.1f} MiB"), top.inner_text()
    assert "jp-Meno-pressure-" in (top.get_attribute("class") or "")

    # View → Right Sidebar → Show Memory opens the panel with the kernel's figures.
    page.click("#jp-MainMenu >> text=View")
    page.hover(".lm-Menu-itemLabel:text('Right Sidebar')")
    page.click(".lm-Menu-itemLabel:text('Show Memory (meno-jupyter)')")
    panel = page.locator("#jp-Meno-memory-panel")
    panel.wait_for(state="visible", timeout=10_000)
    panel.locator(".jp-Meno-rss").wait_for(timeout=20_000)
    panel.locator(".jp-Meno-ledger-row").first.wait_for(timeout=20_000)
    assert panel.locator(".jp-Meno-ledger-row").count() >= 2
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "notebook7-badges-panel.png"))
    # Hidden again, the top-bar item brings it back.
    page.evaluate("() => window.jupyterapp.shell.collapseRight()")
    panel.wait_for(state="hidden", timeout=10_000)
    top.click()
    panel.wait_for(state="visible", timeout=10_000)


def test_an_oom_death_is_explained_in_notebook7(lab: Lab, page: Any) -> None:
    require_memory_cgroup()
    lab.notebook("nb7-oom.ipynb", "%load_ext meno_jupyter\n%memwatch on", GROW)
    open_notebook(page, lab, "nb7-oom.ipynb", notebook7=True)
    run_cell(page, 0)
    with MemoryCgroup(600 * 2**20) as cgroup:
        cgroup.add(kernel_pid(lab, page))
        time.sleep(1.5)  # the server has seen the kernel in its cgroup
        run_cell(page, 1, wait=False)
        dialog = page.locator(".jp-Dialog:has(.jp-Meno-death)")
        dialog.wait_for(timeout=60_000)
        page.wait_for_timeout(500)
        assert page.locator(".jp-Dialog").count() == 1  # ours, not Notebook 7's own too
        assert cgroup.oom_kills() == 1
    text = dialog.inner_text()
    assert ("The kernel was killed by the out-of-memory killer while running cell [2] "
            "(import numpy as np, time).") in text
    assert dialog.locator(".jp-Meno-death-chart .jp-Meno-chart-rss").count() == 1
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "notebook7-death-dialog.png"))
