"""The Memory sidebar and status bar in a real JupyterLab in Chromium."""

from __future__ import annotations

import itertools
import time
import uuid
from typing import Any

import pytest

from tests.browser.conftest import (
    ARTIFACTS,
    Lab,
    cell_is_busy,
    open_notebook,
    run_cell,
    show_memory_panel,
    wait_for_prompt,
)

pytestmark = pytest.mark.browser

PANEL_TAB = ".jp-SideBar .lm-TabBar-tab[data-id='jp-Meno-memory-panel']"
BUSY_CELL = """\
import time
block = bytearray(300 * 2**20)
for i in range(0, len(block), 4096):
    block[i] = 1
time.sleep(20)"""


def open_panel(page: Any) -> None:
    show_memory_panel(page)


def test_panel_says_why_there_is_no_data_without_a_notebook(lab: Lab, page: Any) -> None:
    workspace = f"{lab.base}/lab/workspaces/w{uuid.uuid4().hex[:10]}"
    page.goto(f"{workspace}?reset&token={lab.token}")
    page.wait_for_selector(PANEL_TAB, timeout=60_000)
    # A first start shows the panel without a click.
    page.wait_for_selector("#jp-Meno-memory-panel", state="visible", timeout=30_000)
    status = page.locator(".jp-Meno-panel-status")
    status.wait_for(timeout=10_000)
    page.wait_for_function(
        "() => document.querySelector('.jp-Meno-panel-status').textContent"
        ".includes('no notebook with a kernel is active')", timeout=10_000)
    assert page.locator(".jp-Meno-status").inner_text() == "Mem: \u2013"
    # Closed by the user, it stays closed: the next start restores the layout as it was.
    page.click(PANEL_TAB)
    page.wait_for_selector("#jp-Meno-memory-panel", state="hidden", timeout=10_000)
    page.wait_for_timeout(1500)  # the layout is saved after a change
    page.goto(f"{workspace}?token={lab.token}")
    page.wait_for_selector(PANEL_TAB, timeout=60_000)
    page.wait_for_timeout(2000)
    assert not page.locator("#jp-Meno-memory-panel").is_visible()


