"""The wheel ships the prebuilt labextension and enables the server extension."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def jupyter(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "jupyter", *args], capture_output=True,
                          text=True, timeout=120, check=True)
    return ANSI.sub("", done.stdout + done.stderr)


def test_jupyter_lists_both_extensions_as_enabled_and_ok() -> None:
    labextensions = jupyter("labextension", "list")
    assert re.search(r"@meno/jupyter v[\d.]+ enabled OK", labextensions), labextensions
    server = jupyter("server", "extension", "list")
    assert re.search(r"meno_jupyter enabled", server), server
    assert re.search(r"meno_jupyter [\d.]+ OK", server), server


@pytest.mark.timeout(600)
def test_wheel_carries_the_prebuilt_labextension_and_the_server_config(
        tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "--quiet", "-w", str(tmp_path), str(ROOT)], check=True, timeout=600)
    wheel = next(tmp_path.glob("meno_jupyter-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    data = next(n.split("/")[0] for n in names if ".data/" in n)
    shared = f"{data}/data/share/jupyter/labextensions/@meno/jupyter"
    assert f"{shared}/package.json" in names
    assert f"{shared}/install.json" in names
    assert f"{shared}/schemas/@meno/jupyter/plugin.json" in names
    assert any(re.match(rf"{re.escape(shared)}/static/remoteEntry\.\w+\.js$", n) for n in names)
    assert f"{data}/data/etc/jupyter/jupyter_server_config.d/meno_jupyter.json" in names
    assert "meno_jupyter/server/handlers.py" in names
    assert not any("node_modules" in n or n.endswith(".ts") for n in names)
