"""Leak detection: run code repeatedly and find what grows with every run.

Three kinds of evidence, from cheap and certain to broad and noisy:

* object types whose count (gc-tracked objects, after a full collection) goes up in nearly
  every run: a Python-level leak, named by type;
* lines whose tracemalloc-retained size grows from the first measured run to the last;
* the RSS trend across runs, fitted by least squares, with its standard error and R².

A leak is reported when the object counts or traced lines grow steadily, or when RSS grows
by more than the noise allows (slope above a floor and three standard errors, R² ≥ 0.8).
Allocator noise (RSS up and down, freed memory not returned) fits neither and is not flagged.
"""

from __future__ import annotations

import gc
import html
import math
import tracemalloc
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from meno_jupyter.core.attribution import TRACE_FRAMES, CodeLine, _by_line, code_line
from meno_jupyter.core.cleanup import trim_allocator
from meno_jupyter.core.memory import format_bytes, read_rss_exact
from meno_jupyter.core.rendering import (
    PRESSURE_COLOURS,
    RendersAsTable,
    Rows,
    html_table,
    text_table,
)

DEFAULT_RSS_FLOOR_BYTES = 256 * 1024
STEADY_SHARE = 0.8


@dataclass(frozen=True)
class GrowingType:
    """A type whose live-object count grows run after run."""

    type_name: str
    per_run: float
    first_count: int
    last_count: int


@dataclass(frozen=True)
class GrowingLine:
    """A line whose traced, retained size grows run after run."""

    line: CodeLine
    per_run_bytes: float


@dataclass(frozen=True)
class TrendFit:
    """A least-squares line through RSS per run."""

    slope_bytes: float
    stderr_bytes: float
    r_squared: float


def fit_trend(values: Sequence[float]) -> TrendFit:
    """Fit ``values[i] = a + slope * i`` by least squares.

    Examples
    --------
    >>> fit = fit_trend([10, 20, 30, 40])
    >>> fit.slope_bytes, round(fit.r_squared, 3)
    (10.0, 1.0)
    """
    n = len(values)
    if n < 3:
        raise ValueError("fitting a trend needs at least 3 runs")
    xs = range(n)
    mean_x = (n - 1) / 2
    mean_y = sum(values) / n
    sxx = sum((x - mean_x) ** 2 for x in xs)
    sxy = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, values, strict=True))
    slope = sxy / sxx
    residuals = [y - (mean_y + slope * (x - mean_x)) for x, y in zip(xs, values, strict=True)]
    ss_res = sum(r * r for r in residuals)
    ss_tot = sum((y - mean_y) ** 2 for y in values)
    stderr = math.sqrt(ss_res / (n - 2) / sxx) if n > 2 else math.inf
    r_squared = 1.0 - ss_res / ss_tot if ss_tot > 0 else 0.0
    return TrendFit(slope, stderr, r_squared)


