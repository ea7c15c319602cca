from __future__ import annotations

import json
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from IPython.core.error import UsageError
from IPython.utils.capture import capture_output

from meno_jupyter.core.memory import MIB
from meno_jupyter.core.profiler import ProfileResult
from tests.magics.helpers import shown

LINUX = sys.platform.startswith("linux")

SPIKE_THEN_KEEP = """
from tests.memhelp import keep, spike
spike(64)
kept = keep(100)
"""


def run(shell: Any, cell: str) -> tuple[Any, Any]:
    with capture_output() as captured:
        result = shell.run_cell(cell)
    return result, captured


@pytest.mark.skipif(not LINUX, reason="exact peak needs /proc/self/clear_refs")
def test_profile_is_stored_and_exact(shell: Any) -> None:
    result, captured = run(shell, "%%memprofile -o prof\n" + SPIKE_THEN_KEEP)
    assert result.success
    prof = shell.user_ns["prof"]
    assert isinstance(prof, ProfileResult)
    assert prof.exact_peak
    assert 99 * MIB <= prof.peak_increase <= 102 * MIB
    assert 99 * MIB <= prof.delta <= 102 * MIB
    assert "kept" in shell.user_ns  # the cell ran in the user namespace
    assert "peak increase" in shown(captured)


def test_terminal_gets_text_only(shell: Any) -> None:
    shell.display_formatter.active_types = ["text/plain"]
    _, captured = run(shell, "%%memprofile\nx = [0] * 1000")
    assert not any("application/vnd.plotly.v1+json" in out.data for out in captured.outputs)
    assert "memory profile" in shown(captured)


def test_notebook_gets_the_plotly_timeline_and_a_table(rich_shell: Any) -> None:
    _, captured = run(rich_shell, "%%memprofile\n" + SPIKE_THEN_KEEP)
    kinds = [set(out.data) for out in captured.outputs]
    figure = next(out.data for out in captured.outputs
                  if "application/vnd.plotly.v1+json" in out.data)
    assert figure["application/vnd.plotly.v1+json"]["data"][0]["name"] == "RSS"
    # Transparent, so it reads on JupyterLab's dark theme as on the light one.
    template = figure["application/vnd.plotly.v1+json"]["layout"]["template"]["layout"]
    assert template["paper_bgcolor"] == template["plot_bgcolor"] == "rgba(0,0,0,0)"
    assert any("text/html" in kind and "<table" in out.data["text/html"]
               for kind, out in zip(kinds, captured.outputs, strict=True))


def test_no_plot_leaves_out_the_figure(rich_shell: Any) -> None:
    _, captured = run(rich_shell, "%%memprofile --no-plot\nx = 1")
    assert not any("application/vnd.plotly.v1+json" in out.data for out in captured.outputs)


def test_last_expression_is_displayed_as_usual(shell: Any) -> None:
    _, captured = run(shell, "%%memprofile --no-plot\n6 * 7")
    assert "42" in shown(captured)


def test_a_failing_cell_shows_the_profile_then_fails_as_without_the_magic(shell: Any) -> None:
    result, captured = run(shell, "%%memprofile -o prof\nx = 1\n1 / 0\n")
    assert not result.success
    assert isinstance(result.error_in_exec, ZeroDivisionError)
    assert shown(captured).count("Traceback (most recent call last)") == 1
    assert "memory profile" in shown(captured)
    # The same traceback as without the magic: the cell's own line, no frames of ours.
    assert "----> 2 1 / 0" in shown(captured)
    assert "memprofile" not in shown(captured).split("Traceback")[1]
    assert shell.user_ns["prof"].error == "ZeroDivisionError"
    assert shell.user_ns["x"] == 1


def test_a_syntax_error_fails_as_without_the_magic(shell: Any) -> None:
    result, captured = run(shell, "%%memprofile\nx = (\n")
    assert isinstance(result.error_in_exec, SyntaxError)
    assert shown(captured).count("SyntaxError") >= 1


def test_ctrl_c_stops_the_sampler_and_surfaces(shell: Any) -> None:
    result, _ = run(shell, "%%memprofile -o prof\nraise KeyboardInterrupt\n")
    assert isinstance(result.error_in_exec, KeyboardInterrupt)
    assert not [t for t in threading.enumerate() if t.name == "meno-sampler"]
    assert shell.user_ns["prof"].error == "KeyboardInterrupt"


def test_json_export(shell: Any, tmp_path: Path) -> None:
    target = tmp_path / "profile.json"
    result, _ = run(shell, f"%%memprofile --json {target}\nblock = bytearray(10**6)")
    assert result.success
    data = json.loads(target.read_text())
    assert {"peak_increase", "delta", "timeline", "exact_peak"} <= set(data)


