"""Deep sizes of the objects in a namespace: which variables hold the memory.

Sizes come from what the objects themselves know where they know it (numpy ``nbytes``,
pandas ``memory_usage(deep=True)``, torch element counts) and from a bounded recursive walk
elsewhere. The walk stops at a depth, samples large containers and keeps to a time budget,
so an odd object (a proxy that raises, a huge graph, a cycle) yields an estimate, never a
crash or a hang. Nothing here imports numpy, pandas or torch: types are recognised by name.
"""

from __future__ import annotations

import re
import sys
import time
import types
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

_CONTAINERS = (list, tuple, set, frozenset)
_ATOMIC = (str, bytes, bytearray, int, float, complex, bool, type(None), range)
_SKIP_TYPES = (types.ModuleType, types.FunctionType, types.BuiltinFunctionType, type,
               types.MethodType)


@dataclass(frozen=True)
class VariableSize:
    """One variable's deep size.

    Attributes
    ----------
    note : str
        How the size was found where that matters: ``"view"``, ``"estimate"``, a device.
    """

    name: str
    type_name: str
    size_bytes: int
    note: str = ""

    def to_dict(self) -> dict[str, object]:
        """Return the fields as a plain dict."""
        return asdict(self)


class _Walk:
    def __init__(self, max_depth: int, max_items: int, deadline: float) -> None:
        self.max_depth = max_depth
        self.max_items = max_items
        self.deadline = deadline
        self.seen: set[int] = set()
        self.estimated = False
        self.notes: list[str] = []

    def size(self, obj: object, depth: int = 0) -> int:
        key = id(obj)
        if key in self.seen:
            return 0
        self.seen.add(key)
        known = _known_size(obj, self)
        if known is not None:
            return known
        own = _getsizeof(obj)
        if isinstance(obj, _ATOMIC):
            return own
        if depth >= self.max_depth or time.perf_counter() > self.deadline:
            self.estimated = True
            return own
        children = _children(obj)
        if children is None:
            return own
        items, total_count = children
        walked = 0
        child_bytes = 0
        for child in items:
            if walked >= self.max_items or time.perf_counter() > self.deadline:
                break
            child_bytes += self.size(child, depth + 1)
            walked += 1
        if walked and walked < total_count:
            self.estimated = True
            child_bytes = int(child_bytes * total_count / walked)
        return own + child_bytes


def _getsizeof(obj: object) -> int:
    try:
        return int(sys.getsizeof(obj))
    except Exception:  # objects may raise anything from __sizeof__
        return 0


def _children(obj: object) -> tuple[Iterable[object], int] | None:
    try:
        if isinstance(obj, dict):
            return _dict_items(obj), 2 * len(obj)
        if isinstance(obj, _CONTAINERS):
            return iter(obj), len(obj)
        attributes = getattr(obj, "__dict__", None)
        if isinstance(attributes, dict):
            return _dict_items(attributes), 2 * len(attributes)
        slots = getattr(type(obj), "__slots__", None)
        if slots:
            names = [slots] if isinstance(slots, str) else list(slots)
            values = [getattr(obj, n) for n in names if hasattr(obj, n)]
            return iter(values), len(values)
    except Exception:
        return None
    return None


def _dict_items(mapping: Mapping[object, object]) -> Iterable[object]:
    for key, value in mapping.items():
        yield key
        yield value


def _type_path(obj: object) -> str:
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def _known_size(obj: Any, walk: _Walk) -> int | None:  # noqa: PLR0911 - one case per library
    """Return the size an object reports itself (arrays, frames, tensors), else None."""
    path = _type_path(obj)
    try:
        if path == "numpy.ndarray":
            return _numpy_size(obj, walk)
        if path.startswith("pandas.") and path.endswith("Index"):
            return int(obj.memory_usage(deep=True))
        if path.startswith("pandas.") and hasattr(obj, "memory_usage"):
            usage = obj.memory_usage(deep=True, index=True)
            return int(usage.sum()) if hasattr(usage, "sum") else int(usage)
        if path == "torch.Tensor" or path.startswith("torch.nn.parameter"):
            device = str(obj.device)
            if device != "cpu":
                walk.notes.append(f"on {device}")
                return 0
            return int(obj.element_size() * obj.nelement())
        if path.startswith("scipy.sparse") and hasattr(obj, "data"):
            names = ("data", "indices", "indptr", "row", "col")
            parts: list[Any] = [getattr(obj, name) for name in names if hasattr(obj, name)]
            return sum(int(part.nbytes) for part in parts if hasattr(part, "nbytes"))
        if path.startswith("pyarrow.") and hasattr(obj, "nbytes"):
            return int(obj.nbytes)
    except Exception:
        walk.estimated = True
        return _getsizeof(obj)
    return None


