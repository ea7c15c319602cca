"""``adaptive_batch_size``: how much work fits in the memory that is left."""

from __future__ import annotations

from collections.abc import Callable

from meno_jupyter.core.memory import MemoryLimit, effective_limit, pressure_level, read_rss

_PRESSURE_SCALE = {"low": 1.0, "medium": 0.5, "high": 0.25}


def adaptive_batch_size(
    base: int,
    *,
    per_item_bytes: int | None = None,
    headroom_share: float = 0.5,
    minimum: int = 1,
    limit_reader: Callable[[], MemoryLimit] = effective_limit,
    rss_reader: Callable[[], int] = read_rss,
) -> int:
    """Suggest a batch size from the headroom left to the effective memory limit.

    With ``per_item_bytes``, the batch is the most items whose memory fits in
    ``headroom_share`` of what is available, capped at ``base``. Without it, ``base`` is
    scaled by the pressure level: whole at low, half at medium, a quarter at high.

    Examples
    --------
    >>> limit = MemoryLimit(1000, "system", 400, 1000)
    >>> adaptive_batch_size(64, per_item_bytes=10, limit_reader=lambda: limit)
    20
    """
    if base < 1 or minimum < 1:
        raise ValueError("base and minimum must be at least 1")
    if not 0 < headroom_share <= 1:
        raise ValueError(f"headroom_share must be in (0, 1], got {headroom_share}")
    limit = limit_reader()
    if per_item_bytes is not None:
        if per_item_bytes <= 0:
            raise ValueError(f"per_item_bytes must be positive, got {per_item_bytes}")
        fitting = int(limit.available_bytes * headroom_share // per_item_bytes)
        return max(minimum, min(base, fitting))
    level = pressure_level(rss_reader(), limit.limit_bytes)
    return max(minimum, int(base * _PRESSURE_SCALE[level]))
