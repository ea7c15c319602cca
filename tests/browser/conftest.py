"""A real JupyterLab on a free localhost port, driven by Debian's Chromium through Playwright.

Run on their own (``pytest -m browser tests/browser``): pytest-jupyter's event loop and
Playwright's do not share one pytest process.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run"]
ARTIFACTS = Path(__file__).resolve().parents[2] / "build" / "test-artifacts"
# The server measures kernels against this limit, so that a 300 MiB cell crosses "high".
LAB_LIMIT_BYTES = 440 * 2**20
# JupyterLab asks about news in a toast that covers the status bar: say no up front.
LAB_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false"},
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Lab:
    """A running ``jupyter lab`` with its token, root directory and base URL."""

    def __init__(self, root: Path, port: int, token: str, process: subprocess.Popen[bytes],
                 log: Path) -> None:
        self.root = root
        self.port = port
        self.token = token
        self.process = process
        self.log = log
        self.base = f"http://127.0.0.1:{port}"

    def notebook(self, name: str, *sources: str) -> Path:
        """Write a notebook of code cells into the server's root directory."""
        book = nbformat.v4.new_notebook()
        book.cells = [nbformat.v4.new_code_cell(source) for source in sources]
        book.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                       "language": "python"}
        path = self.root / name
        nbformat.write(book, path)
        return path

    def url(self, notebook: str) -> str:
        """A fresh workspace for ``notebook``: nothing restored from an earlier test."""
        workspace = f"w{uuid.uuid4().hex[:10]}"
        return f"{self.base}/lab/workspaces/{workspace}/tree/{notebook}?reset&token={self.token}"

    def api(self, path: str, method: str = "GET") -> Any:
        """Call a server endpoint with the token; return its JSON (None when empty)."""
        request = urllib.request.Request(f"{self.base}{path}", method=method,
                                         headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(request, timeout=30) as response:
            body = response.read()
        return json.loads(body) if body else None

    def shut_down_kernels(self) -> None:
        """Stop every kernel, so that the next test starts with none."""
        for kernel in self.api("/api/kernels"):
            self.api(f"/api/kernels/{kernel['id']}", method="DELETE")


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (make test does it)")
    base = tmp_path_factory.mktemp("lab")
    root = base / "notebooks"
    root.mkdir()
    settings = base / "settings"
    for relative, values in LAB_SETTINGS.items():
        path = settings / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    port, token = _free_port(), secrets.token_hex(16)
    env = {**os.environ, "JUPYTERLAB_SETTINGS_DIR": str(settings),
           "JUPYTERLAB_WORKSPACES_DIR": str(base / "workspaces"),
           "JUPYTER_RUNTIME_DIR": str(base / "runtime"),
           "JUPYTER_DATA_DIR": str(base / "data")}  # post-mortems of this run only
    log = base / "lab.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--port={port}",
         "--ip=127.0.0.1", f"--ServerApp.token={token}", f"--ServerApp.root_dir={root}",
         "--ServerApp.allow_root=True", "--LabApp.expose_app_in_browser=True",
         "--JupyterNotebookApp.expose_app_in_browser=True",
         f"--MenoServer.limit_bytes={LAB_LIMIT_BYTES}", "--MenoServer.interval_s=0.5"],
        stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env,
    )
    running = Lab(root, port, token, process, log)
    deadline = time.monotonic() + 90
    while True:
        try:
            running.api("/api/status")
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"jupyter lab did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
    yield running
    process.terminate()
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any, lab: Lab, request: pytest.FixtureRequest) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    tab = context.new_page()
    yield tab
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    tab.screenshot(path=str(ARTIFACTS / f"{request.node.name}-end.png"))
    context.close()
    lab.shut_down_kernels()


def run_cell(page: Any, index: int, *, wait: bool = True) -> None:
    """Run cell ``index`` of the open notebook through JupyterLab's own command.

    With ``wait`` it returns when the cell has finished; without, as soon as it is sent.
    """
    page.evaluate(
        "async ([i, wait]) => { const app = window.jupyterapp;"
        " app.shell.currentWidget.content.activeCellIndex = i;"
        " const done = app.commands.execute('notebook:run-cell');"
        " if (wait) { await done; } }", [index, wait])


def wait_for_prompt(page: Any, index: int, text: str, timeout_ms: int = 60_000) -> None:
    """Wait until cell ``index``'s prompt contains ``text`` ("*" while it runs, "[2]" after)."""
    page.wait_for_function(
        "([i, t]) => { const c = document.querySelectorAll('.jp-Notebook .jp-Cell')[i];"
        " return c && c.querySelector('.jp-InputPrompt').textContent.includes(t); }",
        arg=[index, text], timeout=timeout_ms)


def cell_is_busy(page: Any, index: int) -> bool:
    """Tell whether cell ``index`` is running."""
    prompt = page.locator(".jp-Notebook .jp-Cell").nth(index).locator(".jp-InputPrompt")
    return "*" in prompt.inner_text()


def show_memory_panel(page: Any) -> None:
    """Show the Memory panel through its command (a click on its tab would close it if open)."""
    page.evaluate("() => window.jupyterapp.commands.execute('meno-jupyter:show-panel')")
    page.wait_for_selector("#jp-Meno-memory-panel", state="visible")


def open_notebook(page: Any, lab: Lab, name: str, *, notebook7: bool = False) -> None:
    """Open ``name`` in a fresh workspace (or Notebook 7) and wait until its kernel is idle."""
    page.goto(f"{lab.base}/notebooks/{name}?token={lab.token}" if notebook7 else lab.url(name))
    page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=60_000)
    page.wait_for_function(
        "() => { const w = window.jupyterapp.shell.currentWidget;"
        " const k = w && w.sessionContext && w.sessionContext.session"
        " && w.sessionContext.session.kernel;"
        " return w.sessionContext.isReady && k && k.status === 'idle'"
        " && k.connectionStatus === 'connected'; }", timeout=90_000)