def _numpy_size(array: Any, walk: _Walk) -> int:
    base = getattr(array, "base", None)
    nbytes = int(array.nbytes)
    if base is not None:
        if id(base) in walk.seen:
            return 0
        walk.notes.append("view")
        if _type_path(base) == "mmap.mmap" or "memmap" in _type_path(array):
            walk.notes.append("memory-mapped")
    if str(getattr(array, "dtype", "")) == "object":
        walk.estimated = True
        sample = array.ravel()[: walk.max_items]
        if len(sample):
            per_item = sum(walk.size(item, 1) for item in sample) / len(sample)
            nbytes += int(per_item * array.size)
    return nbytes


def deep_sizeof(
    obj: object, *, max_depth: int = 8, max_items: int = 2_000, time_budget_s: float = 0.2
) -> tuple[int, str]:
    """Return (bytes, note) for an object and what it holds; never raises.

    Parameters
    ----------
    obj : object
        What to size.
    max_depth : int
        Containers nested deeper than this are counted by their own size only.
    max_items : int
        Larger containers are sampled and the total extrapolated.
    time_budget_s : float
        Stop walking after this long and report an estimate.

    Examples
    --------
    >>> size, note = deep_sizeof([b"x" * 1000] * 3)
    >>> size > 1000, note
    (True, '')
    """
    walk = _Walk(max_depth, max_items, time.perf_counter() + time_budget_s)
    try:
        size = walk.size(obj)
    except RecursionError:
        walk.estimated = True
        size = _getsizeof(obj)
    except Exception:
        walk.estimated = True
        size = _getsizeof(obj)
    notes = list(dict.fromkeys(walk.notes))
    if walk.estimated:
        notes.append("estimate")
    return size, ", ".join(notes)


def _is_interesting(name: str, value: object) -> bool:
    if name.startswith("_"):
        return False
    return not isinstance(value, _SKIP_TYPES)


def largest_variables(
    namespace: Mapping[str, object],
    *,
    top: int = 10,
    hidden: Iterable[str] = (),
    time_budget_s: float = 2.0,
) -> list[VariableSize]:
    """Return the ``top`` largest variables of a namespace by deep size.

    Private names (``_x``), modules, functions, classes and the ``hidden`` names are skipped.
    Objects reachable from several variables are counted once per variable.

    Examples
    --------
    >>> largest_variables({"small": 1, "big": list(range(10_000))}, top=1)[0].name
    'big'
    """
    hidden_names = set(hidden)
    deadline = time.perf_counter() + time_budget_s
    found: list[VariableSize] = []
    for name, value in list(namespace.items()):
        if name in hidden_names or not _is_interesting(name, value):
            continue
        budget = max(0.01, min(0.2, deadline - time.perf_counter()))
        size, note = deep_sizeof(value, time_budget_s=budget)
        found.append(VariableSize(name, type(value).__name__, size, note))
    found.sort(key=lambda item: item.size_bytes, reverse=True)
    return found[:top]


def held_bytes(objects: Iterable[object], time_budget_s: float = 1.0) -> int:
    """Return the deep size of several objects together, shared parts counted once."""
    walk = _Walk(8, 2_000, time.perf_counter() + time_budget_s)
    total = 0
    for obj in objects:
        try:
            total += walk.size(obj)
        except Exception:
            total += _getsizeof(obj)
    return total


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def names_in(source: str) -> set[str]:
    """Return the identifiers a cell's text mentions (a cheap over-estimate).

    Examples
    --------
    >>> sorted(names_in("df['x'] = f(a.b)  # c"))
    ['a', 'b', 'c', 'df', 'f', 'x']
    """
    return set(_NAME.findall(source))
