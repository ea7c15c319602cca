from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from IPython.testing.globalipapp import start_ipython


@pytest.fixture(scope="session")
def session_shell() -> Any:
    shell = start_ipython()
    shell.run_line_magic("load_ext", "meno_jupyter")
    return shell


@pytest.fixture
def shell(session_shell: Any) -> Iterator[Any]:
    """A real IPython shell with the extension loaded and a clean user namespace."""
    formatter = session_shell.display_formatter
    active = list(formatter.active_types)
    session_shell.run_line_magic("reset", "-f")
    yield session_shell
    formatter.active_types = active
    session_shell.run_line_magic("reset", "-f")


@pytest.fixture
def rich_shell(shell: Any) -> Any:
    """The shell, displaying rich output as a notebook front end would."""
    shell.display_formatter.active_types = ["text/plain", "text/html",
                                            "application/vnd.plotly.v1+json"]
    return shell
