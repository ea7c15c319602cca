"""Allocations whose effect on RSS does not depend on the heap's history.

A freed numpy block may come from, and go back to, glibc's free lists and stay resident, so
whether a spike "comes back" depends on what earlier tests did. Anonymous mmap blocks are
fresh pages in and returned pages out: the tests measure RSS, not malloc's policy.
"""

from __future__ import annotations

import mmap

import numpy as np

MIB = 1024 * 1024


def keep(mib: float) -> mmap.mmap:
    """Map ``mib`` MiB and write every page; RSS grows by that much until ``close()``."""
    block = mmap.mmap(-1, int(mib * MIB))
    view = np.frombuffer(block, dtype=np.uint8)
    view[:: mmap.PAGESIZE] = 1
    del view
    return block


def spike(mib: float) -> None:
    """Raise RSS by ``mib`` MiB for a moment, then give it all back."""
    keep(mib).close()
