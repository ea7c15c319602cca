"""Real kernels inside real memory cgroups: the out-of-memory killer is not simulated.

Where no memory cgroup can be made (not root, no controller) these tests are skipped with
the reason; under CI they fail instead, since CI's machines allow it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.cgrouphelp import (
    MemoryCgroup,
    execute_ok,
    require_memory_cgroup,
    start_kernel_in,
    stop_kernel,
)

KERNEL_LIMIT = 600 * 2**20


class CgroupKernel:
    """A running kernel in its own memory cgroup."""

    def __init__(self, cgroup: MemoryCgroup, manager: Any, client: Any) -> None:
        self.cgroup = cgroup
        self.manager = manager
        self.client = client

    def run(self, code: str, timeout: float = 180, *, silent: bool = False
            ) -> tuple[dict[str, Any], str]:
        """Execute ``code``: (reply content, text output); KernelDiedError if it was killed."""
        from tests.cgrouphelp import execute

        return execute(self.manager, self.client, code, timeout, silent=silent)

    def ok(self, code: str, timeout: float = 180) -> str:
        """Execute ``code``, which must succeed; return its text output."""
        return execute_ok(self.manager, self.client, code, timeout)


@pytest.fixture
def cgroup_kernel() -> Iterator[CgroupKernel]:
    """A python3 kernel inside a fresh ~600 MiB memory cgroup, removed afterwards."""
    require_memory_cgroup()
    with MemoryCgroup(KERNEL_LIMIT) as cgroup:
        manager, client = start_kernel_in(cgroup)
        try:
            yield CgroupKernel(cgroup, manager, client)
        finally:
            stop_kernel(manager, client)


@pytest.fixture
def kernels() -> Iterator[list[tuple[Any, Any]]]:
    """A list to put (manager, client) pairs in; each kernel is stopped afterwards."""
    started: list[tuple[Any, Any]] = []
    yield started
    for manager, client in started:
        stop_kernel(manager, client)
