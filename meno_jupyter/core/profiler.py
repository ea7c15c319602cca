"""``Profiler``: the memory of one block of code, with an exact peak, as a ``ProfileResult``."""

from __future__ import annotations

import html
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from meno_jupyter.core.attribution import GrowthLine, TracedLine, TraceSession
from meno_jupyter.core.cluster import ClusterProfile, WorkerPeak
from meno_jupyter.core.errors import check_count
from meno_jupyter.core.gpu import GPU_PEAK_WATCH, read_cuda_peak
from meno_jupyter.core.memory import (
    MIB,
    PEAK_WATCH,
    RssChange,
    allocator_free_bytes,
    effective_limit,
    finished_children_max_rss,
    finished_children_own_peak,
    format_bytes,
    read_children_rss,
    read_rss,
)
from meno_jupyter.core.memray_trace import MemrayTraceSession, TracerBusyError, memray_available
from meno_jupyter.core.rendering import (
    RendersAsTable,
    Rows,
    html_table,
    sparkline,
    text_table,
)
from meno_jupyter.core.sampler import DEFAULT_CAPACITY, DEFAULT_INTERVAL_S, Sampler

if TYPE_CHECKING:
    import pandas as pd

TRACERS = ("auto", "memray", "tracemalloc")
# Below this, memory reused from malloc's free lists is not worth a note.
REUSE_NOTE_MIN_BYTES = 4 * MIB

