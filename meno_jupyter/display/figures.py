"""Plotly figures of memory over time. plotly is imported only when a figure is built."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from meno_jupyter.core.memory import MIB, format_bytes

if TYPE_CHECKING:
    from plotly.graph_objects import Figure

    from meno_jupyter.core.profiler import ProfileResult

PLOTLY_MIMETYPE = "application/vnd.plotly.v1+json"
_LINE_COLOUR = "#1565c0"
_PEAK_COLOUR = "#c62828"


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

    times = list(result.timeline_t_s)
    rss_mib = [v / MIB for v in result.timeline_rss_bytes]
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=times, y=rss_mib, mode="lines", name="RSS",
            line={"color": _LINE_COLOUR, "width": 2}, fill="tozeroy",
            fillcolor="rgba(21,101,192,0.08)",
            hovertemplate="%{x:.3f} s<br>%{y:.1f} MiB<extra></extra>",
        )
    )
    fig.add_hline(
        y=result.start_rss / MIB, line={"dash": "dot", "color": "#757575", "width": 1},
        annotation_text=f"start {format_bytes(result.start_rss)}",
        annotation_position="bottom right",
    )
    peak_label = "exact peak" if result.exact_peak else "sampled peak"
    fig.add_hline(
        y=result.peak_rss / MIB, line={"dash": "dash", "color": _PEAK_COLOUR, "width": 1},
        annotation_text=(f"{peak_label} {format_bytes(result.peak_rss)} "
                         f"({format_bytes(result.peak_increase, signed=True)})"),
        annotation_position="top left",
    )
    fig.add_trace(
        go.Scatter(
            x=[result.peak_t_s], y=[max(rss_mib, default=0.0)], mode="markers",
            name="highest sample", marker={"color": _PEAK_COLOUR, "size": 8},
            hovertemplate="highest sample %{y:.1f} MiB at %{x:.3f} s<extra></extra>",
        )
    )
    for growth in result.growth_lines[:5]:
        fig.add_vline(x=growth.first_t_s, line={"color": "#ef6c00", "width": 1, "dash": "dot"})
        fig.add_annotation(
            x=growth.first_t_s, y=1.0, yref="paper", showarrow=False, textangle=-90,
            xanchor="right", yanchor="top", font={"size": 10, "color": "#ef6c00"},
            text=f"{format_bytes(growth.growth_bytes, signed=True)} {growth.line.label[:50]}",
        )
    title = "memory profile" + (f" — {result.label}" if result.label else "")
    fig.update_layout(
        title={"text": title, "font": {"size": 14}},
        height=height, margin={"l": 60, "r": 20, "t": 40, "b": 40},
        xaxis_title="seconds", yaxis_title="RSS (MiB)", showlegend=False,
        template="plotly_white",
    )
    return fig


def figure_bundle(fig: Figure, text: str) -> dict[str, Any]:
    """Return a display bundle: plotly's own mimetype, HTML for exports, text for terminals.

    JupyterLab, Notebook 7 and VS Code draw the plotly mimetype offline (plotly ships the
    renderer); exported HTML loads plotly.js from its CDN.
    """
    return {
        PLOTLY_MIMETYPE: json.loads(fig.to_json()),
        "text/html": fig.to_html(full_html=False, include_plotlyjs="cdn"),
        "text/plain": text,
    }
