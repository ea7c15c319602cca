"""Plotly figures of memory over time. plotly is imported only when a figure is built."""

from __future__ import annotations

import json
import uuid
from typing import TYPE_CHECKING, Any

from meno_jupyter.core.memory import MIB, format_bytes
from meno_jupyter.core.rendering import PRESSURE_COLOURS, json_for_script

if TYPE_CHECKING:
    from plotly.graph_objects import Figure

    from meno_jupyter.core.attribution import GrowthLine
    from meno_jupyter.core.cluster import ClusterHistory
    from meno_jupyter.core.ledger import CellRecord, Ledger
    from meno_jupyter.core.live import LiveSample
    from meno_jupyter.core.profiler import ProfileResult

PLOTLY_MIMETYPE = "application/vnd.plotly.v1+json"
_LINE_COLOUR = "#1565c0"
_PEAK_COLOUR = "#c62828"
_GROWTH_COLOUR = "#ef6c00"
_CLUSTER_COLOUR = "#00838f"
_WORKER_COLOURS = ("#4db6ac", "#9575cd", "#f06292", "#a1887f", "#90a4ae", "#aed581")
# A template that reads on light and dark themes alike, inlined (plotly's named templates
# need plotly to expand them): transparent backgrounds, mid-grey text, translucent grid.
_NEUTRAL_TEXT = "#8a8a8a"
_GRID = "rgba(128,128,128,0.25)"
_TEMPLATE = {"layout": {"paper_bgcolor": "rgba(0,0,0,0)", "plot_bgcolor": "rgba(0,0,0,0)",
                        "font": {"color": _NEUTRAL_TEXT},
                        "xaxis": {"gridcolor": _GRID, "zeroline": False, "linecolor": _GRID},
                        "yaxis": {"gridcolor": _GRID, "zeroline": False, "linecolor": _GRID}}}
PLOTLY_CDN = "https://cdn.plot.ly/plotly-2.35.2.min.js"


MAX_POINTS = 2_000
MAX_GROWTH_MARKERS = 5


def decimate(times: list[float], values: list[float], max_points: int = MAX_POINTS
             ) -> tuple[list[float], list[float]]:
    """Thin a series to at most ``max_points``, keeping the largest value of each bucket."""
    if len(times) <= max_points:
        return times, values
    step = len(times) / max_points
    out_t: list[float] = []
    out_v: list[float] = []
    for i in range(max_points):
        lo, hi = int(i * step), max(int((i + 1) * step), int(i * step) + 1)
        best = max(range(lo, min(hi, len(values))), key=values.__getitem__)
        out_t.append(times[best])
        out_v.append(values[best])
    return out_t, out_v


def _hline(y: float, colour: str, dash: str, text: str, position: str) -> tuple[dict[str, Any],
                                                                                dict[str, Any]]:
    shape = {"type": "line", "xref": "paper", "x0": 0, "x1": 1, "y0": y, "y1": y,
             "line": {"color": colour, "dash": dash, "width": 1}}
    annotation = {"xref": "paper", "x": 1 if position == "right" else 0, "y": y,
                  "xanchor": "right" if position == "right" else "left", "yanchor": "bottom",
                  "text": text, "showarrow": False, "font": {"size": 11, "color": colour}}
    return shape, annotation


def _growth_span(growth: GrowthLine) -> str:
    if growth.last_t_s > growth.first_t_s:
        return f" (from {growth.first_t_s:.1f} s to {growth.last_t_s:.1f} s)"
    return f" (at {growth.first_t_s:.1f} s)"