def test_trace_lists_the_cell_line(shell: Any) -> None:
    result, captured = run(
        shell, "%%memprofile --trace --top 3 -o prof\nrows = [{'i': i} for i in range(100_000)]"
    )
    assert result.success
    top = shell.user_ns["prof"].top_lines
    assert top and "range(100_000)" in top[0].line.source
    assert shell.user_ns["prof"].tracer == "memray"  # the test extra installs it
    assert "Top allocations (memray" in shown(captured)
    assert "tracemalloc" not in captured.stdout  # no warning that it will be slow


def test_trace_names_a_function_defined_in_an_earlier_cell(shell: Any) -> None:
    assert run(shell, "def build():\n    return [bytes(1000) for _ in range(100_000)]\n")[0].success
    result, _ = run(shell, "%%memprofile --trace --top 3 -o prof\nrows = build()")
    assert result.success
    top = shell.user_ns["prof"].top_lines[0]
    assert "bytes(1000) for _ in range(100_000)" in top.line.source  # inside build()
    assert top.retained_bytes >= 95 * 10**6


def test_trace_without_memray_says_it_will_be_slow(shell: Any,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from meno_jupyter.core import profiler

    monkeypatch.setattr(profiler, "memray_available", lambda: False)
    result, captured = run(shell, "%%memprofile --trace -o prof\nrows = [{'i': i} for i in "
                                  "range(10_000)]")
    assert result.success and shell.user_ns["prof"].tracer == "tracemalloc"
    assert captured.stdout.startswith("memprofile --trace: every Python allocation is traced "
                                      "with tracemalloc (memray is not installed")
    assert "Top Python allocations (tracemalloc)" in shown(captured)
    result, captured = run(shell, "%%memprofile --trace --native\nx = 1")
    assert isinstance(result.error_in_exec, UsageError)
    assert "pip install 'meno-jupyter[trace]'" in str(result.error_in_exec)


def test_trace_keep_and_native_options(shell: Any, tmp_path: Path) -> None:
    kept = tmp_path / "cell.bin"
    result, captured = run(shell, f"%%memprofile --trace --native --keep {kept} -o prof\n"
                                  "import numpy as np\nblock = np.ones(2**22)")
    assert result.success and kept.exists()
    prof = shell.user_ns["prof"]
    assert prof.trace_capture_path == str(kept)
    assert f"memray flamegraph {kept}" in shown(captured)
    assert prof.top_lines[0].native_frames
    result, _ = run(shell, f"%%memprofile --keep {kept}\nx = 1")
    assert isinstance(result.error_in_exec, UsageError)  # --keep without --trace


def test_nested_trace_falls_back_and_says_why(shell: Any) -> None:
    cell = ("%%memprofile --trace -o outer --no-plot\n"
            "get_ipython().run_cell_magic('memprofile', '--trace -o inner --no-plot', "
            "'rows = [{\"i\": i} for i in range(20_000)]')")
    result, _ = run(shell, cell)
    assert result.success
    assert shell.user_ns["outer"].tracer == "memray"
    inner = shell.user_ns["inner"]
    assert inner.tracer == "tracemalloc" and "memray is already tracking" in inner.trace_note


@pytest.mark.skipif(not LINUX, reason="exact peak needs /proc/self/clear_refs")
def test_nested_profiles_are_both_right(shell: Any) -> None:
    cell = (
        "%%memprofile -o outer --no-plot\n"
        "from tests.memhelp import spike\n"
        "spike(96)\n"
        "get_ipython().run_cell_magic('memprofile', '-o inner --no-plot', 'spike(32)')\n"
    )
    result, _ = run(shell, cell)
    assert result.success
    outer, inner = shell.user_ns["outer"], shell.user_ns["inner"]
    assert outer.peak_increase >= 95 * MIB
    assert 31 * MIB <= inner.peak_increase <= 34 * MIB


@pytest.mark.skipif(not LINUX, reason="fork")
def test_a_cell_that_forks_counts_its_children(shell: Any) -> None:
    cell = (
        "%%memprofile -o prof --no-plot\n"
        "import os, time, numpy as np\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    block = np.ones(120 * 2**20 // 8); time.sleep(0.3); os._exit(0)\n"
        "os.waitpid(pid, 0)\n"
    )
    result, _ = run(shell, cell)
    assert result.success
    assert shell.user_ns["prof"].children_peak_rss >= 110 * MIB


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("--bogus", "unrecognized arguments"),
        ("-i 0", "interval"),
        ("-i -1", "interval"),
        ("-i 100000", "interval"),
        ("-o 1abc", "valid Python variable name"),
        ("-o class", "valid Python variable name"),
        ("--top 0", "--top"),
        ("--json /no/such/dir/x.json", "does not exist"),
        ("--json /tmp", "is a directory"),
        ("--json /proc/x.json", "cannot write /proc/x.json"),
    ],
)
def test_bad_arguments_raise_usage_errors(shell: Any, line: str, message: str) -> None:
    with pytest.raises(UsageError, match=message) as error:
        shell.run_cell_magic("memprofile", line, "ran = True")
    assert "ran" not in shell.user_ns  # the cell did not run
    if message == "unrecognized arguments":
        assert "--trace" in str(error.value)  # the help text comes with it


