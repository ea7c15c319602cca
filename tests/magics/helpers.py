from __future__ import annotations

from typing import Any


def shown(captured: Any) -> str:
    """Everything a terminal user would have read: printed text and displayed text/plain."""
    displayed = [out.data.get("text/plain", "") for out in captured.outputs]
    return captured.stdout + "\n".join(displayed)
