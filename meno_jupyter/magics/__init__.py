"""IPython magics: parse (magic_arguments), call the core, display the result."""

from __future__ import annotations

import sys
from typing import Any


def register(shell: Any) -> None:
    """Register every meno-jupyter magic on ``shell``."""
    from meno_jupyter.magics.checkpoint import MemCheckpoint
    from meno_jupyter.magics.clean import CleanMagics
    from meno_jupyter.magics.dash import DashboardMagics
    from meno_jupyter.magics.guard import MemGuard
    from meno_jupyter.magics.leak import LeakMagics
    from meno_jupyter.magics.optimize import OptimizeMagics
    from meno_jupyter.magics.profile import ProfileMagics
    from meno_jupyter.magics.spill import SpillMagics
    from meno_jupyter.magics.status import StatusMagics
    from meno_jupyter.magics.watch import WatchMagics

    shell.register_magics(ProfileMagics, StatusMagics, WatchMagics, CleanMagics, LeakMagics,
                          OptimizeMagics, DashboardMagics, MemGuard, MemCheckpoint, SpillMagics)


def unregister(shell: Any) -> None:
    """Stop the ledger's, guard's and checkpoints' hooks, close the dashboards (the magics stay)."""
    if "meno_jupyter.widgets.dashboard" in sys.modules:
        sys.modules["meno_jupyter.widgets.dashboard"].close_all()
    watch = shell.magics_manager.registry.get("WatchMagics")
    if watch is not None:
        watch.stop()
    from meno_jupyter.magics._common import cell_in_flight

    cell_in_flight(shell).release("extension")
    for name in ("MemGuard", "MemCheckpoint"):
        magics = shell.magics_manager.registry.get(name)
        if magics is not None:
            magics.stop()
