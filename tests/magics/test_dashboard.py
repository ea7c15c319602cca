"""%memdash and MemoryDashboard in a real IPython shell."""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

import pandas as pd
import pytest
from IPython.core.error import UsageError
from IPython.utils.capture import capture_output

from meno_jupyter.core.ledger import CellRecord, current_ledger
from meno_jupyter.core.live import LiveSample
from meno_jupyter.core.memory import GIB, MIB
from meno_jupyter.widgets import dashboard as dashboard_module
from meno_jupyter.widgets.dashboard import MemoryDashboard, open_dashboards
from tests.livehelp import FakeMemory, fake_limit, live_threads, wait_until
from tests.magics.helpers import shown

LIMIT = fake_limit(4, 2)


def widget_instances() -> dict[str, Any]:
    """Every widget model not yet closed (ipywidgets' registry)."""
    from ipywidgets.widgets.widget import _instances

    return _instances


@pytest.fixture
def fake() -> FakeMemory:
    return FakeMemory(LIMIT)


@pytest.fixture
def dash(shell: Any, fake: FakeMemory) -> Any:
    board = MemoryDashboard(0.1, shell=shell, feed=fake.feed)
    yield board
    board.close()


def sample(rss: int, t: float | None = None) -> LiveSample:
    level = "high" if rss > 0.85 * LIMIT.limit_bytes else "low"
    return LiveSample(time.time() if t is None else t, rss, 0, LIMIT, level)  # type: ignore[arg-type]


def test_dashboard_draws_header_gauge_and_a_live_figure(dash: Any, fake: FakeMemory) -> None:
    assert dash.figure is not None  # plotly FigureWidget
    assert wait_until(lambda: len(dash.figure.data[0].x) >= 3)
    assert dash.updates >= 3
    bundle = dash._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    rss_trace = dash.figure.data[0]
    assert len(rss_trace.x) >= 3
    assert max(rss_trace.y) == pytest.approx(1024.0)  # 1 GiB in MiB
    assert "RSS 1.0 GiB" in dash._header.value
    assert dash._gauge.value == pytest.approx(25.0)


def test_simulated_samples_set_pressure_colours_and_the_limit_line(dash: Any) -> None:
    dash.update(sample(int(3.8 * GIB)))
    assert "high" in dash._header.value
    assert dash._gauge.style.bar_color == "#c62828"
    assert dash.figure.data[0].line.color == "#c62828"
    limit_lines = [s for s in dash.figure.layout.shapes if s.type == "line"]
    assert [s.y0 for s in limit_lines] == [pytest.approx(4096.0)]
    assert dash._gauge.value == pytest.approx(95.0)
    dash.update(sample(1 * GIB))
    assert dash.figure.data[0].line.color == "#2e7d32"


def test_series_is_decimated_to_2000_points(shell: Any) -> None:
    fake = FakeMemory(LIMIT)
    fake.rss = 10 * MIB
    now = time.time()
    for i in range(10_000):  # history of 10,000 samples
        fake.feed._history.append(now - 10_000 + i, (i % 97) * MIB)
    board = MemoryDashboard(0.5, shell=shell, feed=fake.feed)
    try:
        assert len(board.figure.data[0].x) <= 2_000
        assert max(board.figure.data[0].y) == pytest.approx(96.0)  # peaks survive
    finally:
        board.close()


def test_each_recorded_cell_gets_a_marker(shell: Any, fake: FakeMemory) -> None:
    shell.run_line_magic("memwatch", "on --clear")
    try:
        board = MemoryDashboard(0.5, shell=shell, feed=fake.feed)
        with capture_output():
            shell.run_cell("x = 1", store_history=True)
            shell.run_cell("y = [0] * 1000", store_history=True)
        ledger = current_ledger()
        assert ledger is not None and len(ledger) == 2
        board.update(fake.feed.sample())
        markers = board.figure.data[1]
        assert len(markers.x) == 2
        assert "y = [0] * 1000" in markers.text[1]
        board.close()
    finally:
        shell.run_line_magic("memwatch", "off")


def test_largest_variables_are_listed_after_each_cell(dash: Any, shell: Any) -> None:
    with capture_output():
        shell.run_cell("big = bytearray(30 * 1024 * 1024); small = 1")
    assert dash.variables[0].name == "big"
    assert "big" in dash._variables_box.children[0].children[0].value


def test_delete_asks_first_and_only_deletes_on_confirm(dash: Any, shell: Any) -> None:
    shell.user_ns["victim"] = bytearray(20 * MIB)
    dash.refresh_variables()
    dash.request_delete("victim")
    assert dash.pending_delete == "victim"
    assert dash._confirm.layout.display == "flex"
    assert "victim" in dash._confirm_text.value and "20.0 MiB" in dash._confirm_text.value
    assert "victim" in shell.user_ns  # nothing deleted yet
    dash.cancel_delete()
    assert "victim" in shell.user_ns and dash.pending_delete is None
    dash.request_delete("victim")
    message = dash.confirm_delete()
    assert "victim" not in shell.user_ns
    assert message.startswith("deleted victim")
    assert all(v.name != "victim" for v in dash.variables)


