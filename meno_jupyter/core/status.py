"""``memory_status``: one look at the process, its limit, and what holds the memory."""

from __future__ import annotations

import gc
import html
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from meno_jupyter.core.cluster import WorkerStatus, worker_statuses
from meno_jupyter.core.errors import check_count
from meno_jupyter.core.memory import (
    DEFAULT_PRESSURE_THRESHOLDS,
    MemoryLimit,
    PressureLevel,
    effective_limit,
    format_bytes,
    pressure_level,
    read_children_rss,
    read_rss,
)
from meno_jupyter.core.namespace import VariableSize, held_bytes, largest_variables
from meno_jupyter.core.rendering import (
    PRESSURE_COLOURS,
    RendersAsTable,
    Rows,
    html_table,
    text_table,
)

OUTPUT_CACHE_ADVICE_BYTES = 50 * 1024 * 1024


@dataclass(frozen=True)
class MemoryStatus(RendersAsTable):
    """The process's memory now, against its effective limit.

    Attributes
    ----------
    output_cache_bytes : int or None
        What IPython's output history (``Out``, ``_``, ``__``, ``___``) holds; None outside
        IPython.
    advice : list of str
        What to do about it, when there is something to do.
    workers : tuple of WorkerStatus
        With a Dask client: every worker's memory from Dask's own metrics.
    """

    rss_bytes: int
    children_rss_bytes: int
    limit: MemoryLimit
    pressure: PressureLevel
    gc_counts: tuple[int, int, int]
    largest: tuple[VariableSize, ...] = ()
    output_cache_bytes: int | None = None
    output_cache_entries: int = 0
    advice: tuple[str, ...] = field(default=())
    workers: tuple[WorkerStatus, ...] = ()

    @property
    def share_of_limit(self) -> float:
        """RSS (children included) as a share of the effective limit."""
        return (self.rss_bytes + self.children_rss_bytes) / self.limit.limit_bytes

    def summary_rows(self) -> list[tuple[str, str]]:
        """Return (name, value) rows for a summary table."""
        rows = [
            ("process RSS", format_bytes(self.rss_bytes)),
            ("children RSS", format_bytes(self.children_rss_bytes)),
            ("effective limit", f"{format_bytes(self.limit.limit_bytes)} ({self.limit.source})"),
            ("used of limit", f"{self.share_of_limit:.1%} — {self.pressure} pressure"),
            ("available", format_bytes(self.limit.available_bytes)),
            ("GC counts (gen 0/1/2)", "/".join(str(c) for c in self.gc_counts)),
        ]
        if self.output_cache_bytes is not None:
            rows.append(
                ("output cache", f"{format_bytes(self.output_cache_bytes)} in "
                 f"{self.output_cache_entries} "
                 f"{'entry' if self.output_cache_entries == 1 else 'entries'}")
            )
        return rows

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict."""
        return {
            "rss_bytes": self.rss_bytes,
            "children_rss_bytes": self.children_rss_bytes,
            "limit": self.limit.to_dict(),
            "pressure": self.pressure,
            "share_of_limit": self.share_of_limit,
            "gc_counts": list(self.gc_counts),
            "largest": [v.to_dict() for v in self.largest],
            "output_cache_bytes": self.output_cache_bytes,
            "output_cache_entries": self.output_cache_entries,
            "advice": list(self.advice),
        }

    def to_text(self) -> str:
        """Render a memory status for terminals."""
        lines = ["memory status", text_table(("figure", "value"), self.summary_rows())]
        if self.largest:
            rows = [(v.name, v.type_name, format_bytes(v.size_bytes), v.note)
                    for v in self.largest]
            lines.append("Largest variables:")
            lines.append(text_table(("name", "type", "size", "note"), rows))
        if self.workers:
            lines.append("Dask workers:")
            lines.append(text_table(WORKER_STATUS_COLUMNS, _worker_status_rows(self)))
        lines.extend(self.advice)
        return "\n".join(lines)

    def to_html(self) -> str:
        """Render a memory status as HTML, the pressure level coloured."""
        colour = PRESSURE_COLOURS[self.pressure]
        badge = (f'<span class="jp-Meno-pressure jp-Meno-pressure-{self.pressure}" '
                 f'style="color:white;background:{colour};padding:1px 6px;border-radius:3px">'
                 f"{html.escape(self.pressure)} pressure</span>")
        parts = ['<div class="jp-Meno-memstatus">', badge,
                 html_table((), self.summary_rows(), "memory status")]
        if self.largest:
            rows = [(v.name, v.type_name, format_bytes(v.size_bytes), v.note)
                    for v in self.largest]
            parts.append(html_table(("name", "type", "size", "note"), rows, "Largest variables"))
        if self.workers:
            parts.append(html_table(WORKER_STATUS_COLUMNS, _worker_status_rows(self),
                                    "Dask workers (Dask's own figures, last heartbeat)"))
        parts.extend(f"<p>{html.escape(line)}</p>" for line in self.advice)
        parts.append("</div>")
        return "".join(parts)


WORKER_STATUS_COLUMNS = ("worker", "RSS", "managed", "unmanaged", "spilled", "of limit")


def _worker_status_rows(status: MemoryStatus) -> Rows:
    return [(w.address, format_bytes(w.rss_bytes), format_bytes(w.managed_bytes),
             format_bytes(w.unmanaged_bytes), format_bytes(w.spilled_bytes),
             "no limit" if w.limit_share is None
             else f"{w.limit_share:.0%} of {format_bytes(w.memory_limit or 0)}")
            for w in status.workers]


def memory_status(
    namespace: Mapping[str, object] | None = None,
    *,
    top: int = 10,
    hidden: Iterable[str] = (),
    output_cache: Sequence[object] | None = None,
    thresholds: tuple[float, float] = DEFAULT_PRESSURE_THRESHOLDS,
    dask: Any = None,
) -> MemoryStatus:
    """Measure the process now and, given a namespace, its largest variables.

    Parameters
    ----------
    namespace : mapping, optional
        Variables to size (a notebook's user namespace).
    top : int
        How many of the largest variables to list (0 for none).
    hidden : iterable of str
        Names to leave out (IPython's own).
    output_cache : sequence, optional
        The objects IPython's output history holds.
    thresholds : tuple of float
        Shares of the limit where pressure turns ``medium`` and ``high``.
    dask : distributed.Client, optional
        Also list this cluster's workers (RSS, managed, unmanaged, spilled, limit).

    Examples
    --------
    >>> status = memory_status({"x": list(range(1000))}, top=1)
    >>> status.largest[0].name
    'x'
    """
    check_count(top, minimum=0, name="top")
    rss = read_rss()
    children = read_children_rss()
    limit = effective_limit()
    level = limit.pressure(rss + children, thresholds)
    largest = (
        tuple(largest_variables(namespace, top=top, hidden=hidden))
        if namespace is not None and top
        else ()
    )
    cache_bytes: int | None = None
    advice: list[str] = []
    if output_cache is not None:
        cache_bytes = held_bytes(output_cache)
        if cache_bytes >= OUTPUT_CACHE_ADVICE_BYTES:
            advice.append(
                f"IPython's output cache holds {format_bytes(cache_bytes)}: objects you "
                "deleted stay alive while an Out[N] shows them. Free it with `%memclean`."
            )
    if level != "low":
        advice.append(
            f"Memory pressure is {level}: {format_bytes(limit.available_bytes)} left before "
            f"the {limit.source} limit of {format_bytes(limit.limit_bytes)}."
        )
    workers = worker_statuses(dask) if dask is not None else ()
    for worker in workers:
        share = worker.limit_share
        if share is not None and pressure_level(worker.rss_bytes, worker.memory_limit or 1,
                                                thresholds) == "high":
            advice.append(f"Dask worker {worker.address} is at {share:.0%} of its "
                          f"{format_bytes(worker.memory_limit or 0)} limit: Dask pauses it "
                          "at 80 % and its nanny restarts it at 95 %.")
    counts = gc.get_count()
    return MemoryStatus(
        rss_bytes=rss,
        children_rss_bytes=children,
        limit=limit,
        pressure=level,
        gc_counts=(counts[0], counts[1], counts[2]),
        largest=largest,
        output_cache_bytes=cache_bytes,
        output_cache_entries=len(output_cache) if output_cache is not None else 0,
        advice=tuple(advice),
        workers=workers,
    )