@dataclass(frozen=True)
class LeakReport(RendersAsTable):
    """What grew across repeated runs, and the verdict.

    Attributes
    ----------
    leaking : bool
        True when the evidence says memory grows with every run.
    rss_bytes : tuple of int
        RSS after each measured run (after a full garbage collection).
    trend : TrendFit
        RSS growth per run with its standard error and R².
    """

    repeat: int
    leaking: bool
    rss_bytes: tuple[int, ...]
    trend: TrendFit
    growing_types: tuple[GrowingType, ...] = ()
    growing_lines: tuple[GrowingLine, ...] = ()
    reasons: tuple[str, ...] = field(default=())

    @property
    def growth_per_run_bytes(self) -> float:
        """RSS growth per run, from the fitted trend."""
        return self.trend.slope_bytes

    def summary_rows(self) -> list[tuple[str, str]]:
        """Return (name, value) rows for a summary table."""
        verdict = "LEAK: memory grows with every run" if self.leaking else "no leak found"
        return [
            ("verdict", verdict),
            ("runs measured", str(self.repeat)),
            ("RSS growth per run",
             f"{format_bytes(self.trend.slope_bytes, signed=True)} ± "
             f"{format_bytes(self.trend.stderr_bytes)} (R² {self.trend.r_squared:.2f})"),
            ("RSS first → last",
             f"{format_bytes(self.rss_bytes[0])} → {format_bytes(self.rss_bytes[-1])}"),
        ]

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict."""
        return {
            "repeat": self.repeat, "leaking": self.leaking, "rss_bytes": list(self.rss_bytes),
            "growth_per_run_bytes": self.trend.slope_bytes,
            "stderr_bytes": self.trend.stderr_bytes, "r_squared": self.trend.r_squared,
            "growing_types": [vars(t) for t in self.growing_types],
            "growing_lines": [{"line": vars(g.line), "per_run_bytes": g.per_run_bytes}
                              for g in self.growing_lines],
            "reasons": list(self.reasons),
        }

    def to_text(self) -> str:
        """Render a leak report for terminals."""
        lines = ["memleak", text_table(("figure", "value"), self.summary_rows())]
        for title, headers, rows in _leak_sections(self):
            lines.append(f"{title}:")
            lines.append(text_table(headers, rows))
        lines.extend(f"- {reason}" for reason in self.reasons)
        return "\n".join(lines)

    def to_html(self) -> str:
        """Render a leak report as HTML, the verdict coloured."""
        colour = PRESSURE_COLOURS["high" if self.leaking else "low"]
        style = f"border-left:4px solid {colour};padding-left:6px"
        parts = [f'<div class="jp-Meno-leak" style="{style}">',
                 html_table((), self.summary_rows(), "memleak")]
        for title, headers, rows in _leak_sections(self):
            parts.append(html_table(headers, rows, title))
        parts.extend(f"<p>{html.escape(reason)}</p>" for reason in self.reasons)
        parts.append("</div>")
        return "".join(parts)


def _leak_sections(report: LeakReport) -> list[tuple[str, tuple[str, ...], Rows]]:
    sections: list[tuple[str, tuple[str, ...], Rows]] = []
    if report.growing_types:
        sections.append(("Object types growing every run", ("type", "per run", "first → last"),
                         [(t.type_name, f"+{t.per_run:g}", f"{t.first_count} → {t.last_count}")
                          for t in report.growing_types]))
    if report.growing_lines:
        sections.append(("Lines retaining more every run (tracemalloc)", ("per run", "line"),
                         [(format_bytes(g.per_run_bytes, signed=True), g.line.label)
                          for g in report.growing_lines]))
    return sections


def _type_counts() -> Counter[str]:
    by_type = Counter(map(type, gc.get_objects()))
    counts: Counter[str] = Counter()
    for cls, count in by_type.items():
        counts[cls.__qualname__] += count
    return counts


class _TypeGrowth:
    """Live-object counts by type across runs, in constant memory.

    Keeping one count table per run would itself grow memory with every run (and look like
    a leak); only the first and previous tables and a tally of increases are kept.
    """

    def __init__(self) -> None:
        self.first: Counter[str] | None = None
        self.previous: Counter[str] = Counter()
        self.increases: Counter[str] = Counter()
        self.steps = 0

    def add(self, counts: Counter[str]) -> None:
        if self.first is None:
            self.first = counts
        else:
            self.steps += 1
            for name, count in counts.items():
                if count > self.previous.get(name, 0):
                    self.increases[name] += 1
        self.previous = counts

    def growing(self) -> list[GrowingType]:
        if self.first is None or not self.steps:
            return []
        found = []
        for name, last in self.previous.items():
            first = self.first.get(name, 0)
            if (last - first >= self.steps
                    and self.increases[name] >= STEADY_SHARE * self.steps):
                found.append(GrowingType(name, (last - first) / self.steps, first, last))
        found.sort(key=lambda t: t.per_run, reverse=True)
        return found


def _growing_lines(
    snapshots: list[dict[tuple[str, int], tuple[int, int]]], steps: int
) -> list[GrowingLine]:
    """Lines whose retained size rises at every snapshot, by 1 KiB a run and 2 % at least."""
    if len(snapshots) < 3:
        return []
    first, middle, last = snapshots
    found = []
    for key, (size, _) in last.items():
        start = first.get(key, (0, 0))[0]
        mid = middle.get(key, (0, 0))[0]
        grown = size - start
        if start < mid < size and grown / steps >= 1024 and grown >= 0.02 * max(start, 1):
            found.append(GrowingLine(code_line(*key), grown / steps))
    return found


def find_leaks(
    fn: Callable[[], object],
    repeat: int = 10,
    *,
    warmup: int = 2,
    trace: bool = True,
    rss_floor_bytes: int = DEFAULT_RSS_FLOOR_BYTES,
    top_n: int = 10,
) -> LeakReport:
    """Call ``fn`` ``warmup + repeat`` times and report what grows with every run.

    Parameters
    ----------
    fn : callable
        The code under suspicion; called with no arguments.
    repeat : int
        Measured runs (at least 3).
    warmup : int
        Unmeasured runs first, so one-off caches and imports are not taken for leaks.
    trace : bool
        Also compare tracemalloc snapshots to name the lines whose retained size grows.
    rss_floor_bytes : int
        RSS growth per run below this is never called a leak by the RSS trend alone.
    top_n : int
        How many growing types and lines to keep.

    Examples
    --------
    >>> kept = []
    >>> find_leaks(lambda: kept.append([0] * 10_000), repeat=5).leaking
    True
    >>> find_leaks(lambda: [0] * 10_000, repeat=5).leaking
    False
    """
    if repeat < 3:
        raise ValueError(f"repeat must be at least 3, got {repeat}")
    if warmup < 0:
        raise ValueError(f"warmup must be 0 or more, got {warmup}")
    for _ in range(warmup):
        fn()
    started_tracing = False
    if trace and not tracemalloc.is_tracing():
        tracemalloc.start(TRACE_FRAMES)
        started_tracing = True
    rss: list[int] = []
    types = _TypeGrowth()
    # Snapshots after the first, middle and last runs: a leaking line grows at each.
    snapshot_runs = (0, repeat // 2, repeat - 1)
    raw_snapshots: list[tracemalloc.Snapshot] = []
    # What this function itself keeps between runs (the snapshots, above all: with tracing
    # already on in a large process each is tens of MiB) is taken off the later readings,
    # or it would look like RSS growing in steps. Exact readings: the kernel's running RSS
    # counter lags, and would put a run's own growth into the bookkeeping.
    bookkeeping_bytes = 0
    try:
        for run in range(repeat):
            fn()
            gc.collect()
            # Freed heap pages (the run's temporaries, our own bookkeeping) go back to the
            # OS first, so RSS counts what is still held and not what malloc keeps around.
            trim_allocator()
            before_bookkeeping = read_rss_exact()
            rss.append(before_bookkeeping - bookkeeping_bytes)
            types.add(_type_counts())
            if trace and run in snapshot_runs:
                raw_snapshots.append(tracemalloc.take_snapshot())
            gc.collect()
            trim_allocator()
            bookkeeping_bytes += read_rss_exact() - before_bookkeeping
    finally:
        if started_tracing:
            tracemalloc.stop()
    # Grouped after tracing stops, so that the grouping's own allocations are not traced.
    snapshots = [_by_line(snapshot) for snapshot in raw_snapshots]
    del raw_snapshots
    return _verdict(repeat=repeat, rss=rss, types=types.growing(), snapshots=snapshots,
                    rss_floor_bytes=rss_floor_bytes, top_n=top_n)


def _verdict(
    *,
    repeat: int,
    rss: list[int],
    types: list[GrowingType],
    snapshots: list[dict[tuple[str, int], tuple[int, int]]],
    rss_floor_bytes: int,
    top_n: int,
) -> LeakReport:
    trend = fit_trend([float(v) for v in rss])
    steps = repeat - 1
    lines = _growing_lines(snapshots, steps)
    lines.sort(key=lambda g: g.per_run_bytes, reverse=True)
    reasons = []
    if types:
        reasons.append(f"{len(types)} object type(s) grow in at least "
                       f"{STEADY_SHARE:.0%} of runs")
    if lines:
        reasons.append(f"{len(lines)} traced line(s) retain more after every run")
    rss_leak = (trend.slope_bytes >= rss_floor_bytes
                and trend.slope_bytes > 3 * trend.stderr_bytes
                and trend.r_squared >= 0.8)
    if rss_leak:
        reasons.append("RSS grows steadily: "
                       f"{format_bytes(trend.slope_bytes, signed=True)} per run")
    return LeakReport(
        repeat=repeat,
        leaking=bool(types or lines or rss_leak),
        rss_bytes=tuple(rss),
        trend=trend,
        growing_types=tuple(types[:top_n]),
        growing_lines=tuple(lines[:top_n]),
        reasons=tuple(reasons),
    )
