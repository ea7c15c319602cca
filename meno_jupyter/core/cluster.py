"""The exact peak of every Dask worker over one block, through Dask's own machinery.

:class:`ClusterProfile` asks each worker of a ``distributed.Client`` (``Client.run``) to
reset its process's high-water mark (``/proc/self/clear_refs``, in the worker process itself:
nanny and worker are separate processes) and to sample its RSS on a thread into a bounded
buffer; at the end it collects, per worker, the exact peak, what the block left behind, the
timeline, the worker's ``memory_limit`` and Dask's own managed and spilled figures. Workers on
other hosts work the same way: nothing is shared but Dask's connections.

A worker that dies during the block (killed, or restarted by its nanny) does not answer at
the end: it is named, with the highest figure it reported on the way (each worker logs new
highs to the scheduler as Dask events, at most ten a second) and its limit.

``distributed`` is imported only when a profile starts; this module is pure otherwise.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import uuid
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any

from meno_jupyter.core.errors import check_count
from meno_jupyter.core.memory import MIB, format_bytes

PEAK_EVENT_TOPIC = "meno-worker-peak"
# A worker reports a new high when it beats the last report by this much, or when the high
# stops rising (what a cell reached before it died), and at most every REPORT_INTERVAL_S: a
# few events per cell, not one per sample.
REPORT_STEP_BYTES = 16 * MIB
REPORT_INTERVAL_S = 0.1

_sessions: dict[str, Any] = {}
_sessions_lock = threading.Lock()


@dataclass(frozen=True)
class WorkerPeak:
    """One worker's memory over a profiled block. Sizes in bytes.

    Attributes
    ----------
    address : str
        The worker's address (``tcp://host:port``).
    peak_rss : int
        The worker process's peak RSS: its kernel high-water mark (exact) where Linux
        provides it, else the sampled maximum; for a worker that died, the highest figure
        it reported before.
    end_rss : int or None
        RSS at the end; None when the worker died during the block.
    memory_limit : int or None
        The worker's ``memory_limit`` (Dask pauses, spills and restarts against it).
    """

    address: str
    start_rss: int
    peak_rss: int
    end_rss: int | None
    exact_peak: bool
    memory_limit: int | None
    managed_bytes: int
    spilled_bytes: int
    timeline_t_s: tuple[float, ...] = ()
    timeline_rss_bytes: tuple[int, ...] = ()
    died: bool = False

    @property
    def peak_increase(self) -> int:
        """``peak_rss - start_rss``."""
        return self.peak_rss - self.start_rss

    @property
    def delta(self) -> int | None:
        """``end_rss - start_rss`` (None when the worker died)."""
        return None if self.end_rss is None else self.end_rss - self.start_rss

    @property
    def limit_share(self) -> float | None:
        """``peak_rss / memory_limit``."""
        return self.peak_rss / self.memory_limit if self.memory_limit else None

    def describe_death(self) -> str:
        """One sentence naming a worker that died during the block."""
        reached = format_bytes(self.peak_rss)
        if self.memory_limit:
            share = f"{self.peak_rss / self.memory_limit:.0%} of its " \
                    f"{format_bytes(self.memory_limit)} limit"
            reached = f"{reached} ({share})"
        return (f"worker {self.address} died during the cell (killed, or restarted by its "
                f"nanny) after reaching {reached}")

    def to_dict(self) -> dict[str, Any]:
        """Return the fields and the derived figures as a plain dict."""
        data = asdict(self)
        data.update(peak_increase=self.peak_increase, delta=self.delta)
        return data


class ClusterProfile:
    """Measure every worker of ``client`` over one block (see the module docstring).

    Parameters
    ----------
    client : distributed.Client
        The cluster's client.
    interval_s : float
        The workers' sampling interval (the peak itself is exact, not sampled).
    """

    def __init__(self, client: Any, interval_s: float = 0.01) -> None:
        self.client = client
        self.interval_s = interval_s
        self._token = f"meno-{uuid.uuid4().hex}"
        self._started: dict[str, dict[str, Any]] = {}

    def start(self) -> None:
        """Reset every worker's high-water mark and start its sampler (one round trip)."""
        answers = self.client.run(_worker_begin, self._token, self.interval_s,
                                  on_error="return")
        self._started = {address: answer for address, answer in answers.items()
                         if isinstance(answer, dict)}

    def stop(self) -> tuple[WorkerPeak, ...]:
        """Collect every worker's figures; name those that died (hungriest first)."""
        answers = self.client.run(_worker_end, self._token, on_error="return")
        peaks: list[WorkerPeak] = []
        died = any(not (isinstance(answers.get(address), dict)
                        and answers[address].get("found")) for address in self._started)
        reported = self._reported_highs() if died else {}
        for address, begun in self._started.items():
            answer = answers.get(address)
            if isinstance(answer, dict) and answer.get("found"):
                peaks.append(WorkerPeak(
                    address=address, start_rss=begun["start_rss"],
                    peak_rss=answer["peak_rss"], end_rss=answer["end_rss"],
                    exact_peak=answer["exact_peak"],
                    memory_limit=answer["memory_limit"] or begun.get("memory_limit"),
                    managed_bytes=answer["managed_bytes"],
                    spilled_bytes=answer["spilled_bytes"],
                    timeline_t_s=tuple(answer["times"]),
                    timeline_rss_bytes=tuple(answer["rss"])))
            else:
                peaks.append(WorkerPeak(
                    address=address, start_rss=begun["start_rss"],
                    peak_rss=max(reported.get(address, 0), begun["start_rss"]), end_rss=None,
                    exact_peak=False, memory_limit=begun.get("memory_limit"),
                    managed_bytes=0, spilled_bytes=0, died=True))
        peaks.sort(key=lambda peak: peak.peak_increase, reverse=True)
        return tuple(peaks)

    def _reported_highs(self) -> dict[str, int]:
        highs: dict[str, int] = {}
        with contextlib.suppress(Exception):  # an older scheduler: no events, no figure
            for _, message in self.client.get_events(PEAK_EVENT_TOPIC):
                if isinstance(message, dict) and message.get("token") == self._token:
                    address = str(message.get("address"))
                    highs[address] = max(highs.get(address, 0), int(message.get("rss", 0)))
        return highs