def profile_figure_spec(result: ProfileResult, height: int = 320) -> dict[str, Any]:
    """Return the RSS timeline of a profile as a plotly figure spec (plain JSON-able dict).

    Built without plotly, so showing it costs microseconds; :func:`profile_figure` turns it
    into a ``plotly.graph_objects.Figure``.
    """
    times, rss_mib = decimate(list(result.timeline_t_s),
                              [v / MIB for v in result.timeline_rss_bytes])
    peak_label = "exact peak" if result.exact_peak else "sampled peak"
    shapes: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for shape, note in (
        _hline(result.start_rss / MIB, "#757575", "dot",
               f"start {format_bytes(result.start_rss)}", "right"),
        _hline(result.peak_rss / MIB, _PEAK_COLOUR, "dash",
               f"{peak_label} {format_bytes(result.peak_rss)} "
               f"({format_bytes(result.peak_increase, signed=True)})", "left"),
    ):
        shapes.append(shape)
        annotations.append(note)
    # Growth lines as numbered markers along the top (the tables below use the same
    # numbers); the line itself is in the hover, never rotated text over the ticks.
    growth = result.growth_lines[:MAX_GROWTH_MARKERS]
    # A line that kept growing over a while gets a faint band from its first growth to its
    # last, so one marker does not suggest that all of it happened at its start.
    for number, found in enumerate(growth, start=1):
        shapes.append({"type": "line", "yref": "paper", "y0": 0, "y1": 1,
                       "x0": found.first_t_s, "x1": found.first_t_s,
                       "line": {"color": _GROWTH_COLOUR, "width": 1, "dash": "dot"}})
        if found.last_t_s > found.first_t_s:
            shapes.append({"type": "rect", "yref": "paper", "y0": 0, "y1": 1,
                           "x0": found.first_t_s, "x1": found.last_t_s, "layer": "below",
                           "line": {"width": 0}, "fillcolor": _GROWTH_COLOUR,
                           "opacity": 0.08})
        annotations.append({
            "x": found.first_t_s, "y": 1.0, "yref": "paper", "showarrow": False,
            "yanchor": "bottom", "font": {"size": 11, "color": _GROWTH_COLOUR},
            "text": str(number)})
    data = [
        {"type": "scatter", "x": times, "y": rss_mib, "mode": "lines", "name": "RSS",
         "line": {"color": _LINE_COLOUR, "width": 2}, "fill": "tozeroy",
         "fillcolor": "rgba(21,101,192,0.08)",
         "hovertemplate": "%{x:.3f} s<br>%{y:.1f} MiB<extra></extra>"},
        {"type": "scatter", "x": [result.peak_t_s], "y": [max(rss_mib, default=0.0)],
         "mode": "markers", "name": "highest sample",
         "marker": {"color": _PEAK_COLOUR, "size": 8},
         "hovertemplate": "highest sample %{y:.1f} MiB at %{x:.3f} s<extra></extra>"},
    ]
    if growth:
        top = max(rss_mib, default=0.0)
        data.append({
            "type": "scatter", "mode": "markers", "name": "growth",
            "x": [g.first_t_s for g in growth], "y": [top] * len(growth),
            "marker": {"color": _GROWTH_COLOUR, "size": 7, "symbol": "triangle-down"},
            "text": [f"{n}: {format_bytes(g.growth_bytes, signed=True)} while running "
                     f"{g.line.label}{_growth_span(g)}" for n, g in enumerate(growth, start=1)],
            "hovertemplate": "%{text}<extra></extra>"})
    data.extend(_worker_traces(result))
    title = "memory profile" + (f" · {result.label}" if result.label else "")
    layout = {
        "title": {"text": title, "font": {"size": 14}}, "height": height,
        "margin": {"l": 60, "r": 20, "t": 40, "b": 40},
        "xaxis": {"title": {"text": "seconds"}}, "yaxis": {"title": {"text": "RSS (MiB)"}},
        "showlegend": bool(result.workers), "template": _TEMPLATE, "shapes": shapes,
        "annotations": annotations,
    }
    return {"data": data, "layout": layout}


