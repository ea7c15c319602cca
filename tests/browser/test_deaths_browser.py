"""A kernel killed by the real out-of-memory killer, explained in a real JupyterLab."""

from __future__ import annotations

import os
import time
from typing import Any

import pytest

from tests.browser.conftest import (
    ARTIFACTS,
    Lab,
    open_notebook,
    run_cell,
    show_memory_panel,
    wait_for_prompt,
)
from tests.cgrouphelp import MemoryCgroup, require_memory_cgroup

pytestmark = pytest.mark.browser

GROW = ("import numpy as np, time\nchunks = []\nfor step in range(100):\n"
        "    chunks.append(np.ones(20 * 2**20 // 8))\n    time.sleep(0.03)")


def kernel_pid(lab: Lab, page: Any) -> int:
    kernel_id = page.evaluate(
        "() => window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.id")
    listing = lab.api("/meno-jupyter/kernels")
    return int(next(k["pid"] for k in listing["kernels"] if k["id"] == kernel_id))


def test_an_oom_death_is_explained_and_its_cell_marked(lab: Lab, page: Any) -> None:
    require_memory_cgroup()
    filler = [f"# filler cell {i}\npass" for i in range(25)]
    lab.notebook("oom.ipynb", "%load_ext meno_jupyter\n%memwatch on", *filler, GROW)
    grow_index = 1 + len(filler)
    open_notebook(page, lab, "oom.ipynb")
    run_cell(page, 0)
    with MemoryCgroup(600 * 2**20) as cgroup:
        cgroup.add(kernel_pid(lab, page))
        time.sleep(1.5)  # the server has seen the kernel in its cgroup
        run_cell(page, grow_index, wait=False)
        wait_for_prompt(page, grow_index, "*")
        # One dialog: ours replaces JupyterLab's own "Kernel Restarting" (no Ok to click).
        dialog = page.locator(".jp-Dialog:has(.jp-Meno-death)")
        dialog.wait_for(timeout=60_000)
        page.wait_for_timeout(500)
        assert page.locator(".jp-Dialog").count() == 1
        assert cgroup.oom_kills() == 1
    text = dialog.inner_text()
    assert "The kernel died" in text
    assert ("The kernel was killed by the out-of-memory killer while running cell [2] "
            "(import numpy as np, time).") in text
    assert "%memguard on" in text
    assert dialog.locator(".jp-Meno-death-chart .jp-Meno-chart-rss").count() == 1
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "death-dialog.png"))
    page.evaluate("() => { window.jupyterapp.shell.currentWidget.content.activeCellIndex = 0; }")
    dialog.get_by_role("button", name="Go to cell [2]").click()
    page.wait_for_function(
        f"() => window.jupyterapp.shell.currentWidget.content.activeCellIndex === {grow_index}",
        timeout=10_000)
    cell = page.locator(".jp-Notebook .jp-Cell").nth(grow_index)
    page.wait_for_timeout(500)
    assert cell.is_visible()
    # Its badge says it was not measured; it does not run on with the new kernel's RSS.
    badge = cell.locator(".jp-Meno-badge")
    assert badge.inner_text().startswith("the kernel stopped after "), badge.inner_text()
    assert "not measured" in badge.inner_text() and "running" not in badge.inner_text()
    assert "jp-Meno-killer-cell" in (cell.get_attribute("class") or "")
    page.screenshot(path=str(ARTIFACTS / "death-cell-marked.png"))
    # The sidebar keeps the death for the session.
    show_memory_panel(page)
    row = page.locator("#jp-Meno-memory-panel .jp-Meno-death-row")
    row.first.wait_for(timeout=10_000)
    assert "killed by the out-of-memory killer" in row.first.inner_text()


def test_a_death_while_the_page_was_closed_is_shown_when_the_notebook_opens(
        lab: Lab, page: Any) -> None:
    import signal

    lab.notebook("away.ipynb", "%load_ext meno_jupyter\n%memguard on", "x = 1")
    open_notebook(page, lab, "away.ipynb")
    run_cell(page, 0)
    pid = kernel_pid(lab, page)
    page.goto("about:blank")  # the browser is gone ...
    os.kill(pid, signal.SIGSEGV)  # ... when the kernel crashes
    deadline = time.monotonic() + 30
    deaths: list[Any] = []
    while time.monotonic() < deadline and not deaths:  # other tests' deaths are listed too
        time.sleep(0.5)
        deaths = [d for d in lab.api("/meno-jupyter/deaths")["deaths"] if d["pid"] == pid]
    assert [d["cause"] for d in deaths] == ["crashed: segmentation fault"]
    open_notebook(page, lab, "away.ipynb")  # the same kernel, restarted
    dialog = page.locator(".jp-Dialog:has(.jp-Meno-death)")
    dialog.wait_for(timeout=30_000)
    assert "The kernel crashed (segmentation fault)." in dialog.inner_text()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "death-shown-on-reopen.png"))
    dialog.get_by_role("button", name="Close").click()


def test_after_a_real_death_the_dialog_restores_the_checkpointed_variables(
        lab: Lab, page: Any) -> None:
    require_memory_cgroup()
    lab.notebook("kept.ipynb", "%load_ext meno_jupyter\n%memcheckpoint on",
                 "import pandas as pd\nframe = pd.DataFrame({'x': range(100_000)})\n"
                 "total = int(frame.x.sum())",
                 "%memcheckpoint status --wait", GROW, "print(total, len(frame))")
    open_notebook(page, lab, "kept.ipynb")
    for index in range(3):
        run_cell(page, index)
    with MemoryCgroup(600 * 2**20) as cgroup:
        cgroup.add(kernel_pid(lab, page))
        time.sleep(1.5)
        run_cell(page, 3, wait=False)
        wait_for_prompt(page, 3, "*")
        dialog = page.locator(".jp-Dialog:has(.jp-Meno-death)")
        generic = page.locator(".jp-Dialog:not(:has(.jp-Meno-death))")
        deadline = time.monotonic() + 60
        while not dialog.count() and time.monotonic() < deadline:
            if generic.count():
                generic.get_by_role("button", name="Ok").click()
            page.wait_for_timeout(250)
        dialog.wait_for(timeout=1_000)
        assert cgroup.oom_kills() == 1
    text = dialog.inner_text()
    assert "Your variables were saved (last checkpoint after cell [2]" in text, text
    assert "from the top" not in text
    dialog.get_by_role("button", name="Restore variables").click()
    report = page.locator(".jp-Dialog:has(.jp-Meno-restore-report)")
    report.wait_for(timeout=90_000)
    assert "Variables restored" in report.inner_text()
    assert "restored 3 variables" in report.inner_text(), report.inner_text()
    assert "as after cell [2]" in report.inner_text()
    page.screenshot(path=str(ARTIFACTS / "death-restored.png"))
    report.get_by_role("button", name="Close").click()
    run_cell(page, 4)
    output = page.locator(".jp-Notebook .jp-Cell").nth(4).locator(".jp-OutputArea-output")
    output.first.wait_for(timeout=30_000)
    assert output.first.inner_text().strip() == "4999950000 100000"
