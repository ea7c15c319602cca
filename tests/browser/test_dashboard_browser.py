"""%memdash in a real JupyterLab in Chromium: the figure moves while a cell is busy."""

from __future__ import annotations

import itertools
import time
from typing import Any

import pytest

from tests.browser.conftest import (
    ARTIFACTS,
    Lab,
    cell_is_busy,
    open_notebook,
    run_cell,
    wait_for_prompt,
)

pytestmark = pytest.mark.browser

BUSY_CELL = """\
import time
import numpy as np
blocks = []
for _ in range(40):  # ~400 MiB over ~12 s; sleeping lets the dashboard's thread run
    blocks.append(np.ones(10 * 2**20 // 8))
    time.sleep(0.3)
"""

RSS_LINE = ".jp-Meno-dashboard .js-plotly-plot .scatterlayer .trace:first-child path.js-line"


def test_dashboard_figure_changes_while_a_cell_is_busy(lab: Lab, page: Any) -> None:
    lab.notebook("dash.ipynb", "%load_ext meno_jupyter", "%memdash --interval 0.25", BUSY_CELL,
                 "print('done', len(blocks))",
                 "import pandas as pd\nframe = pd.DataFrame({'n': range(200_000)})")
    open_notebook(page, lab, "dash.ipynb")
    run_cell(page, 0)
    run_cell(page, 1)
    page.wait_for_selector(RSS_LINE, timeout=60_000)
    header = page.locator(".jp-Meno-dashboard .jp-Meno-dashboard-header")
    run_cell(page, 2, wait=False)
    wait_for_prompt(page, 2, "*")
    lines: list[str] = []
    headers: list[str] = []
    while cell_is_busy(page, 2):
        lines.append(page.locator(RSS_LINE).get_attribute("d") or "")
        headers.append(header.inner_text())
        time.sleep(0.5)
    run_cell(page, 3)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
    changes = sum(1 for a, b in itertools.pairwise(lines) if a != b)
    assert changes >= 5, f"figure changed {changes} times in {len(lines)} looks"
    assert len(set(headers)) >= 5, headers
    page.wait_for_selector("text=done 40", timeout=30_000)

    # The layout: the gauge as wide as the chart, the rows' buttons in one column, the
    # dashboard not listing itself, and no second "optimize" for an optimized frame.
    run_cell(page, 4)
    dashboard = page.locator(".jp-Meno-dashboard")
    optimize = dashboard.get_by_role("button", name="optimize")
    optimize.wait_for(timeout=30_000)
    gauge = dashboard.locator(".jp-Meno-gauge").bounding_box()
    chart = dashboard.locator(".js-plotly-plot").bounding_box()
    assert gauge is not None and chart is not None
    assert 0.85 < gauge["width"] / chart["width"] < 1.15, (gauge, chart)
    deletes = dashboard.get_by_role("button", name="delete")
    assert deletes.count() == 2  # blocks and frame; not the dashboard itself
    lefts = {round(box["x"]) for box in (deletes.nth(i).bounding_box() for i in range(2))
             if box is not None}
    assert len(lefts) == 1, lefts
    rows = dashboard.inner_text()
    assert "MemoryDashboard" not in rows and "blocks" in rows and "frame" in rows
    page.screenshot(path=str(ARTIFACTS / "dashboard-rows.png"), full_page=True)
    optimize.click()
    page.wait_for_function("() => document.querySelector('.jp-Meno-dashboard')"
                           ".innerText.includes('every value kept')", timeout=30_000)
    page.wait_for_timeout(500)
    assert optimize.count() == 0
    # Move to disk: the frame's memory is freed, its row no longer offers it.
    move = dashboard.get_by_role("button", name="move to disk")
    assert move.count() == 1  # the frame; not the list of blocks
    move.click()
    page.wait_for_function("() => document.querySelector('.jp-Meno-dashboard')"
                           ".innerText.includes('frame moved to disk')", timeout=30_000)
    page.wait_for_timeout(500)
    assert move.count() == 0
    page.screenshot(path=str(ARTIFACTS / "dashboard-moved-to-disk.png"), full_page=True)