def test_panel_follows_a_busy_kernel_and_scrolls_to_ledger_cells(lab: Lab, page: Any) -> None:
    filler = [f"# filler cell {i}\npass" for i in range(30)]
    lab.notebook("side.ipynb", "%load_ext meno_jupyter\n%memwatch on",
                 "small = bytearray(40 * 2**20)", *filler, BUSY_CELL)
    busy_index = 2 + len(filler)
    open_notebook(page, lab, "side.ipynb")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    open_panel(page)
    rss = page.locator("#jp-Meno-memory-panel .jp-Meno-rss")
    rss.wait_for(timeout=30_000)
    status_item = page.locator(".jp-Meno-status")
    assert status_item.inner_text().startswith("Mem: ")
    assert " / " in status_item.inner_text()
    kernels = page.locator("#jp-Meno-memory-panel .jp-Meno-kernel-row")
    assert any("side.ipynb" in row for row in kernels.all_inner_texts())

    run_cell(page, 0)
    run_cell(page, 1)
    run_cell(page, busy_index, wait=False)
    wait_for_prompt(page, busy_index, "*")
    figures: list[str] = []
    paths: list[str] = []
    statuses: list[str] = []
    toasts: list[str] = []
    started = time.monotonic()
    while cell_is_busy(page, busy_index) and time.monotonic() - started < 40:
        figures.append(rss.inner_text())
        paths.append(page.locator(".jp-Meno-chart-rss").get_attribute("d") or "")
        statuses.append(status_item.inner_text())
        toasts.append("\n".join(page.locator(".Toastify__toast").all_inner_texts()))
        if len(figures) == 8:
            page.screenshot(path=str(ARTIFACTS / "sidebar-busy.png"))
        time.sleep(1.0)
    assert len(figures) >= 10, "the busy cell should run about 20 s"
    path_changes = sum(1 for a, b in itertools.pairwise(paths) if a != b)
    assert path_changes >= 5, f"chart changed {path_changes} times while busy"
    assert len(set(figures)) >= 2 and len(set(statuses)) >= 2
    assert any("MiB" in f or "GiB" in f for f in figures)
    # 300 MiB more crosses 85 % of the 440 MiB limit: one notification, red figures
    shown = [t.count("kernel side.ipynb is at") for t in toasts]
    assert max(shown) == 1, toasts  # shown, and once per crossing
    assert "of the 440.0 MiB limit" in next(t for t in toasts if "side.ipynb" in t)
    assert "jp-Meno-pressure-high" in (status_item.get_attribute("class") or "")

    # the ledger rows: the 40 MiB cell is [2]; clicking it scrolls the notebook to it
    wait_for_prompt(page, busy_index, "[", timeout_ms=60_000)
    row = page.locator(".jp-Meno-ledger-row[data-execution-count='2']")
    row.wait_for(timeout=20_000)
    assert "small = bytearray" in row.inner_text()
    assert "+40" in row.inner_text() or "+3" in row.inner_text()
    # the chart: a y scale, the limit labelled, and a marker where each cell started
    mark = page.locator(".jp-Meno-chart-mark[data-execution-count='2']")
    mark.wait_for(timeout=20_000)
    assert "small = bytearray" in (mark.get_attribute("title") or "")
    page.locator(".jp-Meno-chart-mark[data-execution-count='3']").wait_for(timeout=20_000)
    scale = page.locator(".jp-Meno-chart-scale-top").inner_text()
    assert scale.endswith("MiB") and float(scale.split()[0]) >= 440, scale
    assert page.locator(".jp-Meno-chart-limit-label").inner_text() == "limit 440.0 MiB"
    page.locator(".jp-Meno-chart-box").screenshot(path=str(ARTIFACTS / "sidebar-chart.png"))
    page.evaluate("() => { window.jupyterapp.shell.currentWidget.content.activeCellIndex = "
                  f"{busy_index}; }}")
    cell = page.locator(".jp-Notebook .jp-Cell").nth(1)
    page.wait_for_timeout(500)
    box = cell.bounding_box()
    assert box is None or box["y"] < 0 or box["y"] > page.viewport_size["height"], box
    row.click()
    page.wait_for_function(
        "() => window.jupyterapp.shell.currentWidget.content.activeCellIndex === 1",
        timeout=5_000)
    page.wait_for_timeout(500)
    assert cell.is_visible()
    box = cell.bounding_box()
    viewport = page.viewport_size
    assert box is not None and 0 <= box["y"] <= viewport["height"]
    page.screenshot(path=str(ARTIFACTS / "sidebar-ledger.png"))


def test_the_panel_turns_the_memory_guard_on(lab: Lab, page: Any) -> None:
    lab.notebook("guard.ipynb", "import resource\nprint(resource.getrlimit("
                 "resource.RLIMIT_DATA)[0] != resource.RLIM_INFINITY)")
    open_notebook(page, lab, "guard.ipynb")
    open_panel(page)
    guard = page.locator("#jp-Meno-memory-panel .jp-Meno-guard")
    guard.locator(".jp-Meno-guard-off").wait_for(timeout=30_000)
    assert "memory guard off" in guard.inner_text()
    guard.locator("button").click()
    guard.locator(".jp-Meno-guard-on").wait_for(timeout=30_000)
    assert guard.inner_text() == "memory guard on at 90 % · 0 cells stopped"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "sidebar-guard-on.png"))
    # The kernel itself is guarded: its allocation limit is set.
    run_cell(page, 0)
    output = page.locator(".jp-Notebook .jp-Cell").nth(0).locator(".jp-OutputArea-output")
    output.wait_for(timeout=30_000)
    assert output.inner_text().strip() == "True"


