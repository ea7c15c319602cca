from __future__ import annotations

from typing import Any

import pytest
from IPython.core.error import UsageError
from IPython.utils.capture import capture_output

from meno_jupyter.core.memory import MIB
from meno_jupyter.core.status import MemoryStatus
from tests.magics.helpers import shown


def test_status_lists_the_largest_user_variables(shell: Any) -> None:
    shell.run_cell("import numpy as np\nbig = np.ones(30 * 2**20 // 8)\nsmall = [1, 2, 3]")
    with capture_output() as captured:
        shell.run_line_magic("memstatus", "-o status --top 2")
    status = shell.user_ns["status"]
    assert isinstance(status, MemoryStatus)
    assert [v.name for v in status.largest] == ["big", "small"]
    assert status.largest[0].size_bytes == 30 * MIB
    assert status.rss_bytes > 30 * MIB
    assert status.limit.limit_bytes > 0
    assert status.pressure in {"low", "medium", "high"}
    for text in ("process RSS", "effective limit", "big", "GC counts"):
        assert text in shown(captured)


def test_output_cache_holding_a_deleted_frame_is_reported(shell: Any) -> None:
    shell.run_cell("import pandas as pd, numpy as np\n"
                   "frame = pd.DataFrame({'a': np.arange(20_000_000)})", store_history=True)
    shell.run_cell("frame", store_history=True)  # Out[N] now holds the frame
    shell.run_cell("del frame", store_history=True)
    with capture_output() as captured:
        shell.run_line_magic("memstatus", "-o status")
    status = shell.user_ns["status"]
    assert status.output_cache_bytes >= 150 * MIB
    assert "%memclean" in shown(captured)
    entries = status.output_cache_entries
    assert f"in {entries} {'entry' if entries == 1 else 'entries'}" in shown(captured)


def test_html_rendering_has_the_pressure_badge(rich_shell: Any) -> None:
    with capture_output() as captured:
        rich_shell.run_line_magic("memstatus", "")
    html = next(out.data["text/html"] for out in captured.outputs if "text/html" in out.data)
    assert "jp-Meno-pressure" in html and "effective limit" in html
    # Not the status bar's class: that one has a pointer cursor and a click handler.
    assert 'class="jp-Meno-memstatus"' in html and 'class="jp-Meno-status"' not in html


@pytest.mark.parametrize(("line", "message"), [("--top -1", "--top"), ("-o 9x", "variable"),
                                               ("--nope", "unrecognized")])
def test_bad_arguments(shell: Any, line: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        shell.run_line_magic("memstatus", line)
