"""Per-worker exact peaks on a real LocalCluster of processes."""

from __future__ import annotations

from typing import Any

import pytest

from meno_jupyter.core.cluster import ClusterProfile, worker_statuses
from meno_jupyter.core.memory import MIB
from tests.dask.tasks import die_after, hold, spike

pytestmark = pytest.mark.dask


def test_each_worker_gets_its_exact_peak(cluster_client: Any) -> None:
    first, second = sorted(cluster_client.scheduler_info()["workers"])
    profile = ClusterProfile(cluster_client)
    profile.start()
    big = cluster_client.submit(hold, 200, workers=[first], pure=False)
    small = cluster_client.submit(hold, 50, workers=[second], pure=False)
    truth = dict(zip((first, second), cluster_client.gather([big, small]), strict=True))
    peaks = {peak.address: peak for peak in profile.stop()}
    for address in (first, second):
        peak = peaks[address]
        assert peak.exact_peak and not peak.died
        assert abs(peak.peak_increase - truth[address]) <= 0.05 * truth[address], peak
        assert peak.delta is not None and abs(peak.delta) < 10 * MIB  # freed again
        assert peak.memory_limit == 2 * 2**30 and peak.timeline_rss_bytes
    assert truth[first] >= 195 * MIB and truth[second] >= 45 * MIB


def test_a_short_spike_is_caught_exactly_not_sampled(cluster_client: Any) -> None:
    worker = sorted(cluster_client.scheduler_info()["workers"])[0]
    profile = ClusterProfile(cluster_client, interval_s=0.5)  # samples far apart
    profile.start()
    cluster_client.submit(spike, 100, 0.03, workers=[worker], pure=False).result()
    peak = next(p for p in profile.stop() if p.address == worker)
    assert abs(peak.peak_increase - 100 * MIB) <= 3 * MIB  # the high-water mark saw it


def test_workers_are_listed_with_dask_figures(cluster_client: Any) -> None:
    statuses = worker_statuses(cluster_client)
    assert len(statuses) == 2
    for status in statuses:
        assert status.address.startswith("tcp://") and status.rss_bytes > 20 * MIB
        assert status.memory_limit == 2 * 2**30
        assert 0 < (status.limit_share or 0) < 1


def test_a_worker_that_dies_is_named_with_what_it_reached(fresh_client: Any) -> None:
    victim, survivor = sorted(fresh_client.scheduler_info()["workers"])
    profile = ClusterProfile(fresh_client)
    profile.start()
    from distributed import KilledWorker

    doomed = fresh_client.submit(die_after, 150, workers=[victim], pure=False)
    with pytest.raises(KilledWorker):
        doomed.result(timeout=60)
    peaks = {peak.address: peak for peak in profile.stop()}
    dead = peaks[victim]
    assert dead.died and dead.end_rss is None and dead.delta is None
    assert dead.peak_rss - dead.start_rss >= 146 * MIB  # where it stopped rising, before the kill
    assert dead.describe_death().startswith(f"worker {victim} died during the cell")
    assert "of its 2.0 GiB limit" in dead.describe_death()
    assert not peaks[survivor].died
