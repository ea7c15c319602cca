"""Per-cell memory figures saved in a notebook: the ``meno`` key of each code cell's metadata.

The JupyterLab extension writes them under each executed cell (from the kernel's ledger); a
saved notebook carries them. This module is their one definition on the Python side: the
source fingerprint that tells stale figures, the one-line text, and
:func:`notebook_memory`, which reads them back from an ``.ipynb`` file. The TypeScript side
(``labextension/src/badges.ts``) follows the same shape and fingerprint; its tests and
these pin both.
"""

from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from meno_jupyter.core.memory import format_bytes

if TYPE_CHECKING:
    import pandas as pd

METADATA_KEY = "meno"
BADGE_SCHEMA_VERSION = 1
NOTEBOOK_MAX_BYTES = 256 * 2**20
_FNV_OFFSET = 0x811C9DC5
_FNV_PRIME = 0x01000193


def source_fingerprint(source: str) -> str:
    """Return the FNV-1a hash of ``source``'s UTF-16 code units, as 8 hex digits.

    UTF-16 code units because that is what JavaScript strings are made of: the extension
    computes the same value with ``charCodeAt``.

    Examples
    --------
    >>> source_fingerprint("")
    '811c9dc5'
    >>> source_fingerprint("x = 1")
    '41f65c6b'
    """
    value = _FNV_OFFSET
    encoded = source.encode("utf-16-le", "surrogatepass")
    for (unit,) in struct.iter_unpack("<H", encoded):
        value ^= unit
        value = (value * _FNV_PRIME) & 0xFFFFFFFF
    return f"{value:08x}"


@dataclass(frozen=True)
class CellMemory:
    """The memory figures saved with one notebook cell.

    Attributes
    ----------
    index : int
        The cell's position in the notebook (0 = first cell, markdown included).
    cell_id : str or None
        The cell's id (nbformat 4.5+).
    execution_count : int or None
        Its ``In [N]`` when it was measured.
    peak_increase, delta, peak_rss : int
        Bytes: what the cell needed on top of what was there, what it kept, and the
        process's peak.
    limit_bytes : int or None
        The memory limit the peak is compared with.
    stale : bool
        The cell's source changed since it was measured.
    """

    index: int
    cell_id: str | None
    execution_count: int | None
    source_head: str
    peak_increase: int
    delta: int
    peak_rss: int
    duration_s: float
    limit_bytes: int | None
    measured_at: float
    stale: bool

    @property
    def limit_share(self) -> float | None:
        """``peak_rss / limit_bytes``, or None without a limit."""
        return self.peak_rss / self.limit_bytes if self.limit_bytes else None

    def badge_text(self) -> str:
        """Return the one line shown under the cell.

        Examples
        --------
        >>> CellMemory(0, None, 1, "x", 2**30, 2**20, 2**31, 3.4, 2**32, 0.0, False
        ...            ).badge_text()
        'peak +1.0 GiB · kept +1.0 MiB · 3.4 s · 50 % of limit'
        """
        return cell_line(self.peak_increase, self.delta, self.duration_s, self.limit_share)


def cell_line(peak_increase: int, delta: int, duration_s: float,
              limit_share: float | None) -> str:
    """Return the one line a cell's memory gets (badges, ``%memwatch --inline``, exports).

    Examples
    --------
    >>> cell_line(2**20, 0, 0.183, 0.12)
    'peak +1.0 MiB · kept 0 B · 183 ms · 12 % of limit'
    """
    parts = [f"peak {format_bytes(peak_increase, signed=True)}",
             f"kept {format_bytes(delta, signed=True)}", _format_duration(duration_s)]
    if limit_share is not None:
        parts.append(f"{round(100 * limit_share)} % of limit")
    return " · ".join(parts)


def cell_line_html(text: str) -> str:
    """Return the line as self-contained HTML: no script, no stylesheet, any theme."""
    import html

    return (f'<div class="jp-Meno-inline" style="font-family:monospace;font-size:11px;'
            f'opacity:0.7;margin:2px 0">{html.escape(text)}</div>')


def _format_duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s"


def _source_text(source: object) -> str:
    if isinstance(source, list):
        return "".join(str(part) for part in source)
    return source if isinstance(source, str) else ""


