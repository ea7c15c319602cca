"""%optimize_df in a real IPython shell."""

from __future__ import annotations

from typing import Any

import pytest
from IPython.core.error import UsageError
from IPython.utils.capture import capture_output

from tests.magics.helpers import shown

FRAME = ("import pandas as pd, numpy as np\n"
         "sales = pd.DataFrame({'store': np.arange(3000) % 40, "
         "'city': np.array(['Lyon', 'Nice'] * 1500, dtype=object), "
         "'amount': np.arange(3000) * 0.5})\n"
         "alias = sales")


def test_rebinds_the_name_and_reports(shell: Any) -> None:
    shell.run_cell(FRAME)
    with capture_output() as captured:
        shell.run_line_magic("optimize_df", "sales -o result")
    sales = shell.user_ns["sales"]
    assert str(sales.store.dtype) == "uint8" and str(sales.city.dtype) == "category"
    assert shell.user_ns["alias"]["store"].dtype == "int64"  # a new frame, not the old one
    result = shell.user_ns["result"]
    assert result.exact and result.saved_bytes > 0
    assert "saved" in shown(captured) and "wraps" in shown(captured)
    assert result.undo().equals(shell.user_ns["alias"])


def test_dry_run_changes_nothing(shell: Any) -> None:
    shell.run_cell(FRAME)
    before = shell.user_ns["sales"]
    with capture_output() as captured:
        shell.run_line_magic("optimize_df", "sales --dry-run")
    assert shell.user_ns["sales"] is before and before["store"].dtype == "int64"
    assert "dry run" in shown(captured)


def test_inplace_is_seen_through_every_reference(shell: Any) -> None:
    shell.run_cell(FRAME)
    shell.run_line_magic("optimize_df", "sales --inplace")
    assert shell.user_ns["alias"] is shell.user_ns["sales"]
    assert str(shell.user_ns["alias"]["store"].dtype) == "uint8"


def test_all_frames(shell: Any) -> None:
    shell.run_cell(FRAME + "\nother = pd.DataFrame({'n': [1, 2] * 100})\nnot_a_frame = [1]")
    with capture_output():
        shell.run_line_magic("optimize_df", "--all -o results")
    assert set(shell.user_ns["results"]) == {"sales", "alias", "other"}
    assert str(shell.user_ns["other"]["n"].dtype) == "uint8"


def test_html_report_shades_hazards(rich_shell: Any) -> None:
    from meno_jupyter.core.memory import format_bytes

    rich_shell.run_cell(FRAME)
    with capture_output() as captured:
        rich_shell.run_line_magic("optimize_df", "sales -o res")
    html = next(o.data["text/html"] for o in captured.outputs if "text/html" in o.data)
    assert "jp-Meno-optimize" in html and "rgba(239,108,0" in html
    # Only what can change results is shaded: the narrowed integers (they wrap), not the
    # text that became a category.
    rows = html.split("per column")[1].split("<tr")[2:]
    shaded = {row.split("<td")[1].split(">")[1].split("<")[0] for row in rows
              if "rgba(239,108,0" in row}
    assert shaded == {"store"}, shaded
    # The distinct-object figure only when it says something new (pandas 2 shares the
    # repeated city strings between rows; pandas 3 stores them as Arrow strings).
    res = rich_shell.user_ns["res"]
    differs = format_bytes(res.distinct_bytes_before) != format_bytes(res.bytes_before)
    assert ("counting each distinct object once" in html) == differs


@pytest.mark.parametrize(("line", "message"), [
    ("missing_frame", "no such variable"),
    ("sales not_a_frame", "not DataFrames: not_a_frame"),
    ("", "name the DataFrames"),
    ("sales --all", "not both"),
    ("sales --rtol 0.1", "needs --aggressive"),
    ("sales -o 1x", "variable name"),
])
def test_bad_input_changes_nothing(shell: Any, line: str, message: str) -> None:
    shell.run_cell(FRAME + "\nnot_a_frame = [1, 2]")
    before = shell.user_ns["sales"]
    with pytest.raises(UsageError, match=message):
        shell.run_line_magic("optimize_df", line)
    assert shell.user_ns["sales"] is before and before["store"].dtype == "int64"


def test_help(shell: Any) -> None:
    doc = shell.find_line_magic("optimize_df").__doc__
    for option in ("--all", "--aggressive", "--rtol X", "--dry-run", "--inplace", "-o NAME"):
        assert option in doc


def test_inplace_with_a_bad_frame_among_good_ones_changes_nothing(shell: Any) -> None:
    shell.run_cell(FRAME + "\ndup = pd.DataFrame([[1, 2]], columns=['a', 'a'])")
    with pytest.raises(UsageError, match=r"dup: columns must be unique.*repeated: a.*nothing "
                                         r"changed"):
        shell.run_line_magic("optimize_df", "sales dup --inplace")
    assert shell.user_ns["sales"]["store"].dtype == "int64"  # before: uint8 with no undo
    assert shell.user_ns["alias"] is shell.user_ns["sales"]


def test_inplace_interrupted_half_way_puts_the_first_frames_back(shell: Any) -> None:
    from meno_jupyter.core import dataframe

    shell.run_cell(FRAME + "\nother = sales.copy()")
    dtypes = list(shell.user_ns["sales"].dtypes)
    original = dataframe.optimize_dataframe
    calls = []

    def interrupted(frame: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # Ctrl-C during the second frame
        return original(frame, **kwargs)

    dataframe.optimize_dataframe = interrupted
    try:
        with pytest.raises(KeyboardInterrupt):
            shell.run_line_magic("optimize_df", "sales other --inplace")
    finally:
        dataframe.optimize_dataframe = original
    assert len(calls) == 2
    for name in ("sales", "other"):
        assert list(shell.user_ns[name].dtypes) == dtypes
