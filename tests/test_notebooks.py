"""The tutorials and the magics, executed by a real Jupyter kernel through nbclient."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError
from nbformat.v4 import new_code_cell, new_notebook

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))
# The guard's notebook runs memory up to the limit on purpose, and the checkpoints' one
# forks its kernel: tests/oom runs them in a kernel inside a memory cgroup.
IN_A_CGROUP = {"07_memory_guard.ipynb", "09_checkpoints.ipynb"}
PLOTLY = "application/vnd.plotly.v1+json"
ANSI = re.compile(r"\x1b\[[0-9;]*m")

pytestmark = pytest.mark.kernel


def execute(notebook: Any, allow_errors: bool = False) -> Any:
    client = NotebookClient(notebook, timeout=600, kernel_name="python3",
                            allow_errors=allow_errors, resources={"metadata": {"path": "."}})
    client.execute()
    return notebook


def outputs_of(cell: Any, output_type: str) -> list[Any]:
    return [out for out in cell.outputs if out.output_type == output_type]


def test_there_are_notebooks() -> None:
    assert NOTEBOOKS, "notebooks/ is empty"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebooks_are_stored_without_outputs(path: Path) -> None:
    notebook = nbformat.read(path, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, path.name


@pytest.mark.parametrize("path", [p for p in NOTEBOOKS if p.name not in IN_A_CGROUP],
                         ids=[p.name for p in NOTEBOOKS if p.name not in IN_A_CGROUP])
def test_notebook_executes(path: Path) -> None:
    notebook = execute(nbformat.read(path, as_version=4))
    errors = [out for cell in notebook.cells if cell.cell_type == "code"
              for out in outputs_of(cell, "error")]
    assert not errors
    # A background thread's failure shows only on stderr: that counts as an error too.
    stderr = [out.text for cell in notebook.cells if cell.cell_type == "code"
              for out in outputs_of(cell, "stream") if out.name == "stderr"]
    assert not [text for text in stderr if "Traceback" in text or "failed to update" in text], \
        stderr


def test_quickstart_shows_timelines_exact_peaks_and_status() -> None:
    path = next(p for p in NOTEBOOKS if p.name == "01_quickstart.ipynb")
    notebook = execute(nbformat.read(path, as_version=4))
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    profiled = [cell for cell in code if cell.source.startswith("%%memprofile")]
    assert len(profiled) == 3
    for cell in profiled:
        bundles = [out.data for out in outputs_of(cell, "display_data")]
        assert any(PLOTLY in data for data in bundles), cell.source
        assert any("peak increase" in data.get("text/html", "") for data in bundles)
    printed = "".join(out.text for cell in code for out in outputs_of(cell, "stream"))
    if sys.platform.startswith("linux"):
        assert "exact: True" in printed
    status = next(cell for cell in code if cell.source.startswith("%memstatus"))
    html = "".join(out.data.get("text/html", "") for out in outputs_of(status, "display_data"))
    assert "effective limit" in html and "sales" in html


def magic_notebook(*sources: str) -> Any:
    return new_notebook(cells=[new_code_cell("%load_ext meno_jupyter"),
                               *[new_code_cell(s) for s in sources]])


def test_in_a_kernel_a_failing_cell_shows_its_profile_then_one_error() -> None:
    notebook = execute(magic_notebook("%%memprofile -o prof\nx = 1\n1 / 0", "prof.error"),
                       allow_errors=True)
    failing = notebook.cells[1]
    kinds = [out.output_type for out in failing.outputs]
    assert kinds.count("error") == 1
    assert kinds.index("display_data") < kinds.index("error")  # profile first, then the error
    error = outputs_of(failing, "error")[0]
    assert error.ename == "ZeroDivisionError"
    assert any("----> 2 1 / 0" in ANSI.sub("", line) for line in error.traceback)
    assert notebook.cells[2].outputs[0].data["text/plain"] == "'ZeroDivisionError'"


def test_in_a_kernel_trace_names_lines_with_memray() -> None:
    notebook = execute(magic_notebook(
        "import numpy as np\ndef build():\n    return [bytes(1000) for _ in range(100_000)]",
        "%%memprofile --trace --top 3 -o prof\nrows = build()\n"
        "a = np.ones(2**23)\nb = float((a * 2 + 1).sum())",
        "print(prof.tracer)\nprint([round(t.peak_bytes / 2**20) for t in prof.top_lines])\n"
        "print([t.line.source for t in prof.top_lines])"))
    printed = "".join(out.text for out in outputs_of(notebook.cells[3], "stream")).splitlines()
    assert printed[0] == "memray"
    sources = ast.literal_eval(printed[2])  # a list of str, printed by the kernel
    sizes = dict(zip(sources, ast.literal_eval(printed[1]), strict=True))
    assert sizes["b = float((a * 2 + 1).sum())"] == 64  # numpy's temporary, from C
    assert sizes["a = np.ones(2**23)"] == 64
    assert any("bytes(1000)" in source and size >= 90 for source, size in sizes.items())


def test_in_a_kernel_a_failing_cell_stops_the_notebook_like_any_error() -> None:
    with pytest.raises(CellExecutionError) as raised:
        execute(magic_notebook("%%memprofile\nraise ValueError('bad value')", "after = 1"))
    assert raised.value.ename == "ValueError"
    assert "bad value" in raised.value.evalue


def test_in_a_kernel_bad_arguments_are_usage_errors() -> None:
    notebook = execute(magic_notebook("%%memprofile --interval 0\nran = 1", "'ran' in dir()"),
                       allow_errors=True)
    # IPython reports usage errors on stderr, for its own magics as for ours.
    stderr = "".join(out.text for out in outputs_of(notebook.cells[1], "stream"))
    assert "UsageError" in stderr and "interval" in stderr
    assert notebook.cells[2].outputs[0].data["text/plain"] == "False"


def test_session_notebook_frees_the_cached_frame_and_finds_the_leak() -> None:
    path = next(p for p in NOTEBOOKS if p.name == "02_session_memory.ipynb")
    notebook = execute(nbformat.read(path, as_version=4))
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]

    def html_of(source: str) -> str:
        cell = next(c for c in code if c.source.split("\n")[0] == source)
        return "".join(o.data.get("text/html", "") for o in outputs_of(cell, "display_data"))

    assert "%memclean" in html_of("%memstatus --top 5")  # the output cache advice
    assert "Out[" in html_of("%memclean")
    assert "LEAK" in html_of("%%memleak -n 6")
    ledger_html = html_of("%memwatch")
    assert "memory ledger" in ledger_html
    # The ledger numbers cells as the notebook does.
    csv_cell = next(c for c in code if c.source.startswith("sales = pd.read_csv"))
    from meno_jupyter.core.rendering import _CELL_STYLE

    assert f'<td style="{_CELL_STYLE}">{csv_cell.execution_count}</td>' in ledger_html


def test_in_a_kernel_the_ledger_file_sits_beside_the_connection_file() -> None:
    notebook = execute(magic_notebook(
        "%memwatch on",
        "import numpy as np",
        "block = np.ones(16 * 2**20 // 8)",
        "from ipykernel.connect import get_connection_file\n"
        "from meno_jupyter.core.ledger import ledger_path_for, read_ledger_file\n"
        "path = ledger_path_for(get_connection_file())\n"
        "data = read_ledger_file(path)\n"
        "print(path.parent == __import__('pathlib').Path(get_connection_file()).parent)\n"
        "print([round(c['delta'] / 2**20) for c in data['cells']])\n"
        "print(data['pid'] == __import__('os').getpid())",
    ))
    printed = "".join(out.text for out in outputs_of(notebook.cells[4], "stream")).split("\n")
    assert printed[0] == "True"
    deltas = eval(printed[1])  # a printed list of ints
    assert 15 <= deltas[-1] <= 18  # the 16 MiB block of the cell before
    assert printed[2] == "True"


def test_in_a_kernel_memprofile_numbers_cells_as_the_notebook_does() -> None:
    notebook = execute(magic_notebook(
        "x = 1",
        "%%memprofile --no-plot -o prof\nblock = bytearray(2**20)",
        "%memprofile --no-plot -o line_prof other = bytearray(2**20)",
        "import meno_jupyter\nprint(prof.label, '|', line_prof.label, '|',"
        " list(meno_jupyter.ledger().execution_count))",
    ))
    profiled, line_profiled, printed = notebook.cells[2], notebook.cells[3], notebook.cells[4]
    text = "".join(out.text for out in outputs_of(printed, "stream")).strip()
    assert text == (f"cell [{profiled.execution_count}] | cell [{line_profiled.execution_count}] "
                    f"| [{profiled.execution_count}, {line_profiled.execution_count}]")
    shown = "".join(out.data.get("text/plain", "") for out in outputs_of(profiled,
                                                                           "display_data"))
    assert f"memory profile · cell [{profiled.execution_count}]" in shown


def test_dashboard_notebook_runs_headless_and_closes_its_dashboards() -> None:
    path = next(p for p in NOTEBOOKS if p.name == "05_dashboard.ipynb")
    notebook = execute(nbformat.read(path, as_version=4))
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    widgets = [out for cell in code for out in outputs_of(cell, "display_data")
               if "application/vnd.jupyter.widget-view+json" in out.data]
    assert len(widgets) == 2
    text = "\n".join(out.get("text", "") for cell in code for out in outputs_of(cell, "stream"))
    assert "smaller, every value kept" in text
    assert "deleted blocks" in text or any(
        "deleted blocks" in str(out.get("data", {})) for cell in code for out in cell.outputs)
    assert "closed 2 dashboard(s)" in text


def test_topic_notebook_interrupts_resumes_and_shows_the_stage_timeline() -> None:
    path = next(p for p in NOTEBOOKS if p.name == "06_topic_modeling.ipynb")
    notebook = execute(nbformat.read(path, as_version=4))
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    text = "\n".join(out.get("text", "") for cell in code for out in outputs_of(cell, "stream"))
    assert "interrupted: 200 of" in text and "run embed again to resume" in text
    fit = next(cell for cell in code if cell.source.endswith("explorer.fit()"))
    figure = next(out.data[PLOTLY] for out in outputs_of(fit, "execute_result"))
    assert [a["text"] for a in figure["layout"]["annotations"]] == [
        "embed", "load", "reduce", "cluster", "represent"]
    assert "NMI against the packages" in text
    assert "kept their topic" in text  # the online update's report
    assert "NMI with the static model" in text
    int8 = re.search(r"onnx-int8/all-MiniLM-L6-v2: cosine to the float rows, mean ([0-9.]+), "
                     r"worst ([0-9.]+)", text)
    assert int8 and float(int8[2]) >= 0.99, text
    assert "warm worker: 200 documents in" in text
    tidy = next(cell for cell in code if "merge_topics" in cell.source)
    assert "my favourite topic" in next(
        out.data["text/plain"] for out in outputs_of(tidy, "execute_result"))


def test_dask_notebook_measures_each_worker_exactly() -> None:
    path = next(p for p in NOTEBOOKS if p.name == "08_dask.ipynb")
    notebook = execute(nbformat.read(path, as_version=4))
    shown = next(cell for cell in notebook.cells if cell.cell_type == "code"
                 and cell.source.startswith("[(w.address"))
    workers = ast.literal_eval(shown.outputs[0].data["text/plain"])
    assert [exact for _, _, exact in workers] == [True, True]
    for (_, mib, _), truth in zip(workers, (200, 50), strict=True):
        assert abs(mib - truth) <= 0.05 * truth, workers  # a task's own overhead aside
    profiled = next(cell for cell in notebook.cells if cell.cell_type == "code"
                    and cell.source.startswith("%%memprofile"))
    html = "".join(out.data.get("text/html", "") for out in outputs_of(profiled, "display_data"))
    assert "Dask workers" in html
    status = next(cell for cell in notebook.cells if cell.cell_type == "code"
                  and cell.source.startswith("%memstatus"))
    html = "".join(out.data.get("text/html", "") for out in outputs_of(status, "display_data"))
    assert "Dask workers" in html and "of 1.0 GiB" in html
    embedded = next(cell for cell in notebook.cells if cell.cell_type == "code"
                    and cell.source.startswith("import sys"))
    shown = ast.literal_eval(embedded.outputs[0].data["text/plain"])
    assert shown == {"complete": True, "torch in this kernel": False}


def test_in_a_kernel_inline_lines_reach_front_ends_without_the_labextension() -> None:
    # VS Code, Colab, nbviewer and the terminal run no labextension: the line is an output.
    notebook = new_notebook(cells=[
        new_code_cell("%load_ext meno_jupyter\n%memwatch on --inline"),
        new_code_cell("import numpy as np\nblock = np.ones(2**24)  # 128 MiB"),
        new_code_cell("%memwatch on --no-inline"),
        new_code_cell("small = 1"),
    ])
    execute(notebook)
    first, block, _, after = notebook.cells
    assert "the badges under the cells show it already" in first.outputs[0]["text"]
    lines = [out for out in block.outputs if out.output_type == "display_data"]
    assert len(lines) == 1
    text, page = lines[0]["data"]["text/plain"], lines[0]["data"]["text/html"]
    assert re.fullmatch(r"peak \+128\.\d MiB · kept \+128\.\d MiB · \d+ ms · \d+ % of limit",
                        text), text
    assert text in page and "<script" not in page and "http" not in page
    assert after.outputs == []  # --no-inline: no more lines


def test_in_a_kernel_the_running_cell_is_recorded_once_the_extension_loads() -> None:
    # Without %memwatch or %memguard: a death's post-mortem can still name the cell.
    notebook = new_notebook(cells=[
        new_code_cell("%load_ext meno_jupyter"),
        new_code_cell("from ipykernel.connect import get_connection_file\n"
                      "from meno_jupyter.core.ledger import inflight_path_for, "
                      "read_inflight_file\n"
                      "path = inflight_path_for(get_connection_file())\n"
                      "record = read_inflight_file(path)\n"
                      "print(record['running'], record['execution_count'], "
                      "record['source_head'])"),
        new_code_cell("print(path.exists())"),
        new_code_cell("%unload_ext meno_jupyter"),
        new_code_cell("print(path.exists())"),
    ])
    execute(notebook)
    printed = [cell.outputs[0]["text"].strip() if cell.outputs else "" for cell in notebook.cells]
    assert printed[1] == "True 2 from ipykernel.connect import get_connection_file"
    assert printed[2] == "True"  # this cell's own record, removed when it ends
    assert printed[4] == "False"
