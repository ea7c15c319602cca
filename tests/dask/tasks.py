"""Tasks the workers run (importable there by reference)."""

from __future__ import annotations

import os
import time

import numpy as np

MIB = 2**20


def rss() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def hold(mib: int, seconds: float = 0.2) -> int:
    """Allocate and touch ``mib`` MiB, hold it a while; return the growth the worker saw."""
    before = rss()
    block = np.ones(mib * MIB // 8)
    grown = rss() - before
    time.sleep(seconds)
    del block
    return grown


def spike(mib: int = 100, seconds: float = 0.03) -> int:
    """A short spike: ``mib`` MiB for ``seconds``, then freed."""
    block = np.ones(mib * MIB // 8)
    time.sleep(seconds)
    del block
    return 1


def die_after(mib: int) -> None:
    """Grow, then end the worker process as a crash or an OOM kill would."""
    block = np.ones(mib * MIB // 8)
    time.sleep(0.5)
    del block
    os._exit(1)