def _worker_traces(result: ProfileResult) -> list[dict[str, Any]]:
    """Return the cluster's total RSS and the hungriest worker's, when workers were measured."""
    measured = [w for w in result.workers if w.timeline_t_s]
    if not measured:
        return []
    # Each worker sampled on its own clock from the block's start: hold each value until
    # its next sample and add them up on the union of the sample times.
    times = sorted({t for w in measured for t in w.timeline_t_s})
    total = [0.0] * len(times)
    for worker in measured:
        index = 0
        for position, t in enumerate(times):
            while (index + 1 < len(worker.timeline_t_s)
                   and worker.timeline_t_s[index + 1] <= t):
                index += 1
            total[position] += worker.timeline_rss_bytes[index] / MIB
    times, total = decimate(times, total)
    hungriest = measured[0]  # the result lists the workers hungriest first
    hungry_times, hungry_mib = decimate(list(hungriest.timeline_t_s),
                                        [v / MIB for v in hungriest.timeline_rss_bytes])
    return [
        {"type": "scatter", "x": times, "y": total, "mode": "lines",
         "name": f"cluster total ({len(measured)} workers)",
         "line": {"color": "#6a1b9a", "width": 2},
         "hovertemplate": "cluster %{y:.1f} MiB at %{x:.3f} s<extra></extra>"},
        {"type": "scatter", "x": hungry_times, "y": hungry_mib, "mode": "lines",
         "name": f"hungriest worker {hungriest.address}",
         "line": {"color": "#6a1b9a", "width": 1, "dash": "dot"},
         "hovertemplate": "worker %{y:.1f} MiB at %{x:.3f} s<extra></extra>"},
    ]


def profile_figure(result: ProfileResult, height: int = 320) -> Figure:
    """Return the RSS timeline of a profile: start level, exact peak and growth lines marked.

    Examples
    --------
    >>> from meno_jupyter.core.profiler import Profiler
    >>> with Profiler() as prof:
    ...     pass
    >>> profile_figure(prof.result).layout.yaxis.title.text
    'RSS (MiB)'
    """
    import plotly.graph_objects as go

    return go.Figure(profile_figure_spec(result, height))


def ledger_figure(ledger: Ledger, height: int = 320) -> Figure:
    """Return RSS across the session: each cell's start, peak and end; the largest marked.

    Examples
    --------
    >>> from meno_jupyter.core.ledger import CellRecord, Ledger
    >>> ledger = Ledger()
    >>> ledger.add(CellRecord(1, "x = 1", 0.0, 0.5, 100, 120, 200, True, 0))
    >>> len(ledger_figure(ledger).data)
    2
    """
    import plotly.graph_objects as go

    records = list(ledger)
    origin = records[0].started_at if records else 0.0
    line_x: list[float | None] = []
    line_y: list[float | None] = []
    for record in records:
        start = record.started_at - origin
        line_x += [start, start + record.duration_s]
        line_y += [record.start_rss / MIB, record.end_rss / MIB]
    biggest = {id(r) for r in ledger.largest(3) if r.peak_increase > 0}
    fig = go.Figure()
    fig.add_trace(go.Scatter(
        x=line_x, y=line_y, mode="lines", name="RSS", line={"color": _LINE_COLOUR, "width": 1},
        hoverinfo="skip",
    ))
    fig.add_trace(go.Scatter(
        x=[r.started_at - origin + r.duration_s / 2 for r in records],
        y=[r.peak_rss / MIB for r in records],
        mode="markers", name="cell peak",
        marker={"size": [12 if id(r) in biggest else 7 for r in records],
                "color": [_PEAK_COLOUR if id(r) in biggest else _LINE_COLOUR for r in records]},
        text=[f"In [{r.execution_count}] {r.source_head}<br>peak "
              f"{format_bytes(r.peak_increase, signed=True)}, kept "
              f"{format_bytes(r.delta, signed=True)}" for r in records],
        hovertemplate="%{text}<extra></extra>",
    ))
    fig.update_layout(
        title={"text": f"memory across the session ({len(records)} cells)", "font": {"size": 14}},
        height=height, margin={"l": 60, "r": 20, "t": 40, "b": 40},
        xaxis_title="seconds since the first recorded cell", yaxis_title="RSS (MiB)",
        showlegend=False, template=_TEMPLATE,
    )
    return fig


