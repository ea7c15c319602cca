"""IPython magics: parse (magic_arguments), call the core, display the result."""

from __future__ import annotations

from typing import Any


def register(shell: Any) -> None:
    """Register every meno-jupyter magic on ``shell``."""
    from meno_jupyter.magics.profile import ProfileMagics
    from meno_jupyter.magics.status import StatusMagics

    shell.register_magics(ProfileMagics, StatusMagics)
