"""Text and HTML renderings of results, for ``_repr_mimebundle_`` and terminal IPython."""

from __future__ import annotations

import html
from collections.abc import Callable, Collection, Sequence
from typing import TYPE_CHECKING

from meno_jupyter.core.memory import format_bytes

if TYPE_CHECKING:
    from meno_jupyter.core.attribution import TracedLine
    from meno_jupyter.core.cleanup import ReleaseReport
    from meno_jupyter.core.dataframe import OptimizeResult
    from meno_jupyter.core.leaks import LeakReport
    from meno_jupyter.core.ledger import Ledger
    from meno_jupyter.core.profiler import ProfileResult
    from meno_jupyter.core.status import MemoryStatus

_SPARK = "▁▂▃▄▅▆▇█"
_TABLE_STYLE = (
    "border-collapse:collapse;font-family:var(--jp-code-font-family,monospace);"
    "font-size:12px;margin:4px 0"
)
# JupyterLab's theme variables, with light fallbacks for HTML outside JupyterLab.
_CELL_STYLE = ("padding:2px 8px;border-bottom:1px solid var(--jp-border-color2,#ddd);"
               "text-align:left")
PRESSURE_COLOURS = {"low": "#2e7d32", "medium": "#ef6c00", "high": "#c62828"}


def mimebundle(
    text: Callable[[], str],
    html_text: Callable[[], str],
    include: Collection[str] | None = None,
    exclude: Collection[str] | None = None,
) -> dict[str, str]:
    """Build a text/plain + text/html bundle, rendering only the types asked for."""
    bundle: dict[str, str] = {}
    for mimetype, render in (("text/plain", text), ("text/html", html_text)):
        if (include is None or mimetype in include) and mimetype not in (exclude or ()):
            bundle[mimetype] = render()
    return bundle


Rows = Sequence[Sequence[object]]


