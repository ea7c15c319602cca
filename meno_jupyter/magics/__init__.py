"""IPython magics: parse (magic_arguments), call the core, display the result."""

from __future__ import annotations

from typing import Any


def register(shell: Any) -> None:
    """Register every meno-jupyter magic on ``shell``."""
    from meno_jupyter.magics.clean import CleanMagics
    from meno_jupyter.magics.leak import LeakMagics
    from meno_jupyter.magics.optimize import OptimizeMagics
    from meno_jupyter.magics.profile import ProfileMagics
    from meno_jupyter.magics.status import StatusMagics
    from meno_jupyter.magics.watch import WatchMagics

    shell.register_magics(ProfileMagics, StatusMagics, WatchMagics, CleanMagics, LeakMagics,
                          OptimizeMagics)


def unregister(shell: Any) -> None:
    """Stop the ledger's hooks (the magics themselves stay defined)."""
    watch = shell.magics_manager.registry.get("WatchMagics")
    if watch is not None:
        watch.stop()
