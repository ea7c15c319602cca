"""Giving memory back: collect garbage, trim the allocator, and report what was released."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc
import html
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from meno_jupyter.core.memory import format_bytes, read_rss
from meno_jupyter.core.rendering import (
    RendersAsTable,
    html_table,
    text_table,
)


@lru_cache(maxsize=1)
def _malloc_trim() -> Any | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):  # musl and other libcs have no malloc_trim
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


def trim_allocator() -> tuple[bool, str]:
    """Return freed heap pages to the OS with glibc's ``malloc_trim(0)``.

    Returns (done, note); where there is no glibc this is a no-op that says so.

    Examples
    --------
    >>> done, note = trim_allocator()
    >>> isinstance(done, bool)
    True
    """
    trim = _malloc_trim()
    if trim is None:
        return False, "malloc_trim skipped: not glibc on Linux"
    trim(0)
    return True, "malloc_trim(0) returned free heap pages to the OS"


def give_back_freed_memory() -> None:
    """Return what Arrow's default pool (if pyarrow is loaded) and malloc keep of freed memory.

    Both keep freed blocks for reuse; asked, they give them back to the OS (a few ms).
    pyarrow is never imported here.
    """
    arrow = sys.modules.get("pyarrow")
    if arrow is not None:
        with contextlib.suppress(Exception):  # a pool that cannot release keeps its blocks
            arrow.default_memory_pool().release_unused()
    trim_allocator()


def collect_garbage() -> int:
    """Run a full collection over all generations; return the unreachable objects found."""
    return gc.collect()


@dataclass(frozen=True)
class Released:
    """One kind of thing released (or, in a dry run, that would be)."""

    kind: str
    detail: str
    size_bytes: int


@dataclass(frozen=True)
class ReleaseReport(RendersAsTable):
    """What a clean-up dropped and how RSS moved.

    Attributes
    ----------
    released : tuple of Released
        What was dropped, with deep sizes measured before dropping.
    freed_bytes : int
        ``rss_before - rss_after`` (0 in a dry run).
    """

    rss_before: int
    rss_after: int
    released: tuple[Released, ...]
    dry_run: bool
    notes: tuple[str, ...] = field(default=())
    unreachable_collected: int = 0

    @property
    def freed_bytes(self) -> int:
        """How much RSS went down."""
        return self.rss_before - self.rss_after

    def summary_rows(self) -> list[tuple[str, str]]:
        """Return (name, value) rows for a summary table."""
        if self.dry_run:
            held = sum(r.size_bytes for r in self.released)
            return [("dry run", f"{len(self.released)} items would be dropped, "
                                f"holding {format_bytes(held)}"),
                    ("RSS now", format_bytes(self.rss_before))]
        return [
            ("RSS before", format_bytes(self.rss_before)),
            ("RSS after", format_bytes(self.rss_after)),
            ("released", format_bytes(self.freed_bytes, signed=False)),
            ("garbage collected", f"{self.unreachable_collected} unreachable objects"),
        ]

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict."""
        return {
            "rss_before": self.rss_before, "rss_after": self.rss_after,
            "freed_bytes": self.freed_bytes, "dry_run": self.dry_run,
            "released": [vars(r) for r in self.released], "notes": list(self.notes),
            "unreachable_collected": self.unreachable_collected,
        }

    def to_text(self) -> str:
        """Render a clean-up report for terminals."""
        title = "memclean (dry run)" if self.dry_run else "memclean"
        lines = [title, text_table(("figure", "value"), self.summary_rows())]
        if self.released:
            verb = "would drop" if self.dry_run else "dropped"
            lines.append(f"{verb}:")
            lines.append(text_table(("kind", "what", "held"), _release_rows(self)))
        else:
            lines.append("nothing to drop")
        lines.extend(self.notes)
        return "\n".join(lines)

    def to_html(self) -> str:
        """Render a clean-up report as HTML."""
        title = "memclean (dry run)" if self.dry_run else "memclean"
        parts = ['<div class="jp-Meno-clean">', html_table((), self.summary_rows(), title)]
        if self.released:
            verb = "would drop" if self.dry_run else "dropped"
            parts.append(html_table(("kind", "what", "held"), _release_rows(self), verb))
        parts.extend(f"<p>{html.escape(note)}</p>" for note in self.notes)
        parts.append("</div>")
        return "".join(parts)


def _release_rows(report: ReleaseReport) -> list[tuple[str, str, str]]:
    return [(r.kind, r.detail, format_bytes(r.size_bytes)) for r in report.released]


def finish_release(
    rss_before: int, released: list[Released], dry_run: bool, notes: list[str] | None = None
) -> ReleaseReport:
    """Collect garbage and trim (unless a dry run), then measure and build the report."""
    notes = list(notes or [])
    unreachable = 0
    if not dry_run:
        unreachable = collect_garbage()
        _, note = trim_allocator()
        notes.append(note)
    return ReleaseReport(
        rss_before=rss_before,
        rss_after=rss_before if dry_run else read_rss(),
        released=tuple(released),
        dry_run=dry_run,
        notes=tuple(notes),
        unreachable_collected=unreachable,
    )