def text_table(headers: Sequence[str], rows: Rows) -> str:
    """Format rows as an aligned plain-text table."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
             for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def html_table(
    headers: Sequence[str],
    rows: Rows,
    caption: str | None = None,
    css_class: str = "jp-Meno-table",
    row_styles: Sequence[str] | None = None,
) -> str:
    """Format rows as an HTML table; every value is escaped."""
    parts = [f'<table class="{css_class}" style="{_TABLE_STYLE}">']
    if caption:
        parts.append(
            f'<caption style="text-align:left;font-weight:bold">{html.escape(caption)}</caption>'
        )
    if headers:
        parts.append(
            "<thead><tr>"
            + "".join(f'<th style="{_CELL_STYLE}">{html.escape(str(h))}</th>' for h in headers)
            + "</tr></thead>"
        )
    parts.append("<tbody>")
    for index, row in enumerate(rows):
        style = row_styles[index] if row_styles and index < len(row_styles) else ""
        parts.append(
            f'<tr style="{style}">'
            + "".join(f'<td style="{_CELL_STYLE}">{html.escape(str(c))}</td>' for c in row)
            + "</tr>"
        )
    parts.append("</tbody></table>")
    return "".join(parts)


def sparkline(values: Sequence[float], width: int = 60) -> str:
    """Draw values as a one-line bar chart, for terminals.

    Examples
    --------
    >>> sparkline([0, 1, 2, 3])
    '▁▃▆█'
    """
    if not values:
        return ""
    if len(values) > width:
        step = len(values) / width
        values = [max(values[int(i * step): int((i + 1) * step) or 1]) for i in range(width)]
    low, high = min(values), max(values)
    span = (high - low) or 1
    return "".join(_SPARK[min(7, int((v - low) / span * 7 + 0.5))] for v in values)


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


def profile_text(result: ProfileResult) -> str:
    """Render a profile for terminals and logs."""
    title = f"memory profile{f' · {result.label}' if result.label else ''}"
    lines = [title, text_table(("figure", "value"), result.summary_rows())]
    if len(result.timeline_rss_bytes) > 2:
        lines.append(f"RSS  {sparkline(result.timeline_rss_bytes)}")
    if result.workers:
        lines.append("Dask workers:")
        lines.append(text_table(WORKER_COLUMNS, _worker_rows(result)))
    if result.growth_lines:
        rows = [(str(n), format_bytes(g.growth_bytes, signed=True), g.line.label)
                for n, g in enumerate(result.growth_lines, start=1)]
        lines.append("RSS grew while running:")
        lines.append(text_table(("#", "growth", "line"), rows))
    if result.top_lines:
        traced: Rows = [(format_bytes(t.peak_bytes), format_bytes(t.retained_bytes),
                         _traced_label(t)) for t in result.top_lines]
        lines.append(f"{_traced_caption(result)}:")
        lines.append(text_table(("at peak", "retained", "line"), traced))
        if result.trace_note:
            lines.append(result.trace_note)
    if result.reuse_note:
        lines.append(result.reuse_note)
    return "\n".join(lines)


def profile_html(result: ProfileResult) -> str:
    """Render a profile as HTML tables."""
    caption = f"memory profile{f' · {result.label}' if result.label else ''}"
    parts = ['<div class="jp-Meno-profile">', html_table((), result.summary_rows(), caption)]
    if result.workers:
        parts.append(html_table(WORKER_COLUMNS, _worker_rows(result),
                                "Dask workers (exact peak of each worker process)"))
    if result.growth_lines:
        # Numbered as the figure's markers.
        rows = [(n, format_bytes(g.growth_bytes, signed=True), g.events, g.line.label)
                for n, g in enumerate(result.growth_lines, start=1)]
        parts.append(html_table(("#", "growth", "samples", "line"), rows,
                                "RSS grew while running (sampled)"))
    if result.top_lines:
        traced: Rows = [(format_bytes(t.peak_bytes), format_bytes(t.retained_bytes), t.count,
                         _traced_label(t)) for t in result.top_lines]
        count = "allocations" if result.tracer == "memray" else "blocks"
        parts.append(html_table(("at peak", "retained", count, "line"), traced,
                                _traced_caption(result)))
        if result.trace_note:
            parts.append(f"<p><em>{html.escape(result.trace_note)}</em></p>")
    if result.reuse_note:
        parts.append(f'<p class="jp-Meno-reuse-note">{html.escape(result.reuse_note)}</p>')
    parts.append("</div>")
    return "".join(parts)


def status_text(status: MemoryStatus) -> str:
    """Render a memory status for terminals."""
    lines = ["memory status", text_table(("figure", "value"), status.summary_rows())]
    if status.largest:
        rows = [(v.name, v.type_name, format_bytes(v.size_bytes), v.note)
                for v in status.largest]
        lines.append("Largest variables:")
        lines.append(text_table(("name", "type", "size", "note"), rows))
    if status.workers:
        lines.append("Dask workers:")
        lines.append(text_table(WORKER_STATUS_COLUMNS, _worker_status_rows(status)))
    lines.extend(status.advice)
    return "\n".join(lines)


def status_html(status: MemoryStatus) -> str:
    """Render a memory status as HTML, the pressure level coloured."""
    colour = PRESSURE_COLOURS[status.pressure]
    badge = (f'<span class="jp-Meno-pressure jp-Meno-pressure-{status.pressure}" '
             f'style="color:white;background:{colour};padding:1px 6px;border-radius:3px">'
             f"{html.escape(status.pressure)} pressure</span>")
    parts = ['<div class="jp-Meno-memstatus">', badge,
             html_table((), status.summary_rows(), "memory status")]
    if status.largest:
        rows = [(v.name, v.type_name, format_bytes(v.size_bytes), v.note)
                for v in status.largest]
        parts.append(html_table(("name", "type", "size", "note"), rows, "Largest variables"))
    if status.workers:
        parts.append(html_table(WORKER_STATUS_COLUMNS, _worker_status_rows(status),
                                "Dask workers (Dask's own figures, last heartbeat)"))
    parts.extend(f"<p>{html.escape(line)}</p>" for line in status.advice)
    parts.append("</div>")
    return "".join(parts)


WORKER_STATUS_COLUMNS = ("worker", "RSS", "managed", "unmanaged", "spilled", "of limit")


def _worker_status_rows(status: MemoryStatus) -> Rows:
    return [(w.address, format_bytes(w.rss_bytes), format_bytes(w.managed_bytes),
             format_bytes(w.unmanaged_bytes), format_bytes(w.spilled_bytes),
             "no limit" if w.limit_share is None
             else f"{w.limit_share:.0%} of {format_bytes(w.memory_limit or 0)}")
            for w in status.workers]


_LEDGER_HEADERS = ("cell", "source", "delta", "peak increase", "duration")
_HIGHLIGHT = "background:rgba(198,40,40,0.12);font-weight:bold"


def ledger_text(ledger: Ledger, top: int = 20) -> str:
    """Render the newest cells of a ledger for terminals."""
    if not len(ledger):
        return "memory ledger: no cells recorded yet (turn it on with %memwatch on)"
    lines = [f"memory ledger: {len(ledger)} cells (newest {min(top, len(ledger))} shown)",
             text_table(_LEDGER_HEADERS, ledger.summary_rows(top))]
    biggest = ledger.largest(3)
    lines.append("largest peaks: " + ", ".join(
        f"[{r.execution_count}] {format_bytes(r.peak_increase, signed=True)}" for r in biggest))
    return "\n".join(lines)


def ledger_html(ledger: Ledger, top: int = 20) -> str:
    """Render the newest cells of a ledger as HTML, the three largest peaks highlighted."""
    if not len(ledger):
        return ("<p>memory ledger: no cells recorded yet "
                "(turn it on with <code>%memwatch on</code>)</p>")
    records = list(ledger)[-top:]
    biggest = {id(r) for r in ledger.largest(3)}
    styles = [_HIGHLIGHT if id(r) in biggest else "" for r in records]
    caption = f"memory ledger: {len(ledger)} cells (newest {len(records)} shown)"
    return html_table(_LEDGER_HEADERS, ledger.summary_rows(top), caption,
                      css_class="jp-Meno-table jp-Meno-ledger", row_styles=styles)


def _release_rows(report: ReleaseReport) -> list[tuple[str, str, str]]:
    return [(r.kind, r.detail, format_bytes(r.size_bytes)) for r in report.released]


def release_text(report: ReleaseReport) -> str:
    """Render a clean-up report for terminals."""
    title = "memclean (dry run)" if report.dry_run else "memclean"
    lines = [title, text_table(("figure", "value"), report.summary_rows())]
    if report.released:
        verb = "would drop" if report.dry_run else "dropped"
        lines.append(f"{verb}:")
        lines.append(text_table(("kind", "what", "held"), _release_rows(report)))
    else:
        lines.append("nothing to drop")
    lines.extend(report.notes)
    return "\n".join(lines)


def release_html(report: ReleaseReport) -> str:
    """Render a clean-up report as HTML."""
    title = "memclean (dry run)" if report.dry_run else "memclean"
    parts = ['<div class="jp-Meno-clean">', html_table((), report.summary_rows(), title)]
    if report.released:
        verb = "would drop" if report.dry_run else "dropped"
        parts.append(html_table(("kind", "what", "held"), _release_rows(report), verb))
    parts.extend(f"<p>{html.escape(note)}</p>" for note in report.notes)
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


def leak_text(report: LeakReport) -> str:
    """Render a leak report for terminals."""
    lines = ["memleak", text_table(("figure", "value"), report.summary_rows())]
    for title, headers, rows in _leak_sections(report):
        lines.append(f"{title}:")
        lines.append(text_table(headers, rows))
    lines.extend(f"- {reason}" for reason in report.reasons)
    return "\n".join(lines)


def leak_html(report: LeakReport) -> str:
    """Render a leak report as HTML, the verdict coloured."""
    colour = PRESSURE_COLOURS["high" if report.leaking else "low"]
    parts = [f'<div class="jp-Meno-leak" style="border-left:4px solid {colour};padding-left:6px">',
             html_table((), report.summary_rows(), "memleak")]
    for title, headers, rows in _leak_sections(report):
        parts.append(html_table(headers, rows, title))
    parts.extend(f"<p>{html.escape(reason)}</p>" for reason in report.reasons)
    parts.append("</div>")
    return "".join(parts)


_OPTIMIZE_HEADERS = ("column", "before", "after", "bytes before", "bytes after", "note")
_HAZARD_STYLE = "background:rgba(239,108,0,0.12)"


def _optimize_rows(result: OptimizeResult) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for c in result.changes:
        note = c.hazard or c.reason
        if c.max_error is not None:
            note = f"{note}; max relative error {c.max_error:.2g}"
        rows.append((c.column, c.dtype_before, c.dtype_after, format_bytes(c.bytes_before),
                     format_bytes(c.bytes_after), note))
    return rows


def optimize_text(result: OptimizeResult) -> str:
    """Render an optimization report for terminals."""
    return "\n".join(["optimize_df", text_table(("figure", "value"), result.summary_rows()),
                      text_table(_OPTIMIZE_HEADERS, _optimize_rows(result))])


def optimize_html(result: OptimizeResult) -> str:
    """Render an optimization report as HTML, the columns that need care shaded."""
    styles = [_HAZARD_STYLE if c.needs_care else "" for c in result.changes]
    return "".join([
        '<div class="jp-Meno-optimize">',
        html_table((), result.summary_rows(), "optimize_df"),
        html_table(_OPTIMIZE_HEADERS, _optimize_rows(result),
                   "per column (shaded: arithmetic can wrap, or values changed)",
                   row_styles=styles),
        "</div>",
    ])