def test_delete_of_a_name_gone_meanwhile_says_so(dash: Any, shell: Any) -> None:
    shell.user_ns["gone"] = 1
    dash.request_delete("gone")
    del shell.user_ns["gone"]
    assert "nothing deleted" in dash.confirm_delete()


def test_optimize_rebinds_the_name_to_a_smaller_frame(dash: Any, shell: Any) -> None:
    frame = pd.DataFrame({"n": list(range(100_000)), "s": ["a", "b"] * 50_000})
    shell.user_ns["frame"] = frame
    dash.refresh_variables()
    row = next(r for r in dash._variables_box.children if "frame" in r.children[0].value)
    assert [b.description for b in row.children[1:]] == ["optimize", "move to disk", "delete"]
    message = dash.optimize("frame")
    smaller = shell.user_ns["frame"]
    assert smaller is not frame
    assert smaller.memory_usage(deep=True).sum() < frame.memory_usage(deep=True).sum()
    assert (smaller["n"] == frame["n"]).all() and (smaller["s"] == frame["s"]).all()
    assert "smaller, every value kept" in message
    # Optimized once: not offered again; the buttons stay in one column.
    row = next(r for r in dash._variables_box.children if "frame" in r.children[0].value)
    assert [getattr(b, "description", "") for b in row.children[1:]] == [
        "", "move to disk", "delete"]
    assert row.children[1].layout.width == row.children[2].layout.width == "96px"


def test_move_to_disk_frees_the_memory_and_keeps_the_values(
        dash: Any, shell: Any, tmp_path: Any, monkeypatch: Any) -> None:
    import numpy as np

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    shell.user_ns["emb"] = np.arange(2_000_000, dtype=np.float64)
    dash.refresh_variables()
    message = dash.spill("emb")
    assert message.startswith("emb moved to disk (15.3 MiB):"), message
    assert shell.user_ns["emb"][123] == 123.0 and shell.user_ns["emb"].base is not None
    row = next(r for r in dash._variables_box.children if "emb" in r.children[0].value)
    assert [getattr(b, "description", "") for b in row.children[1:]] == ["", "", "delete"]
    assert "on disk" in row.children[0].value
    shell.user_ns["listed"] = [1, 2]
    assert "listed stays in memory: a value of type int: only numpy" in dash.spill("listed")
    assert "nothing moved" in dash.spill("nope")
    shell.run_line_magic("memspill", "--back emb")


def test_the_dashboard_does_not_list_itself_and_says_when_there_is_nothing(
        dash: Any, shell: Any) -> None:
    shell.user_ns["dashboard"] = dash  # what `dash = %memdash -o` leaves in the namespace
    hidden = shell.user_ns_hidden
    for name in [n for n in shell.user_ns
                 if not n.startswith("_") and n not in hidden and n != "dashboard"]:
        shell.user_ns.pop(name)
    dash.refresh_variables()
    assert all(v.name != "dashboard" for v in dash.variables)
    assert "none yet" in dash._variables_box.children[0].value


def test_optimize_refuses_what_is_not_a_dataframe(dash: Any, shell: Any) -> None:
    shell.user_ns["numbers"] = [1, 2, 3]
    assert "not a DataFrame" in dash.optimize("numbers")
    assert shell.user_ns["numbers"] == [1, 2, 3]
    assert "no variable named" in dash.optimize("nope")


def test_free_memory_drops_the_output_cache(dash: Any, shell: Any) -> None:
    with capture_output():
        shell.run_cell("bytearray(40 * 1024 * 1024)", store_history=True)
    assert any(isinstance(v, bytearray) for v in shell.user_ns["Out"].values())
    message = dash.free_memory()
    assert not shell.user_ns["Out"]
    assert message.startswith("freed ")


def test_close_stops_the_thread_and_unhooks(shell: Any) -> None:
    fake = FakeMemory(LIMIT)
    board = MemoryDashboard(0.1, shell=shell, feed=fake.feed)
    assert live_threads()
    updates = board.updates
    board.close()
    assert not fake.feed.running and not live_threads()
    assert board._after_cell not in shell.events.callbacks["post_run_cell"]
    time.sleep(0.3)
    assert board.updates == updates
    assert board not in open_dashboards()
    board.close()  # twice is fine


def test_dashboards_share_one_thread(shell: Any) -> None:
    fake = FakeMemory(LIMIT)
    boards = [MemoryDashboard(0.1, shell=shell, feed=fake.feed) for _ in range(3)]
    # Boards made a moment apart are due at different times: wait for updates, not samples.
    assert wait_until(lambda: all(b.updates >= 2 for b in boards))
    assert len(live_threads()) == 1
    for board in boards:
        board.close()
    assert not live_threads()


