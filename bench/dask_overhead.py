"""Per-worker exact peaks on a Dask cluster: cost and accuracy, beside Dask's own sampler.

A ``LocalCluster`` of two single-threaded worker processes. Printed side by side:

* the cost of measuring the workers on a cell that runs nothing on the cluster
  (``Profiler(dask=client)`` against ``Profiler()``, the difference per cell);
* a task-heavy cell (400 small numpy tasks) with and without the workers measured;
* a 30 ms, 100 MiB spike on one worker: meno's exact per-worker peak against
  ``distributed.diagnostics.MemorySampler`` (the scheduler's cluster-wide figure, sampled
  every 0.5 s by default), the peer that Dask ships for this.

Run ``python bench/dask_overhead.py`` (needs the ``[dask]`` extra).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

MIB = 2**20


def small_task(seed: int) -> float:
    return float(np.ones(2**16).sum() + seed)


def spike(mib: int = 100, seconds: float = 0.03) -> int:
    block = np.ones(mib * MIB // 8)
    time.sleep(seconds)
    del block
    return 1


def main() -> None:
    """Print the cost and accuracy rows."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    from distributed import Client, LocalCluster
    from distributed.diagnostics import MemorySampler

    from meno_jupyter.core.profiler import Profiler

    cluster = LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                           dashboard_address=":0")
    client = Client(cluster)
    try:
        worker = sorted(client.scheduler_info()["workers"])[0]
        for _ in range(3):  # warm both paths
            with Profiler(dask=client, timeline=False):
                pass
        plain, measured = [], []
        for _ in range(args.repeat):
            started = time.perf_counter()
            with Profiler(timeline=False):
                pass
            plain.append(time.perf_counter() - started)
            started = time.perf_counter()
            with Profiler(dask=client, timeline=False):
                pass
            measured.append(time.perf_counter() - started)
        extra_ms = (statistics.median(measured) - statistics.median(plain)) * 1000
        print(f"cell running nothing on the cluster: +{extra_ms:.1f} ms per profiled cell "
              f"with 2 workers (median of {args.repeat})")

        def task_heavy() -> None:
            client.gather(client.map(small_task, range(400), pure=False))

        task_heavy()
        bare, with_workers = [], []
        for _ in range(max(3, args.repeat // 4)):
            started = time.perf_counter()
            with Profiler():
                task_heavy()
            bare.append(time.perf_counter() - started)
            started = time.perf_counter()
            with Profiler(dask=client):
                task_heavy()
            with_workers.append(time.perf_counter() - started)
        ratio = statistics.median(with_workers) / statistics.median(bare)
        print(f"task-heavy cell (400 tasks): {statistics.median(bare):.3f} s -> "
              f"{statistics.median(with_workers):.3f} s with the workers measured "
              f"({ratio:.3f}x)")

        sampler = MemorySampler()
        with sampler.sample("spike"), Profiler(dask=client) as prof:
            client.submit(spike, workers=[worker], pure=False).result()
        exact = next(p for p in prof.result.workers if p.address == worker).peak_increase
        frame = sampler.to_pandas()
        sampled = float(frame["spike"].max() - frame["spike"].min()) if len(frame) else 0.0
        print(f"100 MiB for 30 ms on one worker: meno per-worker exact peak "
              f"{exact / MIB:.1f} MiB; distributed MemorySampler (cluster total, 0.5 s) "
              f"saw {sampled / MIB:.1f} MiB of growth")
    finally:
        client.close()
        cluster.close()


if __name__ == "__main__":
    main()
