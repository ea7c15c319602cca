from __future__ import annotations

import time
from typing import Any

import numpy as np
import pandas as pd

from meno_jupyter.core.memory import MIB
from meno_jupyter.core.namespace import deep_sizeof, held_bytes, largest_variables


def test_numpy_and_pandas_sizes_come_from_the_objects() -> None:
    array = np.zeros(1_000_000)
    assert deep_sizeof(array)[0] == array.nbytes
    frame = pd.DataFrame({"a": np.arange(100_000), "b": ["text"] * 100_000})
    assert deep_sizeof(frame)[0] == int(frame.memory_usage(deep=True).sum())
    assert deep_sizeof(frame["a"])[0] == int(frame["a"].memory_usage(deep=True))
    index = pd.Index(np.arange(10_000))
    assert deep_sizeof(index)[0] == int(index.memory_usage(deep=True))


def test_a_view_is_noted() -> None:
    base = np.zeros(1000)
    size, note = deep_sizeof(base[::2])
    assert size == base[::2].nbytes
    assert "view" in note


def test_containers_are_walked_and_shared_items_counted_once() -> None:
    block = b"x" * MIB
    size, _ = deep_sizeof([block, block, {"k": block}])
    assert MIB <= size < 1.1 * MIB


def test_cycles_terminate() -> None:
    cycle: list[Any] = []
    cycle.append(cycle)
    size, _ = deep_sizeof(cycle)
    assert size > 0


class Hostile:
    """An object whose introspection raises at every turn."""

    def __sizeof__(self) -> int:
        raise RuntimeError("no size for you")

    def __getattribute__(self, name: str) -> Any:
        if name in {"__class__", "__sizeof__"}:
            return object.__getattribute__(self, name)
        raise RuntimeError(f"no {name}")


def test_hostile_objects_never_raise() -> None:
    size, _ = deep_sizeof(Hostile())
    assert size == 0
    assert largest_variables({"h": Hostile(), "x": [1, 2, 3]})[0].name == "x"


def test_huge_containers_are_sampled_within_the_budget() -> None:
    huge = [[i] for i in range(2_000_000)]
    started = time.perf_counter()
    size, note = deep_sizeof(huge, time_budget_s=0.1)
    assert time.perf_counter() - started < 2.0
    assert "estimate" in note
    # Each item: a one-element list (~64 B) and an int (28 B): the estimate is the right size.
    assert 100 * 2_000_000 <= size <= 250 * 2_000_000


def test_largest_variables_orders_and_skips_private_and_modules() -> None:
    namespace = {
        "big": np.zeros(500_000),
        "small": [1, 2],
        "_hidden": np.zeros(10_000_000),
        "np": np,
        "shown_but_hidden": np.zeros(5_000_000),
    }
    found = largest_variables(namespace, top=5, hidden=["shown_but_hidden"])
    assert [v.name for v in found] == ["big", "small"]
    assert found[0].type_name == "ndarray"
    assert found[0].size_bytes == 4_000_000


def test_held_bytes_counts_shared_objects_once() -> None:
    frame = pd.DataFrame({"a": np.arange(1_000_000)})
    assert held_bytes([frame, frame]) == deep_sizeof(frame)[0]
