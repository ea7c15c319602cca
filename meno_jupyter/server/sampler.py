"""Kernel memory measured from the Jupyter server, by process id, while kernels are busy.

Nothing here asks a kernel anything: RSS comes from ``/proc`` through psutil, so a kernel
stuck in C code (holding its GIL) is measured as well as an idle one.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import psutil

from meno_jupyter.core.deaths import (
    KERNEL_CGROUP_SOURCE,
    memory_cgroup_dirs,
    memory_cgroups_limit,
)
from meno_jupyter.core.memory import (
    DEFAULT_PRESSURE_THRESHOLDS,
    MemoryLimit,
    effective_limit,
    process_rss,
    read_children_rss,
)

# How often a kernel's own cgroup limit is read again (a process can be moved).
OWN_LIMIT_REFRESH_S = 2.0


@dataclass(frozen=True)
class KernelProcess:
    """Where a kernel runs: its pid, or why it cannot be measured from here."""

    kernel_id: str
    pid: int | None
    reason: str = ""

    @property
    def measurable(self) -> bool:
        """Whether the server can read this kernel's memory."""
        return self.pid is not None


@dataclass
class KernelHistory:
    """A bounded series of one kernel's RSS and its children's RSS."""

    pid: int
    capacity: int
    times: deque[float] = field(init=False)
    rss: deque[int] = field(init=False)
    children: deque[int] = field(init=False)
    process: psutil.Process | None = None
    alive: bool = True
    # The tightest memory cgroup limit of the kernel's own (None: none), read now and then.
    own_limit: int | None = None
    own_limit_read_at: float = float("-inf")

    def __post_init__(self) -> None:
        self.times = deque(maxlen=self.capacity)
        self.rss = deque(maxlen=self.capacity)
        self.children = deque(maxlen=self.capacity)

    def add(self, t: float, rss: int, children: int) -> None:
        """Record one sample."""
        self.times.append(t)
        self.rss.append(rss)
        self.children.append(children)

    def since(self, t: float | None) -> dict[str, list[Any]]:
        """Return the samples taken after ``t`` (all of them when ``t`` is None)."""
        times = list(self.times)
        start = 0 if t is None else next((i for i, x in enumerate(times) if x > t), len(times))
        return {"times": times[start:], "rss": list(self.rss)[start:],
                "children": list(self.children)[start:]}


class KernelSampler:
    """Keep a bounded RSS history for every running kernel.

    Parameters
    ----------
    locate : callable
        Returns the running kernels as :class:`KernelProcess` (the server's kernel manager).
    interval_s : float
        Seconds between samples.
    history_s : float
        Seconds of history kept per kernel.

    Examples
    --------
    >>> import os
    >>> sampler = KernelSampler(lambda: [KernelProcess("k1", os.getpid())])
    >>> sampler.sample()
    >>> sampler.history("k1")["rss"][0] > 0
    True
    """

    def __init__(
        self,
        locate: Callable[[], Iterable[KernelProcess]],
        *,
        interval_s: float = 1.0,
        history_s: float = 3_600.0,
        thresholds: tuple[float, float] = DEFAULT_PRESSURE_THRESHOLDS,
        limit_reader: Callable[[], MemoryLimit] = effective_limit,
    ) -> None:
        if interval_s <= 0 or history_s < interval_s:
            raise ValueError("need 0 < interval_s <= history_s, got "
                             f"interval_s={interval_s}, history_s={history_s}")
        self.locate = locate
        self.interval_s = interval_s
        self.history_s = history_s
        self.thresholds = thresholds
        self.capacity = max(2, int(history_s / interval_s) + 1)
        self._limit_reader = limit_reader
        self.histories: dict[str, KernelHistory] = {}
        self.unmeasurable: dict[str, str] = {}
        self.samples = 0

    def limit(self) -> MemoryLimit:
        """Return the limit the kernels share (the server's cgroup, or the host)."""
        return self._limit_reader()

    def sample(self) -> None:
        """Measure every running kernel once; forget kernels that are gone."""
        now = time.time()
        seen: set[str] = set()
        self.unmeasurable = {}
        for kernel in self.locate():
            seen.add(kernel.kernel_id)
            if kernel.pid is None:
                self.unmeasurable[kernel.kernel_id] = kernel.reason
                continue
            history = self.histories.get(kernel.kernel_id)
            if history is None or history.pid != kernel.pid:  # new, or restarted
                history = self.histories[kernel.kernel_id] = KernelHistory(
                    kernel.pid, self.capacity)
            self._measure(history, now)
        for gone in set(self.histories) - seen:
            del self.histories[gone]
        self.samples += 1

    @staticmethod
    def _measure(history: KernelHistory, now: float) -> None:
        if not history.alive:
            return
        try:
            if history.process is None:
                history.process = psutil.Process(history.pid)
            if history.process.status() == psutil.STATUS_ZOMBIE:  # killed, not yet reaped
                raise psutil.ZombieProcess(history.pid)
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            history.alive = False  # the kernel died: stop sampling it
            return
        except psutil.AccessDenied:
            return
        # The core's /proc readers: a pread of statm, and the kernel's children lists
        # rather than a scan of every process.
        history.add(now, process_rss(history.pid), read_children_rss(history.pid))
        if now - history.own_limit_read_at >= OWN_LIMIT_REFRESH_S:
            history.own_limit_read_at = now
            history.own_limit = memory_cgroups_limit(memory_cgroup_dirs(history.pid))

    def history(self, kernel_id: str, since: float | None = None) -> dict[str, Any]:
        """Return one kernel's samples after ``since``; KeyError when it is not sampled."""
        history = self.histories[kernel_id]
        return {"kernel_id": kernel_id, "pid": history.pid, "alive": history.alive,
                "interval_s": self.interval_s, **history.since(since)}

    def latest(self, kernel_id: str) -> tuple[int, int] | None:
        """Return the last (RSS, children RSS) of a kernel, None before its first sample."""
        history = self.histories.get(kernel_id)
        if history is None or not history.times:
            return None
        return history.rss[-1], history.children[-1]

    def kernel_limit(self, kernel_id: str, shared: MemoryLimit) -> tuple[int, str]:
        """Return the limit one kernel meets first, and its source.

        Its own cgroup's when that is tighter than the limit the kernels share (a kernel
        started in a smaller cgroup than the server), else the shared one.
        """
        history = self.histories.get(kernel_id)
        own = history.own_limit if history is not None else None
        if own is not None and own < shared.limit_bytes:
            return own, KERNEL_CGROUP_SOURCE
        return shared.limit_bytes, shared.source
