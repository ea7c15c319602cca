"""Hostile text in cells and results, exported and rendered in Chromium: data, never markup."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

pytestmark = pytest.mark.browser

# Each would set a flag if it ran; the page must show them as text instead.
HOSTILE = ["</script><script>window.__pwned = (window.__pwned || 0) + 1</script>",
           "</SCRIPT ><img src=x onerror='window.__pwned = 99'>",
           "<!--<script>", "\u2028\u2029 & </b>"]


def _offline_page(browser: Any) -> tuple[Any, Any]:
    context = browser.new_context()
    # Exported HTML names CDNs (plotly, require.js): nothing here may be fetched.
    context.route("http*://**/*", lambda route: route.abort())
    return context, context.new_page()


def _render(browser: Any, path: Path) -> tuple[Any, str, list[str]]:
    context, page = _offline_page(browser)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(path.as_uri(), wait_until="domcontentloaded")
    page.wait_for_timeout(500)
    pwned = page.evaluate("() => window.__pwned")
    text = page.evaluate("() => document.body.innerText")
    context.close()
    return pwned, text, errors


def test_exported_notebooks_show_hostile_cell_text_as_text(browser: Any, tmp_path: Path) -> None:
    hostile_lines = "\n".join(f"s{i} = {text!r}" for i, text in enumerate(HOSTILE))
    book = nbformat.v4.new_notebook()
    book.cells = [nbformat.v4.new_code_cell(source) for source in [
        "%load_ext meno_jupyter\n%memwatch on",
        # the profile's figure names this line in its hover text, the ledger its head
        f"%%memprofile\n{hostile_lines}\nblock = bytearray(80 * 2**20)\n"
        "parts = s0.split('</script>')",
        f"{hostile_lines}\nprint(len(parts))",
        "%memwatch",
    ]]
    book.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                   "language": "python"}
    NotebookClient(book, timeout=120, kernel_name="python3").execute()
    assert any("application/vnd.plotly.v1+json" in out.get("data", {})
               for out in book.cells[1].outputs)
    from meno_jupyter.core.cellbadges import METADATA_KEY, source_fingerprint

    # What the JupyterLab extension saves under a measured cell: meno_html draws it.
    book.cells[2].metadata[METADATA_KEY] = {
        "schema": 1, "peak_increase": 2**20, "delta": 0, "peak_rss": 2**27, "duration_s": 0.1,
        "limit_bytes": 2**32, "measured_at": 1.7e9, "execution_count": 3,
        "source_fingerprint": source_fingerprint(book.cells[2].source)}
    notebook = tmp_path / "hostile.ipynb"
    nbformat.write(book, notebook)
    for exporter in ("html", "meno_html"):
        subprocess.run([sys.executable, "-m", "jupyter", "nbconvert", "--to", exporter,
                        str(notebook), "--output", f"hostile-{exporter}"],
                       check=True, capture_output=True, cwd=tmp_path)
        pwned, text, errors = _render(browser, tmp_path / f"hostile-{exporter}.html")
        assert pwned is None, exporter
        assert not [e for e in errors if "SyntaxError" in e], (exporter, errors)
        for hostile in HOSTILE[:3]:
            assert hostile in text, (exporter, hostile)
    assert "memory: peak" in _render(browser, tmp_path / "hostile-meno_html.html")[1]


def test_every_result_renders_hostile_names_as_text(browser: Any, tmp_path: Path) -> None:
    from meno_jupyter.core.ledger import CellRecord, Ledger
    from meno_jupyter.core.profiler import Profiler
    from meno_jupyter.display.figures import figure_bundle, ledger_figure, profile_figure

    with Profiler(label=HOSTILE[0]) as profiler:
        block = bytearray(20 * 2**20)
    del block
    profile = profiler.result
    ledger = Ledger(10)
    for number, hostile in enumerate(HOSTILE, start=1):
        ledger.add(CellRecord(number, hostile, 1e9 + number, 0.1, 2**20, 2**21, 2**22, True, 0))
    parts = [profile.to_html(), ledger.to_html(),
             figure_bundle(profile_figure(profile), "")["text/html"],
             figure_bundle(ledger_figure(ledger), "")["text/html"]]
    page_file = tmp_path / "results.html"
    page_file.write_text("<!doctype html><html><body>" + "".join(parts) + "</body></html>")
    pwned, text, errors = _render(browser, page_file)
    assert pwned is None and not errors
    for hostile in HOSTILE[:3]:
        assert hostile in text


def test_exported_figures_show_a_static_copy_offline(browser: Any, tmp_path: Path) -> None:
    from meno_jupyter.core.ledger import CellRecord, Ledger
    from meno_jupyter.display.figures import figure_bundle, ledger_figure

    ledger = Ledger(10)
    for number in range(1, 6):
        ledger.add(CellRecord(number, f"cell {number}", 1e9 + number, 0.1, 2**20 * number,
                              2**21 * number, 2**22 * number, True, 0))
    page_file = tmp_path / "figure.html"
    page_file.write_text("<!doctype html><html><body>"
                         + figure_bundle(ledger_figure(ledger), "")["text/html"]
                         + "</body></html>")
    context, page = _offline_page(browser)  # the CDN cannot be reached
    page.goto(page_file.as_uri(), wait_until="domcontentloaded")
    page.wait_for_timeout(500)
    static = page.locator(".jp-Meno-figure .jp-Meno-figure-static svg polyline")
    assert static.count() >= 1 and static.first.is_visible()
    assert "a static copy: the interactive figure needs plotly.js" in page.inner_text("body")
    context.close()