# What a saved figure may claim (a notebook is a file anyone can edit): outside these it is
# unreadable. The same bounds as FIGURE_BOUNDS in labextension/src/badges.ts.
FIGURE_BOUNDS: dict[str, tuple[float, float]] = {
    "peak_increase": (-(2**50), 2**50), "delta": (-(2**50), 2**50), "peak_rss": (0, 2**50),
    "duration_s": (0, 1e7), "measured_at": (0, 2**33), "limit_bytes": (1, 2**50),
    "execution_count": (0, 2**31),
}


def _number(data: dict[str, Any], name: str, *, optional: bool = False) -> Any:
    value = data.get(name)
    if value is None and optional:
        return None
    low, high = FIGURE_BOUNDS[name]
    # Compared before any conversion: a 400-digit integer must not reach float().
    if (isinstance(value, bool) or not isinstance(value, (int, float))
            or (isinstance(value, float) and not math.isfinite(value))
            or not low <= value <= high):
        raise ValueError(f"{name} must be a number from {low:g} to {high:g}")
    return value


def cell_memory(index: int, cell: dict[str, Any]) -> CellMemory | None:
    """Return the figures saved in one nbformat cell, or None when it has none (or bad ones)."""
    metadata = cell.get("metadata")
    data = metadata.get(METADATA_KEY) if isinstance(metadata, dict) else None
    if not isinstance(data, dict):
        return None
    try:
        source = _source_text(cell.get("source", ""))
        count = _number(data, "execution_count", optional=True)
        limit = _number(data, "limit_bytes", optional=True)
        fingerprint = data.get("source_fingerprint")
        cell_id = cell.get("id")
        return CellMemory(
            index=index,
            cell_id=cell_id if isinstance(cell_id, str) else None,
            execution_count=None if count is None else int(count),
            source_head=next((line.strip() for line in source.splitlines() if line.strip()),
                             ""),
            peak_increase=int(_number(data, "peak_increase")),
            delta=int(_number(data, "delta")),
            peak_rss=int(_number(data, "peak_rss")),
            duration_s=float(_number(data, "duration_s")),
            limit_bytes=None if limit is None else int(limit),
            measured_at=float(_number(data, "measured_at")),
            stale=fingerprint != source_fingerprint(source),
        )
    except ValueError:
        return None


def read_cell_memory(path: str | os.PathLike[str]) -> list[CellMemory]:
    """Return the figures saved in a notebook file, cell by cell (cells without them left out).

    Raises
    ------
    ValueError
        When the file is not a notebook (not JSON, no cell list) or is larger than 256 MiB.
    """
    notebook_path = Path(path)
    size = notebook_path.stat().st_size
    if size > NOTEBOOK_MAX_BYTES:
        raise ValueError(f"{notebook_path} is {format_bytes(size)}: more than a notebook")
    try:
        notebook = json.loads(notebook_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{notebook_path} is not a notebook: {error}") from None
    cells = notebook.get("cells") if isinstance(notebook, dict) else None
    if not isinstance(cells, list):
        raise ValueError(f"{notebook_path} is not a notebook: it has no list of cells")
    found = (cell_memory(index, cell) for index, cell in enumerate(cells)
             if isinstance(cell, dict) and cell.get("cell_type") == "code")
    return [memory for memory in found if memory is not None]


def notebook_memory(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Return the memory record saved in a notebook: one row per measured code cell.

    Columns: ``index``, ``cell_id``, ``execution_count``, ``source_head``,
    ``peak_increase``, ``delta``, ``peak_rss``, ``duration_s``, ``limit_bytes``,
    ``limit_share``, ``measured_at``, ``stale`` (the source changed since).

    For instance, the three heaviest cells of a saved notebook::

        frame = notebook_memory("analysis.ipynb")
        frame.nlargest(3, "peak_increase")[["execution_count", "source_head"]]
    """
    import pandas as pd

    rows = [dict(vars(memory), limit_share=memory.limit_share)
            for memory in read_cell_memory(path)]
    columns = ["index", "cell_id", "execution_count", "source_head", "peak_increase", "delta",
               "peak_rss", "duration_s", "limit_bytes", "limit_share", "measured_at", "stale"]
    frame: pd.DataFrame = pd.DataFrame(rows, columns=columns)
    return frame
