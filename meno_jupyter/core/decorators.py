"""``profile_block``, ``@profile_memory``, ``@release_memory``: profiling code, not cells."""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar, cast

from meno_jupyter.core.cleanup import collect_garbage, trim_allocator
from meno_jupyter.core.errors import check_count
from meno_jupyter.core.memory import MIB, format_bytes, read_rss
from meno_jupyter.core.profiler import Profiler, ProfileResult

logger = logging.getLogger("meno_jupyter")
F = TypeVar("F", bound=Callable[..., Any])


def _log(result: ProfileResult, level: int) -> None:
    logger.log(level, "%s: peak %s, kept %s, %.3f s%s", result.label or "block",
               format_bytes(result.peak_increase, signed=True),
               format_bytes(result.delta, signed=True), result.duration_s,
               "" if result.exact_peak else " (peak sampled)")


@contextmanager
def profile_block(
    label: str | None = None, *, log_level: int | None = logging.INFO, timeline: bool = False,
    **options: Any,
) -> Iterator[Profiler]:
    """Profile a block of code; the result is on the yielded profiler once it ends.

    Parameters
    ----------
    label : str, optional
        The name logged and kept in the result.
    log_level : int or None
        Log the result on the ``meno_jupyter`` logger at this level (None: do not log).
    timeline : bool
        Also sample a timeline on a thread (off by default: the exact peak needs none).
    **options
        Passed to :class:`Profiler`.

    Examples
    --------
    >>> with profile_block("load", log_level=None) as block:
    ...     data = [0] * 1_000_000
    >>> block.result.delta >= 0 or True
    True
    """
    profiler = Profiler(label, timeline=timeline, **options)
    with profiler:
        yield profiler
    if log_level is not None:
        _log(profiler.result, log_level)


def profile_memory(
    func: F | None = None, *, label: str | None = None, log_level: int | None = logging.INFO,
    timeline: bool = False,
) -> Any:
    """Decorate a function or generator to profile every call.

    The function's return value is unchanged; the latest result is kept on the wrapper as
    ``last_profile`` (for a generator: over its whole iteration) and logged.

    Examples
    --------
    >>> @profile_memory(log_level=None)
    ... def build(n):
    ...     return list(range(n))
    >>> len(build(1000)), build.last_profile.label
    (1000, 'build')
    """

    def decorate(function: F) -> F:
        name = label or function.__qualname__

        if inspect.isgeneratorfunction(function):
            @functools.wraps(function)
            def generator_wrapper(*args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
                with profile_block(name, log_level=log_level, timeline=timeline) as block:
                    value = yield from function(*args, **kwargs)
                generator_wrapper.last_profile = block.result  # type: ignore[attr-defined]
                return value

            generator_wrapper.last_profile = None  # type: ignore[attr-defined]
            return cast(F, generator_wrapper)

        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with profile_block(name, log_level=log_level, timeline=timeline) as block:
                value = function(*args, **kwargs)
            wrapper.last_profile = block.result  # type: ignore[attr-defined]
            return value

        wrapper.last_profile = None  # type: ignore[attr-defined]
        return cast(F, wrapper)

    return decorate(func) if func is not None else decorate


def release_memory(
    func: F | None = None, *, threshold_mb: float = 100.0
) -> Any:
    """Decorate a function to collect garbage and trim the heap after a call that grew RSS.

    Only when RSS grew by more than ``threshold_mb`` during the call: cheap calls stay cheap.

    Examples
    --------
    >>> @release_memory(threshold_mb=50)
    ... def step():
    ...     return sum(range(10))
    >>> step()
    45
    """
    check_count(threshold_mb, minimum=0, name="threshold_mb")
    threshold = threshold_mb * MIB

    def decorate(function: F) -> F:
        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            before = read_rss()
            try:
                return function(*args, **kwargs)
            finally:
                if read_rss() - before > threshold:
                    collect_garbage()
                    trim_allocator()

        return cast(F, wrapper)

    return decorate(func) if func is not None else decorate
