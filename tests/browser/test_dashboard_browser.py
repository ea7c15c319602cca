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
                 "print('done', len(blocks))")
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