# ----------------------------------------------------------------- in the worker process


def _worker_begin(token: str, interval_s: float, dask_worker: Any = None) -> dict[str, Any]:
    """Start measuring this worker process (runs there, through ``Client.run``)."""
    from meno_jupyter.core.memory import PEAK_WATCH, read_rss
    from meno_jupyter.core.sampler import Sampler

    reporter = _HighReporter(token, dask_worker)
    sampler = Sampler(interval_s=interval_s, growth_threshold_bytes=1 << 62, children_every=0)
    sampler.tick_hook = lambda: reporter.offer(sampler.state.max_rss)
    peak_token = PEAK_WATCH.open()
    start_rss = read_rss()
    sampler.start()
    with _sessions_lock:
        _sessions[token] = (peak_token, sampler, start_rss)
    memory = getattr(dask_worker, "memory_manager", None)
    return {"start_rss": start_rss, "pid": os.getpid(),
            "memory_limit": getattr(memory, "memory_limit", None) or None}


def _worker_end(token: str, dask_worker: Any = None) -> dict[str, Any]:
    """Finish measuring this worker process and return its figures."""
    from meno_jupyter.core.memory import PEAK_WATCH, read_rss

    with _sessions_lock:
        session = _sessions.pop(token, None)
    if session is None:  # a worker started during the block (a nanny's restart)
        return {"found": False}
    peak_token, sampler, start_rss = session
    state = sampler.stop()
    end_rss = read_rss()
    exact = PEAK_WATCH.close(peak_token)
    times, values = state.buffer.series()
    memory = getattr(dask_worker, "memory_manager", None)
    managed, spilled = _dask_memory_figures(dask_worker)
    return {
        "found": True,
        "peak_rss": max(exact or 0, state.max_rss, start_rss, end_rss),
        "end_rss": end_rss,
        "exact_peak": exact is not None,
        "memory_limit": getattr(memory, "memory_limit", None) or None,
        "managed_bytes": managed,
        "spilled_bytes": spilled,
        "times": list(times),
        "rss": list(values),
    }


def _dask_memory_figures(dask_worker: Any) -> tuple[int, int]:
    """Dask's own managed (in memory) and spilled (on disk) bytes of this worker.

    The same figures the worker sends the scheduler with each heartbeat (its spill buffer's
    in-memory weight and its spilled total), read here without a round trip.
    """
    data = getattr(dask_worker, "data", None)
    managed = getattr(getattr(data, "fast", None), "total_weight", None)
    spilled_total = getattr(data, "spilled_total", None)
    spilled = getattr(spilled_total, "disk", 0) if spilled_total is not None else 0
    if managed is None:  # a plain dict: no spilling configured
        managed = getattr(dask_worker, "nbytes", {}) and sum(dask_worker.nbytes.values())
    try:
        return int(managed or 0), int(spilled or 0)
    except (TypeError, ValueError):
        return 0, 0


class _HighReporter:
    """Log a worker's new highs to the scheduler (read back if the worker dies)."""

    def __init__(self, token: str, dask_worker: Any) -> None:
        self.token = token
        self.worker = dask_worker
        self.address = getattr(dask_worker, "address", "")
        self.last_reported = 0
        self.last_offered = 0
        self.last_time = 0.0

    def offer(self, high: int) -> None:
        now = time.monotonic()
        settled = high == self.last_offered  # it stopped rising: say where, even within a step
        self.last_offered = high
        if (self.worker is None or high <= self.last_reported
                or now - self.last_time < REPORT_INTERVAL_S
                or (high < self.last_reported + REPORT_STEP_BYTES and not settled)):
            return
        self.last_reported, self.last_time = high, now
        with contextlib.suppress(Exception):  # a report lost is a figure missing, no more
            self.worker.log_event(PEAK_EVENT_TOPIC, {"token": self.token,
                                                     "address": self.address, "rss": high})