def test_a_hundred_create_close_cycles_leak_no_thread_and_no_hook(shell: Any) -> None:
    hooks = len(shell.events.callbacks["post_run_cell"])
    threads = threading.active_count()
    widgets = len(widget_instances())
    for _ in range(100):
        MemoryDashboard(0.1, shell=shell).close()
    assert not live_threads()
    assert threading.active_count() == threads
    assert len(widget_instances()) == widgets  # every widget model closed
    assert len(shell.events.callbacks["post_run_cell"]) == hooks
    assert not open_dashboards()


def test_without_figurewidget_it_degrades_to_an_svg_chart(
        shell: Any, fake: FakeMemory, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_anywidget(spec: Any) -> Any:
        raise ImportError("anywidget is missing")

    monkeypatch.setattr(dashboard_module, "_figure_widget", no_anywidget)
    board = MemoryDashboard(0.1, shell=shell, feed=fake.feed)
    try:
        assert board.figure is None
        assert "pip install anywidget" in board.notice
        assert "pip install anywidget" in board._notice.value
        assert wait_until(lambda: "polyline" in board._chart.value)
        assert board._chart.value.startswith("<svg")
        assert "polyline" in board._chart.value
    finally:
        board.close()


def test_memdash_shows_a_dashboard_and_turns_the_ledger_on(shell: Any) -> None:
    shell.run_line_magic("memwatch", "off")
    with capture_output() as captured:
        shell.run_line_magic("memdash", "--interval 0.25 -o board")
    board = shell.user_ns["board"]
    try:
        assert "memwatch on" in captured.stdout
        assert shell.magics_manager.registry["WatchMagics"].watching
        assert captured.outputs  # displayed
        assert board in open_dashboards()
    finally:
        shell.run_line_magic("memwatch", "off")
        with capture_output() as closing:
            shell.run_line_magic("memdash", "--close")
    assert "closed 1 dashboard" in closing.stdout
    assert board.closed and not live_threads()


def test_memdash_sidebar_without_sidecar_says_what_to_install(
        shell: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sidecar", None)
    with capture_output() as captured:
        shell.run_line_magic("memdash", "--sidebar -o board")
    shell.user_ns["board"].close()
    assert "pip install sidecar" in captured.stdout
    assert captured.outputs  # shown inline instead


def test_memdash_sidebar_docks_it_in_a_sidecar(shell: Any) -> None:
    pytest.importorskip("sidecar")
    with capture_output() as captured:
        shell.run_line_magic("memdash", "--sidebar -o board")
    board = shell.user_ns["board"]
    assert "docked" in captured.stdout
    assert type(board.containers[0]).__name__ == "Sidecar"
    board.close()
    assert board.containers[0].comm is None  # closed with the dashboard


@pytest.mark.parametrize(("line", "message"), [
    ("--interval 0", "--interval"),
    ("--interval 120", "--interval"),
    ("--top 0", "--top"),
    ("-o 1x", "valid Python variable name"),
    ("--bogus", "unrecognized arguments"),
])
def test_memdash_bad_arguments_are_clear(shell: Any, line: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        shell.run_line_magic("memdash", line)
    assert not live_threads()


def test_memdash_help_text(shell: Any) -> None:
    doc = shell.find_line_magic("memdash").__doc__
    assert "live memory dashboard" in doc and "--sidebar" in doc


def test_records_outside_the_window_get_no_marker(dash: Any) -> None:
    now = time.time()
    old = CellRecord(1, "old", now - 10_000, 1.0, GIB, GIB, GIB, True, 0)
    from meno_jupyter.display.figures import live_timeline_spec

    spec = live_timeline_spec([now - 5, now], [GIB, GIB], sample(GIB, now), [old],
                              thresholds=(0.7, 0.9))
    assert spec["data"][1]["x"] == []


def test_shown_helper_is_used(shell: Any) -> None:
    with capture_output() as captured:
        shell.run_line_magic("memdash", "--close")
    assert "closed 0 dashboard" in shown(captured)


def test_refreshing_the_variable_list_closes_the_rows_it_replaces(dash: Any, shell: Any) -> None:
    shell.user_ns["some"] = bytearray(MIB)
    dash.refresh_variables()
    before = len(widget_instances())
    old_rows = list(dash._variables_box.children)
    for _ in range(20):
        dash.refresh_variables()
    assert all(row.comm is None for row in old_rows)
    assert len(widget_instances()) == before


def test_a_bad_interval_leaves_no_hook_behind(shell: Any) -> None:
    hooks = len(shell.events.callbacks["post_run_cell"])
    with pytest.raises(ValueError, match="refresh interval"):
        MemoryDashboard(0.01, shell=shell)
    assert len(shell.events.callbacks["post_run_cell"]) == hooks
