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
