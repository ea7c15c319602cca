"""meno-jupyter: the memory toolkit that lives inside Jupyter.

Load the magics in a notebook with ``%load_ext meno_jupyter``; use the library directly in
scripts::

    from meno_jupyter import Profiler
    with Profiler() as prof:
        ...
    prof.result.peak_increase
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from meno_jupyter._version import __version__
from meno_jupyter.core.batching import adaptive_batch_size
from meno_jupyter.core.caches import BoundedCache, CompressedCache, WeakValueCache
from meno_jupyter.core.cellbadges import CellMemory, notebook_memory
from meno_jupyter.core.cleanup import ReleaseReport, trim_allocator
from meno_jupyter.core.dataframe import (
    ArrayOptimizeResult,
    OptimizeResult,
    optimize_array,
    optimize_dataframe,
)
from meno_jupyter.core.decorators import profile_block, profile_memory, release_memory
from meno_jupyter.core.errors import MenoWarning
from meno_jupyter.core.leaks import LeakReport, find_leaks
from meno_jupyter.core.ledger import CellRecord, Ledger
from meno_jupyter.core.loader import iter_optimized, preview, read_optimized
from meno_jupyter.core.memory import (
    MemoryLimit,
    effective_limit,
    format_bytes,
    pressure_level,
    read_children_rss,
    read_rss,
)
from meno_jupyter.core.monitor import MemoryMonitor, MemorySnapshot, shrink_caches
from meno_jupyter.core.namespace import VariableSize, deep_sizeof, largest_variables
from meno_jupyter.core.profiler import Profiler, ProfileResult, profile_call
from meno_jupyter.core.status import MemoryStatus, memory_status

if TYPE_CHECKING:
    import pandas as pd

    from meno_jupyter.widgets.dashboard import MemoryDashboard

__all__ = [
    "ArrayOptimizeResult",
    "BoundedCache",
    "CellMemory",
    "CellRecord",
    "CompressedCache",
    "LeakReport",
    "Ledger",
    "MemoryDashboard",
    "MemoryLimit",
    "MemoryMonitor",
    "MemorySnapshot",
    "MemoryStatus",
    "MenoWarning",
    "OptimizeResult",
    "ProfileResult",
    "Profiler",
    "ReleaseReport",
    "VariableSize",
    "WeakValueCache",
    "__version__",
    "adaptive_batch_size",
    "deep_sizeof",
    "effective_limit",
    "find_leaks",
    "format_bytes",
    "iter_optimized",
    "largest_variables",
    "ledger",
    "load_ipython_extension",
    "memory_status",
    "notebook_memory",
    "optimize_array",
    "optimize_dataframe",
    "pressure_level",
    "preview",
    "profile_block",
    "profile_call",
    "profile_memory",
    "read_children_rss",
    "read_optimized",
    "read_rss",
    "release_memory",
    "shrink_caches",
    "trim_allocator",
    "unload_ipython_extension",
]


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "meno_jupyter.server"}]


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    return [{"src": "labextension", "dest": "@meno/jupyter"}]


def load_ipython_extension(ipython: Any) -> None:
    """Register the magics: ``%load_ext meno_jupyter``.

    In a kernel, the cell running is recorded from now on (0.15 ms a cell): if the kernel
    dies, the post-mortem names it, with or without ``%memwatch``; and when the previous
    kernel of this notebook died while running a cell without anyone reporting it (VS Code
    runs no server extension), this says so once.
    """
    from meno_jupyter.magics import register
    from meno_jupyter.magics._common import cell_in_flight, note_this_kernel

    register(ipython)
    cell_in_flight(ipython).use("extension")
    # Once per kernel: a post-mortem where no server extension gave one (VS Code).
    if not getattr(ipython, "_meno_kernel_noted", False):
        ipython._meno_kernel_noted = True
        message = note_this_kernel(ipython)
        if message:
            print(f"meno-jupyter: {message}")
            status = ipython.magics_manager.registry.get("StatusMagics")
            if status is not None:
                status.previous_death = message


def unload_ipython_extension(ipython: Any) -> None:
    """Stop recording cells (``%unload_ext meno_jupyter``)."""
    from meno_jupyter.magics import unregister

    unregister(ipython)


def ledger() -> pd.DataFrame:
    """Return this session's cell ledger as a DataFrame (empty before ``%memwatch on``).

    Examples
    --------
    >>> list(ledger().columns)[:3]
    ['execution_count', 'source_head', 'started_at']
    """
    from meno_jupyter.core.ledger import Ledger
    from meno_jupyter.shell import session_ledger

    return (session_ledger() or Ledger()).to_frame()


def __getattr__(name: str) -> Any:
    # The dashboard imports ipywidgets: only when asked for.
    if name == "MemoryDashboard":
        from meno_jupyter.widgets.dashboard import MemoryDashboard

        return MemoryDashboard
    raise AttributeError(f"module 'meno_jupyter' has no attribute {name!r}")
