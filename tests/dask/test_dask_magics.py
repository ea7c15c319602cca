"""%%memprofile and %memstatus with a Dask client in use, in a real IPython shell."""

from __future__ import annotations

from typing import Any

import pytest
from IPython.core.error import UsageError
from IPython.utils.capture import capture_output

from meno_jupyter.core.memory import MIB
from tests.magics.helpers import shown

pytestmark = pytest.mark.dask


def run(shell: Any, cell: str) -> tuple[Any, Any]:
    with capture_output() as captured:
        result = shell.run_cell(cell)
    return result, captured


def test_memprofile_finds_the_client_in_use_and_measures_each_worker(
        shell: Any, cluster_client: Any) -> None:
    worker = sorted(cluster_client.scheduler_info()["workers"])[0]
    shell.user_ns.update(client=cluster_client, worker=worker)
    result, captured = run(shell, "%%memprofile -o prof --no-plot\n"
                                  "from tests.dask.tasks import hold\n"
                                  "grown = client.submit(hold, 120, workers=[worker], "
                                  "pure=False).result()")
    assert result.success, captured.stdout
    prof = shell.user_ns["prof"]
    assert len(prof.workers) == 2 and prof.workers[0].address == worker  # hungriest first
    truth = shell.user_ns["grown"]
    assert abs(prof.workers[0].peak_increase - truth) <= 0.05 * truth
    text = shown(captured)
    assert "Dask workers" in text and worker in text and "workers' peak increase" in text
    # --no-dask leaves them out; a scheduler address that is not one is a usage error.
    result, _ = run(shell, "%%memprofile -o prof --no-plot --no-dask\nx = 1")
    assert result.success and shell.user_ns["prof"].workers == ()
    result, _ = run(shell, "%%memprofile --dask nowhere\nx = 1")
    assert isinstance(result.error_in_exec, UsageError)
    assert "scheduler address" in str(result.error_in_exec)


def test_memprofile_dask_address_connects_its_own_client(shell: Any,
                                                         cluster_client: Any) -> None:
    address = cluster_client.scheduler.address
    result, captured = run(shell, f"%%memprofile -o prof --no-plot --dask {address}\nx = 1")
    assert result.success, captured.stdout
    assert len(shell.user_ns["prof"].workers) == 2


def test_memstatus_lists_the_workers(shell: Any, cluster_client: Any) -> None:
    result, captured = run(shell, "%memstatus -o status")
    assert result.success
    status = shell.user_ns["status"]
    assert len(status.workers) == 2
    assert all(w.rss_bytes > 20 * MIB and w.memory_limit == 2 * 2**30 for w in status.workers)
    assert "Dask workers" in shown(captured) and "of 2.0 GiB" in shown(captured)
    result, _ = run(shell, "%memstatus -o status --no-dask")
    assert shell.user_ns["status"].workers == ()


def test_memdash_draws_the_workers_total_and_a_line_each(shell: Any,
                                                          cluster_client: Any) -> None:
    import time

    from meno_jupyter.widgets.dashboard import close_all

    first = sorted(cluster_client.scheduler_info()["workers"])[0]
    shell.user_ns.update(client=cluster_client, worker=first)
    try:
        result, captured = run(shell, "%memdash -o dash --interval 0.2")
        assert result.success, captured.stdout
        dash = shell.user_ns["dash"]
        assert dash.cluster is not None and dash.cluster.client is cluster_client
        from tests.dask.tasks import hold

        held = cluster_client.submit(hold, 300, 3.0, workers=[first], pure=False)
        grown = held.result(timeout=30)
        time.sleep(1.5)  # the next heartbeat and poll
        names = [trace.name for trace in dash.figure.data]
        assert names[:3] == ["RSS", "cells", "Dask workers, total"]
        lines = {trace.name: list(trace.y) for trace in dash.figure.data[3:]}
        assert set(lines) == {address.split("://")[1]
                              for address in cluster_client.scheduler_info()["workers"]}
        worker_line = lines[first.split("://")[1]]
        assert max(worker_line) - min(worker_line) >= 0.8 * grown / MIB  # the 300 MiB held
        assert "2 Dask workers" in dash._header.value and dash.figure.layout.showlegend
        result, _ = run(shell, "%memdash -o plain --no-dask")
        assert result.success and shell.user_ns["plain"].cluster is None
        assert [t.name for t in shell.user_ns["plain"].figure.data] == ["RSS", "cells"]
    finally:
        close_all()