@dataclass(frozen=True, eq=False)
class ProfileResult(RssChange, RendersAsTable):
    """The memory of one profiled block. Sizes are bytes, absolute unless named a change.

    Attributes
    ----------
    peak_increase : int
        ``peak_rss - start_rss``: what the block needed on top of what was there.
    delta : int
        ``end_rss - start_rss``: what the block left behind.
    exact_peak : bool
        True when ``peak_rss`` is the kernel's high-water mark; False when it is the
        sampler's maximum, which can miss spikes shorter than the interval.
    growth_lines : list of GrowthLine
        User-code lines running while RSS grew (sampled, sees native allocations).
    top_lines : list of TracedLine
        The traced top lines (only with ``trace=True``).
    tracer : str or None
        What traced them: ``"memray"`` or ``"tracemalloc"``.
    workers : tuple of WorkerPeak
        With a Dask client: every worker's exact peak, kept memory and limit, hungriest
        first; workers that died during the block are named (``died``).
    allocator_free_start, allocator_free_end : int or None
        Freed memory ``malloc`` held for reuse before and after (glibc, with a timeline):
        what it used up was served from resident memory and raised no peak.
    """

    label: str | None
    start_rss: int
    end_rss: int
    peak_rss: int
    duration_s: float
    exact_peak: bool
    interval_s: float
    timeline_t_s: tuple[float, ...] = field(repr=False)
    timeline_rss_bytes: tuple[int, ...] = field(repr=False)
    peak_t_s: float = 0.0
    growth_lines: tuple[GrowthLine, ...] = ()
    top_lines: tuple[TracedLine, ...] = ()
    traced_peak_bytes: int | None = None
    tracer_bytes: int | None = None
    trace_note: str | None = None
    tracer: str | None = None
    trace_capture_path: str | None = None
    trace_capture_bytes: int | None = None
    workers: tuple[WorkerPeak, ...] = ()
    cluster_note: str | None = None
    children_peak_rss: int = 0
    gpu_peak_bytes: int | None = None
    limit_bytes: int | None = None
    limit_source: str | None = None
    error: str | None = None
    allocator_free_start: int | None = None
    allocator_free_end: int | None = None

    @property
    def timeline(self) -> pd.DataFrame:
        """The sampled RSS as a DataFrame with columns ``t_s`` and ``rss_bytes``."""
        import pandas as pd

        frame: pd.DataFrame = pd.DataFrame(
            {"t_s": list(self.timeline_t_s), "rss_bytes": list(self.timeline_rss_bytes)}
        )
        return frame

    @property
    def reused_bytes(self) -> int:
        """Freed, still-resident memory that ``malloc`` handed out again during the block."""
        if self.allocator_free_start is None or self.allocator_free_end is None:
            return 0
        return max(0, self.allocator_free_start - self.allocator_free_end)

    @property
    def reuse_note(self) -> str | None:
        """Why the peak grew less than the block allocated, when that is what happened."""
        reused = self.reused_bytes
        if reused < REUSE_NOTE_MIN_BYTES or reused <= self.peak_increase:
            return None
        return (f"The peak grew by less than the block allocated: {format_bytes(reused)} "
                "came from memory freed earlier and still resident (malloc's free memory fell "
                f"from {format_bytes(self.allocator_free_start or 0)} to "
                f"{format_bytes(self.allocator_free_end or 0)}), which raises neither RSS nor "
                "its peak. --trace counts every allocation.")

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict of every figure, the timeline included."""
        return {
            "label": self.label,
            "start_rss": self.start_rss,
            "end_rss": self.end_rss,
            "peak_rss": self.peak_rss,
            "peak_increase": self.peak_increase,
            "delta": self.delta,
            "duration_s": self.duration_s,
            "exact_peak": self.exact_peak,
            "interval_s": self.interval_s,
            "peak_t_s": self.peak_t_s,
            "children_peak_rss": self.children_peak_rss,
            "gpu_peak_bytes": self.gpu_peak_bytes,
            "traced_peak_bytes": self.traced_peak_bytes,
            "tracer_bytes": self.tracer_bytes,
            "trace_note": self.trace_note,
            "tracer": self.tracer,
            "trace_capture_path": self.trace_capture_path,
            "trace_capture_bytes": self.trace_capture_bytes,
            "workers": [worker.to_dict() for worker in self.workers],
            "cluster_note": self.cluster_note,
            "limit_bytes": self.limit_bytes,
            "limit_source": self.limit_source,
            "error": self.error,
            "allocator_free_start": self.allocator_free_start,
            "allocator_free_end": self.allocator_free_end,
            "growth_lines": [line.to_dict() for line in self.growth_lines],
            "top_lines": [line.to_dict() for line in self.top_lines],
            "timeline": {
                "t_s": list(self.timeline_t_s),
                "rss_bytes": list(self.timeline_rss_bytes),
            },
        }

    def to_json(self, indent: int | None = 2) -> str:
        """Return :meth:`to_dict` as JSON text."""
        return json.dumps(self.to_dict(), indent=indent)

    def summary_rows(self) -> list[tuple[str, str]]:
        """Return (name, value) rows for a summary table."""
        peak_note = "exact: kernel high-water mark" if self.exact_peak else "sampled"
        rows = [
            ("peak increase", format_bytes(self.peak_increase, signed=True)),
            ("delta (kept)", format_bytes(self.delta, signed=True)),
            ("peak RSS", f"{format_bytes(self.peak_rss)} ({peak_note})"),
            ("start → end RSS", f"{format_bytes(self.start_rss)} → {format_bytes(self.end_rss)}"),
            ("duration", f"{self.duration_s:.3f} s"),
        ]
        if self.children_peak_rss:
            rows.append(("children peak RSS", format_bytes(self.children_peak_rss)))
        if self.gpu_peak_bytes is not None:
            rows.append(("GPU peak allocated", format_bytes(self.gpu_peak_bytes)))
        if self.traced_peak_bytes is not None:
            what = ("traced allocations peak (memray)" if self.tracer == "memray"
                    else "Python allocations peak")
            rows.append((what, format_bytes(self.traced_peak_bytes)))
        if self.tracer_bytes:
            rows.append(("tracemalloc's own memory", f"{format_bytes(self.tracer_bytes)} "
                         "(counted in RSS; not there without --trace)"))
        if self.limit_bytes:
            share = self.peak_rss / self.limit_bytes
            rows.append(
                ("peak of limit", f"{share:.0%} of {format_bytes(self.limit_bytes)} "
                 f"({self.limit_source})")
            )
        if self.workers:
            alive = [w for w in self.workers if not w.died]
            total = sum(w.peak_increase for w in alive)
            rows.append(("workers' peak increase",
                         f"{format_bytes(total, signed=True)} over {len(alive)} workers "
                         "(exact, each worker's high-water mark)" if alive else "n/a"))
            rows.extend(("worker died", w.describe_death()) for w in self.workers if w.died)
        if self.cluster_note:
            rows.append(("cluster", self.cluster_note))
        if self.error:
            rows.append(("cell raised", self.error))
        return rows

    def to_text(self) -> str:
        """Render a profile for terminals and logs."""
        title = f"memory profile{f' · {self.label}' if self.label else ''}"
        lines = [title, text_table(("figure", "value"), self.summary_rows())]
        if len(self.timeline_rss_bytes) > 2:
            lines.append(f"RSS  {sparkline(self.timeline_rss_bytes)}")
        if self.workers:
            lines.append("Dask workers:")
            lines.append(text_table(WORKER_COLUMNS, _worker_rows(self)))
        if self.growth_lines:
            rows = [(str(n), format_bytes(g.growth_bytes, signed=True), g.line.label)
                    for n, g in enumerate(self.growth_lines, start=1)]
            lines.append("RSS grew while running:")
            lines.append(text_table(("#", "growth", "line"), rows))
        if self.top_lines:
            traced: Rows = [(format_bytes(t.peak_bytes), format_bytes(t.retained_bytes),
                             _traced_label(t)) for t in self.top_lines]
            lines.append(f"{_traced_caption(self)}:")
            lines.append(text_table(("at peak", "retained", "line"), traced))
            if self.trace_note:
                lines.append(self.trace_note)
        if self.reuse_note:
            lines.append(self.reuse_note)
        return "\n".join(lines)

    def to_html(self) -> str:
        """Render a profile as HTML tables."""
        caption = f"memory profile{f' · {self.label}' if self.label else ''}"
        parts = ['<div class="jp-Meno-profile">', html_table((), self.summary_rows(), caption)]
        if self.workers:
            parts.append(html_table(WORKER_COLUMNS, _worker_rows(self),
                                    "Dask workers (exact peak of each worker process)"))
        if self.growth_lines:
            # Numbered as the figure's markers.
            rows = [(n, format_bytes(g.growth_bytes, signed=True), g.events, g.line.label)
                    for n, g in enumerate(self.growth_lines, start=1)]
            parts.append(html_table(("#", "growth", "samples", "line"), rows,
                                    "RSS grew while running (sampled)"))
        if self.top_lines:
            traced: Rows = [(format_bytes(t.peak_bytes), format_bytes(t.retained_bytes), t.count,
                             _traced_label(t)) for t in self.top_lines]
            count = "allocations" if self.tracer == "memray" else "blocks"
            parts.append(html_table(("at peak", "retained", count, "line"), traced,
                                    _traced_caption(self)))
            if self.trace_note:
                parts.append(f"<p><em>{html.escape(self.trace_note)}</em></p>")
        if self.reuse_note:
            parts.append(f'<p class="jp-Meno-reuse-note">{html.escape(self.reuse_note)}</p>')
        parts.append("</div>")
        return "".join(parts)


def _traced_caption(result: ProfileResult) -> str:
    if result.tracer == "memray":
        return "Top allocations (memray: every allocation, native ones included)"
    return "Top Python allocations (tracemalloc)"


def _traced_label(traced: TracedLine) -> str:
    if traced.native_frames:
        return f"{traced.line.label}  ← {' ← '.join(traced.native_frames)}"
    return traced.line.label


def _worker_rows(result: ProfileResult) -> Rows:
    rows: list[tuple[str, ...]] = []
    for worker in result.workers:
        share = worker.limit_share
        of_limit = (f"{format_bytes(worker.peak_rss)} ({share:.0%} of "
                    f"{format_bytes(worker.memory_limit or 0)})" if share is not None
                    else format_bytes(worker.peak_rss))
        kept = "died" if worker.delta is None else format_bytes(worker.delta, signed=True)
        rows.append((worker.address, format_bytes(worker.peak_increase, signed=True), kept,
                     of_limit, format_bytes(worker.spilled_bytes)))
    return rows


WORKER_COLUMNS = ("worker", "peak increase", "kept", "peak RSS (of limit)", "spilled")


class Profiler:
    """Measure the memory of a block: exact peak, timeline, growth lines, optional tracing.

    Parameters
    ----------
    label : str, optional
        A name kept in the result.
    interval_s : float
        Sampling interval of the timeline (default 10 ms).
    trace : bool
        Also trace allocations and report the top lines: with memray when it is installed
        (every allocation, native ones included, about 1.1x), else with tracemalloc
        (Python allocations only, tens of times slower).
    tracer : {"auto", "memray", "tracemalloc"}
        Which tracer ``trace`` uses; "auto" prefers memray. When memray is already
        tracking the process, tracemalloc is used and the result says why.
    native : bool
        With memray: also capture native frames (the top lines name the C functions).
    keep_trace : str or Path, optional
        With memray: keep the capture file there (``memray flamegraph PATH``).
    dask : distributed.Client, optional
        Also measure every worker of this cluster (exact peak per worker process).
    top_n : int
        How many lines to keep in ``growth_lines`` and ``top_lines``.
    growth_threshold_bytes : int
        RSS growth that makes the sampler note the running line.
    exact : bool
        Use the kernel's high-water mark where available (Linux).
    children : bool
        Sample the RSS of child processes.
    timeline : bool
        Run the sampler thread (timeline, growth lines). Without it a block costs tens of
        microseconds and still has the exact peak where the kernel provides it.

    Examples
    --------
    >>> import numpy as np
    >>> with Profiler() as prof:
    ...     block = np.ones(8 * 1024 * 1024)  # 64 MiB
    ...     del block
    >>> prof.result.peak_increase >= 60 * 1024 * 1024
    True
    """

    def __init__(
        self,
        label: str | None = None,
        *,
        interval_s: float = DEFAULT_INTERVAL_S,
        trace: bool = False,
        tracer: str = "auto",
        native: bool = False,
        keep_trace: str | os.PathLike[str] | None = None,
        dask: Any = None,
        top_n: int = 10,
        growth_threshold_bytes: int = MIB,
        exact: bool = True,
        children: bool = True,
        capacity: int = DEFAULT_CAPACITY,
        timeline: bool = True,
    ) -> None:
        check_count(top_n, minimum=1, name="top_n")
        self.label = label
        self.trace = trace
        self.top_n = top_n
        self.exact = exact
        self.children = children
        if tracer not in TRACERS:
            raise ValueError(f"tracer must be one of {', '.join(TRACERS)}, got {tracer!r}")
        if not trace and (native or keep_trace is not None or tracer != "auto"):
            raise ValueError("tracer, native and keep_trace apply only with trace=True")
        self._cluster = None if dask is None else ClusterProfile(dask, interval_s)
        self._cluster_note: str | None = None
        self._trace_session: TraceSession | MemrayTraceSession | None = None
        self._trace_start_note: str | None = None
        if trace:
            use_memray = tracer == "memray" or (tracer == "auto" and memray_available())
            if tracer == "memray" and not memray_available():
                raise ValueError("tracer='memray' needs memray: pip install "
                                 "'meno-jupyter[trace]' (Linux and macOS)")
            if (native or keep_trace is not None) and not use_memray:
                raise ValueError("native and keep_trace need memray: pip install "
                                 "'meno-jupyter[trace]' (Linux and macOS)")
            self._trace_session = (
                MemrayTraceSession(native, None if keep_trace is None else Path(keep_trace))
                if use_memray else TraceSession())
        self._sampler = Sampler(
            interval_s=interval_s,
            capacity=capacity,
            growth_threshold_bytes=growth_threshold_bytes,
            children_every=10 if children else 0,
            tick_hook=self._trace_tick if trace else None,
        )
        self.timeline = timeline
        self._result: ProfileResult | None = None
        self._peak_token: int | None = None
        self._gpu_token: int | None = None
        self._start_rss = 0
        self._free_start: int | None = None
        self._start_children_max = 0
        self._t0 = 0.0
        self._entered = False

    @property
    def tracer(self) -> str | None:
        """The tracer in use ("memray" or "tracemalloc"), or None without tracing."""
        return None if self._trace_session is None else self._trace_session.name

    def _trace_tick(self) -> None:
        if self._trace_session is not None:
            self._trace_session.tick()

    @property
    def result(self) -> ProfileResult:
        """The result, available once the block has ended."""
        if self._result is None:
            raise RuntimeError("the profiled block has not finished yet")
        return self._result

    @property
    def running(self) -> bool:
        """Whether the block is being measured now."""
        return self._entered and self._result is None

    def __enter__(self) -> Profiler:
        if self._entered:
            raise RuntimeError("a Profiler measures one block; create a new one")
        self._entered = True
        if self._trace_session is not None:
            try:
                self._trace_session.start()
            except TracerBusyError as error:  # memray is taken: tracemalloc instead
                self._trace_start_note = f"{error}; traced with tracemalloc instead."
                self._trace_session = TraceSession()
                self._trace_session.start()
        self._start_children_max = finished_children_max_rss() if self.children else 0
        if self._cluster is not None:
            try:
                self._cluster.start()
            except Exception as failure:  # a cluster problem never stops the cell
                self._cluster_note = f"the workers could not be measured ({failure})"
                self._cluster = None
        self._gpu_token = GPU_PEAK_WATCH.open()
        self._peak_token = PEAK_WATCH.open() if self.exact else None
        # mallinfo2 walks malloc's free lists: only for profiled cells, not every cell.
        self._free_start = allocator_free_bytes() if self.timeline else None
        self._start_rss = read_rss()
        self._t0 = time.perf_counter()
        if self.timeline:
            self._sampler.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._finish(None if exc_type is None else exc_type.__name__)

    def _finish(self, error: str | None) -> None:
        try:
            state = self._sampler.stop()
        finally:
            duration = time.perf_counter() - self._t0
            end_rss = read_rss()
            hwm_peak = PEAK_WATCH.close(self._peak_token)
            gpu_peak = GPU_PEAK_WATCH.close(self._gpu_token)
        top_lines: list[TracedLine] = []
        traced_peak: int | None = None
        tracer_bytes: int | None = None
        trace_note: str | None = None
        tracer: str | None = None
        capture_path: str | None = None
        capture_bytes: int | None = None
        session = self._trace_session
        notes = [self._trace_start_note] if self._trace_start_note else []
        if session is not None:
            tracer = session.name
            try:
                top_lines, traced_peak = session.stop(self.top_n)
            except (OSError, RuntimeError, ValueError) as failure:  # never lose the profile
                notes.append(f"The trace could not be read ({type(failure).__name__}: "
                             f"{failure}); the RSS figures above stand.")
            tracer_bytes = session.tracer_bytes
            if isinstance(session, MemrayTraceSession):
                capture_bytes = session.capture_bytes
                if session.kept_path is not None:
                    capture_path = str(session.kept_path)
                    notes.append(f"Capture kept in {capture_path}: memray flamegraph "
                                 f"{capture_path}")
            if session.snapshots_skipped:
                notes.append(
                    "Too many live allocations to snapshot cheaply: 'at peak' sizes are lower "
                    "bounds, from the last affordable snapshot. The RSS growth lines cover "
                    "the rest.")
        trace_note = " ".join(notes) or None
        workers: tuple[WorkerPeak, ...] = ()
        if self._cluster is not None:
            try:
                workers = self._cluster.stop()
            except Exception as failure:  # the local profile stands
                self._cluster_note = f"the workers could not be read ({failure})"
        exact = hwm_peak is not None
        peak = max(state.max_rss, self._start_rss, end_rss, hwm_peak or 0)
        children_peak = state.children_max_rss
        if self.children:
            children_peak = max(children_peak, read_children_rss(),
                                finished_children_own_peak(self._start_children_max, peak))
        if gpu_peak is None:
            # torch may have been imported inside the block: its peak then began there.
            gpu_peak = read_cuda_peak()
        limit = effective_limit()
        times, values = state.buffer.series()
        self._result = ProfileResult(
            label=self.label,
            start_rss=self._start_rss,
            end_rss=end_rss,
            peak_rss=peak,
            duration_s=duration,
            exact_peak=exact,
            interval_s=self._sampler.interval_s,
            timeline_t_s=tuple(times),
            timeline_rss_bytes=tuple(values),
            peak_t_s=state.max_rss_t_s,
            growth_lines=tuple(self._sampler.growth_lines(self.top_n)),
            top_lines=tuple(top_lines),
            traced_peak_bytes=traced_peak,
            tracer_bytes=tracer_bytes,
            trace_note=trace_note,
            tracer=tracer,
            trace_capture_path=capture_path,
            trace_capture_bytes=capture_bytes,
            workers=workers,
            cluster_note=self._cluster_note,
            children_peak_rss=children_peak,
            gpu_peak_bytes=gpu_peak,
            limit_bytes=limit.limit_bytes,
            limit_source=limit.source,
            error=error,
            allocator_free_start=self._free_start,
            allocator_free_end=None if self._free_start is None else allocator_free_bytes(),
        )


def profile_call(
    func: Any, *args: Any, profiler_options: dict[str, Any] | None = None, **kwargs: Any
) -> tuple[Any, ProfileResult]:
    """Call ``func(*args, **kwargs)`` under a :class:`Profiler`; return (value, result).

    Examples
    --------
    >>> value, result = profile_call(sum, range(10))
    >>> value, result.duration_s >= 0
    (45, True)
    """
    with Profiler(**(profiler_options or {})) as prof:
        value = func(*args, **kwargs)
    return value, prof.result