def figure_bundle(figure: Figure | dict[str, Any], text: str) -> dict[str, Any]:
    """Return a display bundle: plotly's own mimetype, HTML for exports, text for terminals.

    JupyterLab, Notebook 7 and VS Code draw the plotly mimetype offline (plotly ships the
    renderer). Exported HTML loads plotly.js from its CDN; until it does (or offline, for
    good) a static SVG of the same lines stands in its place.
    """
    spec = figure if isinstance(figure, dict) else json.loads(figure.to_json())
    payload = json_for_script(spec)  # cell text in hover labels is data, not markup
    div_id = f"meno-{uuid.uuid4().hex}"
    html_text = (
        f'<div id="{div_id}" class="jp-Meno-figure">'
        f'<div class="jp-Meno-figure-static">{static_svg(spec)}'
        '<div style="font-size:11px;opacity:0.7">a static copy: the interactive figure '
        "needs plotly.js, loaded from its CDN</div></div></div>"
        f'<script src="{PLOTLY_CDN}"></script>'
        f"<script>(function(){{var s={payload};if(window.Plotly){{"
        f'var d=document.getElementById("{div_id}");d.innerHTML="";'
        "Plotly.newPlot(d,s.data,s.layout);}})();</script>"
    )
    return {PLOTLY_MIMETYPE: spec, "text/html": html_text, "text/plain": text}


def static_svg(spec: dict[str, Any], width: int = 640, height: int = 220) -> str:
    """Return the line traces of a plotly spec as a plain SVG (no script), for exports.

    Examples
    --------
    >>> svg = static_svg({"data": [{"x": [0, 1, 2], "y": [1, 3, 2], "name": "rss"}]})
    >>> svg.startswith("<svg") and "<polyline" in svg
    True
    """
    import html

    traces = []
    for trace in spec.get("data", []):
        ys = [v for v in trace.get("y") or [] if isinstance(v, (int, float))]
        if len(ys) != len(trace.get("y") or []) or not ys:
            continue
        xs = trace.get("x") or list(range(len(ys)))
        if len(xs) != len(ys) or not all(isinstance(v, (int, float)) for v in xs):
            xs = list(range(len(ys)))
        colour = (trace.get("line") or {}).get("color") or _LINE_COLOUR
        traces.append((xs, ys, str(colour), str(trace.get("name") or "")))
    title = (spec.get("layout") or {}).get("title")
    title_text = title.get("text", "") if isinstance(title, dict) else str(title or "")
    parts = [f'<svg class="jp-Meno-static-figure" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">',
             f'<rect width="{width}" height="{height}" fill="none" stroke="{_GRID}"/>']
    if traces:
        x_low = min(min(xs) for xs, _, _, _ in traces)
        x_span = (max(max(xs) for xs, _, _, _ in traces) - x_low) or 1.0
        y_top = max(max(ys) for _, ys, _, _ in traces) * 1.1 or 1.0
        for xs, ys, colour, name in traces:
            points = " ".join(
                f"{(x - x_low) / x_span * (width - 2) + 1:.1f},"
                f"{height - 1 - max(0.0, y) / y_top * (height - 24):.1f}"
                for x, y in zip(xs, ys, strict=True))
            parts.append(f'<polyline fill="none" stroke="{html.escape(colour)}" '
                         f'stroke-width="1.5" points="{points}">'
                         f"<title>{html.escape(name)}</title></polyline>")
    parts.append(f'<text x="4" y="14" font-size="11" fill="{_NEUTRAL_TEXT}">'
                 f"{html.escape(title_text)}</text></svg>")
    return "".join(parts)


_BAND_COLOURS = {"medium": "rgba(239,108,0,0.08)", "high": "rgba(198,40,40,0.10)"}


def _live_y_top(rss_mib: list[float], limit_mib: float) -> tuple[float, bool]:
    """Return the y axis top and whether the limit is in view (it is when it is near)."""
    top = max(rss_mib, default=1.0) * 1.25
    if limit_mib <= top * 2:
        return max(top, limit_mib * 1.05), True
    return top, False