def test_the_guard_button_stops_a_runaway_cell_in_a_real_cgroup(lab: Lab, page: Any) -> None:
    # The button runs its magics silently, so the guard must arm without run-cell hooks.
    # (The control, the same growth without the guard ending in a real OOM kill, is
    # test_deaths_browser's.)
    from tests.browser.test_deaths_browser import GROW, kernel_pid
    from tests.cgrouphelp import MemoryCgroup, require_memory_cgroup

    require_memory_cgroup()
    lab.notebook("guard-oom.ipynb", "print('ready')", GROW)
    open_notebook(page, lab, "guard-oom.ipynb")
    run_cell(page, 0)
    with MemoryCgroup(600 * 2**20) as cgroup:
        cgroup.add(kernel_pid(lab, page))
        open_panel(page)
        guard = page.locator("#jp-Meno-memory-panel .jp-Meno-guard")
        guard.locator(".jp-Meno-guard-off").wait_for(timeout=30_000)
        guard.locator("button").click()
        guard.locator(".jp-Meno-guard-on").wait_for(timeout=30_000)
        run_cell(page, 1)
        output = page.locator(".jp-Notebook .jp-Cell").nth(1).locator(".jp-OutputArea-output")
        output.first.wait_for(timeout=60_000)
        text = output.first.inner_text()
        assert "MemoryGuardError" in text and "meno guard stopped this cell" in text, text
        assert "An allocation was refused" not in text  # the thread stopped it, at the level
        assert cgroup.oom_kills() == 0
        page.wait_for_function(
            "() => document.querySelector('#jp-Meno-memory-panel .jp-Meno-guard')"
            ".textContent.includes('1 cell stopped')", timeout=30_000)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "sidebar-guard-stopped.png"))
        lab.shut_down_kernels()


def test_a_kernel_in_a_tighter_cgroup_is_shown_against_its_own_limit(
        lab: Lab, page: Any) -> None:
    from tests.browser.conftest import LAB_LIMIT_BYTES
    from tests.browser.test_deaths_browser import kernel_pid
    from tests.cgrouphelp import MemoryCgroup, require_memory_cgroup

    require_memory_cgroup()
    lab.notebook("own-limit.ipynb", "print('ready')")
    open_notebook(page, lab, "own-limit.ipynb")
    run_cell(page, 0)
    open_panel(page)
    status_item = page.locator(".jp-Meno-status")
    with MemoryCgroup(LAB_LIMIT_BYTES // 2) as cgroup:
        pid = kernel_pid(lab, page)
        cgroup.add(pid)
        try:
            deadline = time.monotonic() + 20
            while not status_item.inner_text().endswith("/ 220.0 MiB") and (
                    time.monotonic() < deadline):
                page.wait_for_timeout(200)
            # The kernel's own limit, not the server's, in the bar and in the panel.
            assert status_item.inner_text().endswith("/ 220.0 MiB"), status_item.inner_text()
            detail = page.locator("#jp-Meno-memory-panel .jp-Meno-detail").inner_text()
            assert "of the 220.0 MiB limit (cgroup of the kernel)" in detail, detail
        finally:
            cgroup.release(pid)
    lab.shut_down_kernels()


def test_a_memprofile_row_carries_the_prompt_number_and_leads_to_its_cell(
        lab: Lab, page: Any) -> None:
    filler = [f"# filler cell {i}\npass" for i in range(25)]
    lab.notebook("numbers.ipynb", "%load_ext meno_jupyter", "x = 1", *filler,
                 "%%memprofile --no-plot\nz = bytearray(30 * 2**20)")
    profiled_index = 2 + len(filler)
    open_notebook(page, lab, "numbers.ipynb")
    open_panel(page)
    run_cell(page, 0)
    run_cell(page, 1)
    run_cell(page, profiled_index)
    wait_for_prompt(page, profiled_index, "[3]")  # the prompt the row must carry
    row = page.locator(".jp-Meno-ledger-row[data-execution-count='3']")
    row.wait_for(timeout=20_000)
    assert "z = bytearray" in row.inner_text() or "%%memprofile" in row.inner_text()
    assert page.locator(".jp-Meno-ledger-row[data-execution-count='4']").count() == 0
    page.evaluate("() => { window.jupyterapp.shell.currentWidget.content.activeCellIndex = 0; }")
    row.click()
    page.wait_for_function(
        "() => window.jupyterapp.shell.currentWidget.content.activeCellIndex === "
        f"{profiled_index}", timeout=5_000)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "sidebar-memprofile-row.png"))