def test_a_report_that_cannot_be_written_never_hides_the_cell_error(
        shell: Any, tmp_path: Path) -> None:
    target = tmp_path / "gone" / "profile.json"
    target.parent.mkdir()
    # The directory vanishes while the cell runs: the check before could not see it.
    cell = f"import shutil; shutil.rmtree({str(target.parent)!r})\n1 / 0"
    result, captured = run(shell, f"%%memprofile --json {target} -o prof\n{cell}")
    assert isinstance(result.error_in_exec, ZeroDivisionError)  # the cell's own error
    assert "could not be completed" in captured.stderr
    assert "memory profile" in shown(captured)
    assert shell.user_ns["prof"].error == "ZeroDivisionError"


def test_memprofile_is_a_line_magic_too(shell: Any) -> None:
    result, captured = run(shell, "%memprofile --no-plot -o prof data = bytearray(8 * 2**20)")
    assert result.success and len(shell.user_ns["data"]) == 8 * 2**20
    assert shell.user_ns["prof"].peak_increase >= 7 * MIB
    assert "memory profile" in shown(captured)
    with pytest.raises(UsageError, match="needs a statement"):
        shell.run_line_magic("memprofile", "--no-plot")
    with pytest.raises(UsageError, match="options only on its line"):
        shell.run_cell_magic("memprofile", "--no-plot x = 1", "y = 2")


def test_an_unknown_option_gets_the_closest_suggested(shell: Any) -> None:
    with pytest.raises(UsageError, match=r"--tpo: did you mean --top\?"):
        shell.run_cell_magic("memprofile", "--tpo 3", "x = 1")
    with pytest.raises(UsageError, match=r"--clera: did you mean --clear\?"):
        shell.run_line_magic("memwatch", "--clera")


def test_help_reads_as_plain_text(shell: Any) -> None:
    for doc in (shell.find_cell_magic("memprofile").__doc__,
                *(shell.find_line_magic(name).__doc__ for name in (
                    "memprofile", "memwatch", "memstatus", "memclean", "optimize_df",
                    "memdash", "memguard"))):
        assert "::" not in doc and "``" not in doc
        assert doc.startswith("Usage:")


def test_help_is_generated(shell: Any) -> None:
    doc = shell.find_cell_magic("memprofile").__doc__
    for option in ("-o NAME", "--interval SECONDS", "--trace", "--top N", "--no-plot", "--json"):
        assert option in doc


def test_growth_lines_are_numbered_markers_not_rotated_labels(rich_shell: Any) -> None:
    from meno_jupyter.core.attribution import CodeLine, GrowthLine
    from meno_jupyter.display.figures import profile_figure_spec

    _, _ = run(rich_shell, "%%memprofile -o prof --no-plot\n" + SPIKE_THEN_KEEP)
    prof = rich_shell.user_ns["prof"]
    lines = tuple(GrowthLine(CodeLine("<ipython-input-1-x>", n, "<module>", f"step_{n}()"),
                             n * MIB, 1, n * 0.1, n * 0.1 + (n - 1) * 1.5) for n in (1, 2))
    import dataclasses

    spec = profile_figure_spec(dataclasses.replace(prof, growth_lines=lines))
    notes = spec["layout"]["annotations"]
    assert not any("textangle" in note for note in notes)
    assert [note["text"] for note in notes if note["text"] in ("1", "2")] == ["1", "2"]
    growth = next(trace for trace in spec["data"] if trace["name"] == "growth")
    assert growth["text"][0] == "1: +1.0 MiB while running line 1: step_1() (at 0.1 s)"
    assert growth["text"][1] == ("2: +2.0 MiB while running line 2: step_2() "
                                 "(from 0.2 s to 1.7 s)")
    bands = [shape for shape in spec["layout"]["shapes"] if shape["type"] == "rect"]
    assert [(band["x0"], band["x1"]) for band in bands] == [(0.2, 1.7)]  # line 2 only
    html = dataclasses.replace(prof, growth_lines=lines).to_html()
    assert "<th" in html and ">#</th>" in html


def test_a_cell_that_grows_nothing_gets_no_chart(rich_shell: Any) -> None:
    _, captured = run(rich_shell, "%%memprofile\nx = 1")
    assert not any("application/vnd.plotly.v1+json" in out.data for out in captured.outputs)
    assert "memory profile" in shown(captured)