def live_timeline_spec(
    times: list[float],
    rss_bytes: list[int],
    sample: LiveSample,
    records: list[CellRecord],
    *,
    thresholds: tuple[float, float],
    height: int = 280,
    width: int | None = None,
    cluster: ClusterHistory | None = None,
) -> dict[str, Any]:
    """Return the live RSS timeline as a plotly spec: x in seconds before ``sample``.

    The line takes the pressure colour; the limit line and the medium/high bands show
    when the limit is near enough to matter; each recorded cell gets a marker at its peak.
    With a Dask ``cluster`` history, the workers' total and each worker add a line (and
    the chart a legend).

    Examples
    --------
    >>> from meno_jupyter.core.live import LiveFeed
    >>> sample = LiveFeed().sample()
    >>> spec = live_timeline_spec([sample.timestamp], [sample.rss_bytes], sample, [],
    ...                           thresholds=(0.7, 0.9))
    >>> [trace["name"] for trace in spec["data"]]
    ['RSS', 'cells']
    """
    now = sample.timestamp
    x, y = decimate([t - now for t in times], [v / MIB for v in rss_bytes])
    cluster_lines = _cluster_lines(cluster, now) if cluster is not None else []
    limit_mib = sample.limit.limit_bytes / MIB
    top, limit_in_view = _live_y_top(
        y + [r.peak_rss / MIB for r in records]
        + [value for line in cluster_lines for value in line["y"]], limit_mib)
    left = min(x, default=-60.0)
    shapes: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    if limit_in_view:
        for level, share in zip(("medium", "high"), thresholds, strict=True):
            shapes.append({"type": "rect", "xref": "paper", "x0": 0, "x1": 1, "layer": "below",
                           "y0": share * limit_mib, "y1": limit_mib, "line": {"width": 0},
                           "fillcolor": _BAND_COLOURS[level]})
        shape, note = _hline(limit_mib, _PEAK_COLOUR, "dash",
                             f"limit {format_bytes(sample.limit.limit_bytes)} "
                             f"({sample.limit.source})", "left")
        shapes.append(shape)
        annotations.append(note)
    shown_records = [r for r in records if r.started_at - now >= left]
    colour = PRESSURE_COLOURS[sample.pressure]
    data = [
        {"type": "scatter", "x": x, "y": y, "mode": "lines", "name": "RSS",
         "line": {"color": colour, "width": 2}, "fill": "tozeroy",
         "hovertemplate": "%{x:.1f} s<br>%{y:.1f} MiB<extra></extra>"},
        {"type": "scatter", "name": "cells", "mode": "markers",
         "x": [r.started_at - now for r in shown_records],
         "y": [r.peak_rss / MIB for r in shown_records],
         "marker": {"color": "#6a1b9a", "size": 8, "symbol": "diamond"},
         "text": [f"In [{r.execution_count}] {r.source_head}<br>peak "
                  f"{format_bytes(r.peak_increase, signed=True)}, kept "
                  f"{format_bytes(r.delta, signed=True)}" for r in shown_records],
         "hovertemplate": "%{text}<extra></extra>"},
        *cluster_lines,
    ]
    layout = {
        "height": height, "margin": {"l": 60, "r": 20, "t": 10, "b": 40},
        "xaxis": {"title": {"text": "seconds (0 = now)"}, "range": [left, 0]},
        "yaxis": {"title": {"text": "RSS (MiB)"}, "range": [0, top]},
        "showlegend": bool(cluster_lines), "legend": {"orientation": "h", "y": -0.25},
        "template": _TEMPLATE, "shapes": shapes,
        "annotations": annotations, "uirevision": "meno-live",
    }
    if width is not None:
        layout["width"] = width
    return {"data": data, "layout": layout}


def _cluster_lines(cluster: ClusterHistory, now: float) -> list[dict[str, Any]]:
    """Return the workers' total (dotted) and a line per worker; x in seconds before now."""
    times, totals = cluster.totals()
    if not times:
        return []
    x, y = decimate([t - now for t in times], [v / MIB for v in totals])
    lines = [{"type": "scatter", "x": x, "y": y, "mode": "lines", "name": "Dask workers, total",
              "line": {"color": _CLUSTER_COLOUR, "width": 2, "dash": "dot"},
              "hovertemplate": "workers' total %{y:.1f} MiB<extra></extra>"}]
    for number, (address, (worker_times, values)) in enumerate(cluster.per_worker().items()):
        wx, wy = decimate([t - now for t in worker_times], [v / MIB for v in values])
        name = address.split("://")[-1]
        lines.append({"type": "scatter", "x": wx, "y": wy, "mode": "lines", "name": name,
                      "line": {"color": _WORKER_COLOURS[number % len(_WORKER_COLOURS)],
                               "width": 1},
                      "hovertemplate": f"{name} %{{y:.1f}} MiB<extra></extra>"})
    return lines


