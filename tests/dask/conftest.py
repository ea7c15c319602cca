"""A real ``distributed.LocalCluster`` of worker processes (no mocks)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("distributed", reason="the [dask] extra is not installed")


@contextlib.contextmanager
def running_cluster(allowed_failures: int = 0) -> Iterator[Any]:
    """Two single-threaded worker processes, 2 GiB each; yields the client, closes both.

    ``allowed_failures=0``: a task whose worker dies fails at once (KilledWorker) instead
    of being run again elsewhere (Dask's default is 3).
    """
    import dask
    from distributed import Client, LocalCluster

    with dask.config.set({"distributed.scheduler.allowed-failures": allowed_failures}):
        cluster = LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                               dashboard_address=":0", memory_limit="2GiB")
    client = Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


@pytest.fixture(scope="module")
def cluster_client() -> Iterator[Any]:
    """A cluster shared by a module's tests."""
    with running_cluster() as client:
        yield client


@pytest.fixture
def fresh_client() -> Iterator[Any]:
    """A cluster of its own, for a test that kills a worker."""
    with running_cluster() as client:
        yield client
