"""Per-block peak of CUDA memory allocated through torch, when torch is already in use.

Importing torch costs hundreds of megabytes, so nothing here imports it: the GPU figures
exist only when the user's code has imported torch and CUDA is available.
"""

from __future__ import annotations

import sys
from typing import Any

from meno_jupyter.core.memory import PeakWatch


def _cuda() -> Any | None:
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    try:
        return torch.cuda if torch.cuda.is_available() else None
    except Exception:  # a broken CUDA install must not break profiling
        return None


def cuda_in_use() -> bool:
    """Tell whether torch is imported and sees a CUDA device."""
    return _cuda() is not None


def read_cuda_peak() -> int | None:
    """Return torch's CUDA peak allocation since its last reset, or None without CUDA."""
    cuda = _cuda()
    return None if cuda is None else int(cuda.max_memory_allocated())


def _reset_cuda_peak() -> bool:
    cuda = _cuda()
    if cuda is None:
        return False
    cuda.reset_peak_memory_stats()
    return True


GPU_PEAK_WATCH = PeakWatch(
    read=read_cuda_peak, reset=_reset_cuda_peak, remember_support=False
)
