from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture
def rich_shell(shell: Any) -> Any:
    """The shell, displaying rich output as a notebook front end would."""
    shell.display_formatter.active_types = ["text/plain", "text/html",
                                            "application/vnd.plotly.v1+json"]
    return shell
