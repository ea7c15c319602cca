"""A real ``distributed.LocalCluster`` of worker processes (no mocks)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("distributed", reason="the [dask] extra is not installed")


def start_cluster(n_workers: int = 2) -> tuple[Any, Any]:
    import dask
    from distributed import Client, LocalCluster

    # A task whose worker dies fails at once (KilledWorker) instead of being retried.
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        cluster = LocalCluster(n_workers=n_workers, processes=True, threads_per_worker=1,
                               dashboard_address=":0", memory_limit="2GiB")
    return cluster, Client(cluster)


@pytest.fixture(scope="module")
def cluster_client() -> Iterator[Any]:
    """Two single-threaded worker processes, 2 GiB each, shared by a module's tests."""
    cluster, client = start_cluster()
    try:
        yield client
    finally:
        client.close()
        cluster.close()


@pytest.fixture
def fresh_client() -> Iterator[Any]:
    """A cluster of its own, for a test that kills a worker."""
    cluster, client = start_cluster()
    try:
        yield client
    finally:
        client.close()
        cluster.close()