def running_client() -> Any:
    """Return the ``distributed`` client in use, or None; never starts or imports one.

    Only when ``distributed`` is already imported (the user made a client) is it asked for
    its default client.
    """
    import sys

    if "distributed" not in sys.modules:
        return None
    import distributed

    try:
        return distributed.default_client()  # type: ignore[no-untyped-call]
    except ValueError:
        return None


@dataclass(frozen=True)
class WorkerStatus:
    """A worker's memory now, from Dask's own metrics (the scheduler's last heartbeat).

    ``unmanaged_bytes`` is the process memory Dask does not hold as task results (the
    interpreter, libraries, leaks, freed memory not returned to the system).
    """

    address: str
    rss_bytes: int
    managed_bytes: int
    spilled_bytes: int
    memory_limit: int | None

    @property
    def unmanaged_bytes(self) -> int:
        """``rss_bytes - managed_bytes`` (never below zero)."""
        return max(0, self.rss_bytes - self.managed_bytes)

    @property
    def limit_share(self) -> float | None:
        """``rss_bytes / memory_limit``."""
        return self.rss_bytes / self.memory_limit if self.memory_limit else None

    def to_dict(self) -> dict[str, Any]:
        """Return the fields and the derived figures as a plain dict."""
        data = asdict(self)
        data.update(unmanaged_bytes=self.unmanaged_bytes, limit_share=self.limit_share)
        return data


def worker_statuses(client: Any) -> tuple[WorkerStatus, ...]:
    """Return every worker's memory from the scheduler, hungriest first (one round trip)."""
    statuses = []
    for address, worker in client.scheduler_info()["workers"].items():
        metrics = worker.get("metrics", {})
        spilled = metrics.get("spilled_bytes", {})
        statuses.append(WorkerStatus(
            address=address, rss_bytes=int(metrics.get("memory", 0)),
            managed_bytes=int(metrics.get("managed_bytes", 0)),
            spilled_bytes=int(spilled.get("disk", 0)) if isinstance(spilled, dict) else 0,
            memory_limit=int(worker.get("memory_limit") or 0) or None))
    statuses.sort(key=lambda status: status.rss_bytes, reverse=True)
    return tuple(statuses)


class ClusterHistory:
    """The workers' RSS over time, polled from the scheduler at most every ``every_s``.

    For a live view (``%memdash``): each :meth:`poll` asks the scheduler once (Dask's own
    metrics, the workers' last heartbeats) unless the last answer is younger than
    ``every_s``. Bounded: ``capacity`` polls are kept. A client that stops answering (closed,
    scheduler gone) ends the polling; ``error`` says why.

    Examples
    --------
    >>> history = ClusterHistory(client=None)
    >>> history.add(1.0, (WorkerStatus("tcp://a:1", 10, 0, 0, None),))
    >>> history.totals()
    ([1.0], [10])
    """

    def __init__(self, client: Any, *, every_s: float = 1.0, capacity: int = 3_600) -> None:
        check_count(capacity, minimum=2, name="capacity")
        self.client = client
        self.every_s = every_s
        self._polls: deque[tuple[float, tuple[WorkerStatus, ...]]] = deque(maxlen=capacity)
        self.error: str | None = None
        self._lock = threading.Lock()

    def poll(self, now: float) -> tuple[WorkerStatus, ...]:
        """Ask the scheduler (when due); return the latest statuses (hungriest first)."""
        with self._lock:
            due = not self._polls or now - self._polls[-1][0] >= self.every_s
            if due and self.client is not None and self.error is None:
                try:
                    self.add(now, worker_statuses(self.client))
                except Exception as error:  # a closed client, a scheduler gone
                    self.error = f"the Dask cluster stopped answering ({error})"
            return self._polls[-1][1] if self._polls else ()

    def add(self, timestamp: float, statuses: tuple[WorkerStatus, ...]) -> None:
        """Keep one poll's answer."""
        self._polls.append((timestamp, statuses))

    def totals(self) -> tuple[list[float], list[int]]:
        """Return (times, the workers' RSS summed) of every poll kept."""
        polls = list(self._polls)
        return ([t for t, _ in polls],
                [sum(status.rss_bytes for status in statuses) for _, statuses in polls])

    def per_worker(self) -> dict[str, tuple[list[float], list[int]]]:
        """Return each worker's (times, RSS), in the order the workers first appeared."""
        lines: dict[str, tuple[list[float], list[int]]] = {}
        for timestamp, statuses in list(self._polls):
            for status in statuses:
                times, values = lines.setdefault(status.address, ([], []))
                times.append(timestamp)
                values.append(status.rss_bytes)
        return lines
