"""Durations said the way the topic tools' messages say them."""

from __future__ import annotations


def format_duration(seconds: float) -> str:
    """Say ``seconds`` as "2 h 5 min", "7 min" or "40 s".

    Examples
    --------
    >>> format_duration(30), format_duration(600), format_duration(7_500)
    ('30 s', '10 min', '2 h 5 min')
    """
    if seconds >= 3_600:
        hours, rest = divmod(int(seconds), 3_600)
        return f"{hours} h {rest // 60} min"
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"