def svg_timeline(times: list[float], rss_bytes: list[int], colour: str,
                 width: int = 640, height: int = 160) -> str:
    """Return a small inline SVG line of RSS over time, for front ends without plotly widgets.

    Examples
    --------
    >>> svg_timeline([0.0, 1.0], [10, 20], "#2e7d32").startswith("<svg")
    True
    >>> "polyline" in svg_timeline([1.8e9], [10], "#2e7d32")  # one sample
    True
    """
    x, y = decimate(times, [float(v) for v in rss_bytes], max_points=width)
    if not x:
        return f'<svg width="{width}" height="{height}"></svg>'
    x0 = x[0]
    span = (x[-1] - x0) or 1.0  # one point (Unix times: adding 1e-9 would not move it)
    top = max(y) * 1.25 or 1.0
    points = " ".join(f"{(t - x0) / span * (width - 2) + 1:.1f},"
                      f"{height - 1 - v / top * (height - 2):.1f}"
                      for t, v in zip(x, y, strict=True))
    return (f'<svg class="jp-Meno-sparkline" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">'
            f'<rect width="{width}" height="{height}" fill="none" stroke="{_GRID}"/>'
            f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{points}"/>'
            f'<text x="4" y="14" font-size="11" fill="{_NEUTRAL_TEXT}">max '
            f'{format_bytes(int(max(y)))}</text></svg>')


def stage_timeline_spec(timeline: Any, height: int = 320) -> dict[str, Any]:
    """Return a topic run's timeline as a plotly spec: tree and kernel RSS, a band per stage.

    ``timeline`` is a ``meno_jupyter.topics.explorer.StageTimeline`` (``times``,
    ``kernel_rss``, ``tree_rss``, ``stages``); not imported here, the topics sit above.
    """
    stages = timeline.stages
    origin = stages[0].start if stages else (timeline.times[0] if timeline.times else 0)
    x = [t - origin for t in timeline.times]
    colours = ["rgba(21,101,192,0.08)", "rgba(239,108,0,0.08)"]
    shapes, annotations = [], []
    for i, stage in enumerate(stages):
        shapes.append({"type": "rect", "xref": "x", "yref": "paper", "y0": 0, "y1": 1,
                       "x0": stage.start - origin, "x1": stage.end - origin,
                       "fillcolor": colours[i % 2], "line": {"width": 0}, "layer": "below"})
        annotations.append({"x": (stage.start + stage.end) / 2 - origin, "y": 1.0,
                            "yref": "paper", "showarrow": False, "yanchor": "bottom",
                            "text": stage.name, "font": {"size": 11}})
    data = [
        {"type": "scatter", "x": x, "y": [v / MIB for v in timeline.tree_rss], "mode": "lines",
         "name": "kernel + workers", "line": {"color": _PEAK_COLOUR, "width": 2}},
        {"type": "scatter", "x": x, "y": [v / MIB for v in timeline.kernel_rss],
         "mode": "lines", "name": "kernel", "line": {"color": _LINE_COLOUR, "width": 2}},
    ]
    layout = {"height": height, "margin": {"l": 60, "r": 20, "t": 40, "b": 40},
              "title": {"text": "memory by stage", "font": {"size": 14}},
              "xaxis": {"title": {"text": "seconds"}},
              "yaxis": {"title": {"text": "RSS (MiB)"}, "rangemode": "tozero"},
              "shapes": shapes, "annotations": annotations, "template": _TEMPLATE,
              "legend": {"orientation": "h", "y": -0.25}}
    return {"data": data, "layout": layout}