def test_figures_and_tables_follow_the_dark_theme(lab: Lab, page: Any) -> None:
    lab.notebook("dark.ipynb", "%load_ext meno_jupyter",
                 "%%memprofile\nblock = bytearray(40 * 2**20)")
    open_notebook(page, lab, "dark.ipynb")
    page.evaluate("() => window.jupyterapp.commands.execute('apputils:change-theme',"
                  " {theme: 'JupyterLab Dark'})")
    try:
        page.wait_for_function(
            "() => document.body.dataset.jpThemeLight === 'false'", timeout=30_000)
        run_cell(page, 0)
        run_cell(page, 1)
        figure = page.locator(".jp-Notebook .js-plotly-plot .main-svg").first
        figure.wait_for(timeout=30_000)
        background = figure.evaluate("node => getComputedStyle(node).backgroundColor")
        assert background in ("rgba(0, 0, 0, 0)", "transparent"), background
        rule = page.locator(".jp-Notebook .jp-OutputArea-output table td").first
        rule.wait_for(timeout=10_000)
        border = rule.evaluate("node => getComputedStyle(node).borderBottomColor")
        assert border != "rgb(221, 221, 221)", border  # the theme's, not a bright rule
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "dark-theme-profile.png"))
    finally:
        page.evaluate("() => window.jupyterapp.commands.execute('apputils:change-theme',"
                      " {theme: 'JupyterLab Light'})")
        page.wait_for_function(
            "() => document.body.dataset.jpThemeLight === 'true'", timeout=30_000)


def test_the_panel_fits_its_default_width_and_follows_the_front_document(
        lab: Lab, page: Any) -> None:
    lab.notebook("a-notebook-with-a-long-name.ipynb", "%load_ext meno_jupyter\n%memwatch on",
                 "values = bytearray(30 * 2**20)  # a long line of source that must be cut"
                 " with an ellipsis, not push the figures out of the sidebar")
    open_notebook(page, lab, "a-notebook-with-a-long-name.ipynb")
    open_panel(page)
    run_cell(page, 0)
    run_cell(page, 1)
    panel = page.locator("#jp-Meno-memory-panel")
    page.locator(".jp-Meno-ledger-row").first.wait_for(timeout=20_000)
    heading = panel.locator(".jp-Meno-heading").first
    assert heading.inner_text().lower().endswith("a-notebook-with-a-long-name.ipynb")
    # The narrowest a user gets without dragging: 250 px.
    page.evaluate(
        "() => { const split = window.jupyterapp.shell._hsplitPanel;"
        " const sizes = split.relativeSizes(); const total = split.node.clientWidth;"
        " const right = 250 / total; const left = sizes[0];"
        " split.setRelativeSizes([left, 1 - left - right, right]); }")
    page.wait_for_timeout(500)
    fits = page.evaluate(
        "() => { const p = document.querySelector('#jp-Meno-memory-panel')"
        ".getBoundingClientRect();"
        " const cells = [...document.querySelectorAll("
        "'.jp-Meno-ledger th, .jp-Meno-ledger-row td:not(.jp-Meno-source),"
        " .jp-Meno-kernel-row td:nth-child(2), .jp-Meno-detail, .jp-Meno-rss')];"
        " const cut = cells.filter(c => c.getBoundingClientRect().right > p.right + 1"
        " || c.scrollWidth > c.clientWidth).map(c => c.textContent);"
        " return [p.width, cells.length, cut]; }")
    width, count, cut = fits
    assert abs(width - 250) <= 20, fits
    assert count >= 8 and cut == [], fits  # every header and figure whole, none cut off
    # The widest figures a row can hold (three digits, then the next unit) fit too.
    room = page.evaluate(
        "() => { const td = document.querySelector('.jp-Meno-ledger-row td:nth-child(3)');"
        " const style = getComputedStyle(td); const pad = parseFloat(style.paddingLeft)"
        " + parseFloat(style.paddingRight);"
        " const ctx = document.createElement('canvas').getContext('2d'); ctx.font = style.font;"
        " const widest = Math.max(...['+88.8 MiB', '+0.98 GiB', '+999 MiB', '-88.8 KiB']"
        ".map(t => ctx.measureText(t).width));"
        " return [widest, td.clientWidth - pad]; }")
    assert room[0] <= room[1], room
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "sidebar-default-width.png"))
    page.evaluate("() => window.jupyterapp.commands.execute('launcher:create')")
    page.wait_for_function(
        "() => document.querySelector('.jp-Meno-panel-status').textContent"
        ".includes('no notebook with a kernel is active')", timeout=10_000)
    assert heading.inner_text().lower() == "active kernel"
