"""One way for every result to render, and the helpers they share.

Each result class (``ProfileResult``, ``MemoryStatus``, ``Ledger``, ``ReleaseReport``,
``LeakReport``, ``OptimizeResult``) writes its own text and HTML beside its data
(``to_text`` / ``to_html``); :class:`RendersAsTable` turns those into ``str()`` and
``_repr_mimebundle_``. The tables, the sparkline and the pressure colours live here, once.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable, Collection, Sequence
from typing import Any

_SPARK = "▁▂▃▄▅▆▇█"
_TABLE_STYLE = (
    "border-collapse:collapse;font-family:var(--jp-code-font-family,monospace);"
    "font-size:12px;margin:4px 0"
)
# JupyterLab's theme variables, with light fallbacks for HTML outside JupyterLab.
_CELL_STYLE = ("padding:2px 8px;border-bottom:1px solid var(--jp-border-color2,#ddd);"
               "text-align:left")
PRESSURE_COLOURS = {"low": "#2e7d32", "medium": "#ef6c00", "high": "#c62828"}
# Inside <script>, "</script" in any case ends the block and "<!--" changes how it is
# parsed; U+2028/9 end a line in older JavaScript. JSON leaves them as they are; escaped as
# \uXXXX they mean the same to JavaScript and nothing to the HTML parser.
_SCRIPT_ESCAPES = {ord("<"): "\\u003c", ord(">"): "\\u003e", ord("&"): "\\u0026",
                   0x2028: "\\u2028", 0x2029: "\\u2029"}


def json_for_script(value: Any) -> str:
    r"""Return ``value`` as JSON that is safe to place inside an HTML ``<script>`` element.

    Examples
    --------
    >>> json_for_script({"line": "</script><b>"})
    '{"line": "\\u003c/script\\u003e\\u003cb\\u003e"}'
    """
    return json.dumps(value).translate(_SCRIPT_ESCAPES)


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


class RendersAsTable:
    """Mixin: ``str()`` and ``_repr_mimebundle_`` from the class's ``to_text``/``to_html``."""

    def to_text(self) -> str:
        """Return the result as plain text (terminals, logs)."""
        raise NotImplementedError

    def to_html(self) -> str:
        """Return the result as HTML (notebooks)."""
        raise NotImplementedError

    def __str__(self) -> str:
        return self.to_text()

    def _repr_mimebundle_(
        self, include: Any = None, exclude: Any = None, **kwargs: Any
    ) -> dict[str, str]:
        return mimebundle(self.to_text, self.to_html, include, exclude)

