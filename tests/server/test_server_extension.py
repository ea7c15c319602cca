"""The server extension through a real Jupyter server (jp_fetch) and real kernels."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from typing import Any

import pytest
import tornado.httpclient

from meno_jupyter.server.handlers import ROUTES
from tests.cgrouphelp import MemoryCgroup, require_memory_cgroup
from tests.server.conftest import SAMPLE_INTERVAL_S, RunningKernel

pytestmark = pytest.mark.server

MIB = 2**20


async def get(jp_fetch: Any, *parts: str, **params: str) -> Any:
    response = await jp_fetch("meno-jupyter", *parts, params=params or None, method="GET")
    assert response.code == 200
    return json.loads(response.body)


async def error_of(jp_fetch: Any, *parts: str, **params: str) -> tuple[int, Any]:
    with pytest.raises(tornado.httpclient.HTTPClientError) as caught:
        await jp_fetch("meno-jupyter", *parts, params=params or None, method="GET")
    return caught.value.code, json.loads(caught.value.response.body)


async def test_every_route_refuses_an_unauthenticated_request(
        jp_serverapp: Any, http_server_client: Any, jp_base_url: str) -> None:
    assert len(ROUTES) == 6
    for route, _ in ROUTES:
        path = route.replace("(?P<kernel_id>[^/]+)", "some-kernel").replace(
            "(?P<rest>.*)", "no/such/route")
        url = f"{jp_base_url}meno-jupyter/{path}"
        with pytest.raises(tornado.httpclient.HTTPClientError) as caught:
            await http_server_client.fetch(url, method="GET")
        assert caught.value.code == 403, (route, caught.value.code)
        # a wrong token is refused too
        with pytest.raises(tornado.httpclient.HTTPClientError) as caught:
            await http_server_client.fetch(url, method="GET",
                                           headers={"Authorization": "token wrong"})
        assert caught.value.code == 403, route


async def test_unknown_kernel_is_a_json_404(jp_fetch: Any) -> None:
    for part in ("history", "ledger"):
        code, body = await error_of(jp_fetch, "kernels", "no-such-kernel", part)
        assert code == 404
        assert "no kernel 'no-such-kernel'" in body["message"]
    for odd in ("a.b", "with space", "x" * 8000, "%E2%9C%93"):
        code, body = await error_of(jp_fetch, "kernels", odd, "ledger")
        assert code == 404 and body["message"].startswith("no kernel"), odd
        assert len(body["message"]) < 100  # an 8 kB id is not echoed back whole
    code, body = await error_of(jp_fetch, "no", "such", "route")
    assert code == 404 and "no endpoint" in body["message"]


async def test_limit_and_system_figures(jp_fetch: Any) -> None:
    limit = await get(jp_fetch, "limit")
    assert limit["limit_bytes"] > 0 and limit["system_total_bytes"] >= limit["limit_bytes"] / 2
    assert limit["source"] and limit["interval_s"] == SAMPLE_INTERVAL_S
    assert limit["thresholds"] == sorted(limit["thresholds"])


async def test_kernels_lists_a_running_kernel_with_its_pid_and_memory(
        jp_fetch: Any, kernel: RunningKernel) -> None:
    await asyncio.sleep(3 * SAMPLE_INTERVAL_S)
    listing = await get(jp_fetch, "kernels")
    entry = next(k for k in listing["kernels"] if k["id"] == kernel.id)
    assert entry["pid"] == kernel.manager.provisioner.pid
    assert entry["measurable"] and entry["rss"] > 20 * MIB
    assert entry["total"] == entry["rss"] + entry["children"]
    assert entry["pressure"] in {"low", "medium", "high"}
    assert listing["limit"]["limit_bytes"] > 0
    assert entry["limit_bytes"] == listing["limit"]["limit_bytes"]  # no tighter cgroup of its own


async def test_a_kernel_in_a_tighter_cgroup_is_measured_against_its_own_limit(
        jp_fetch: Any, kernel: RunningKernel) -> None:
    require_memory_cgroup()
    with MemoryCgroup(700 * MIB) as cgroup:
        cgroup.add(kernel.manager.provisioner.pid)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            listing = await get(jp_fetch, "kernels")
            entry = next(k for k in listing["kernels"] if k["id"] == kernel.id)
            if entry["limit_bytes"] == 700 * MIB:
                break
            await asyncio.sleep(0.3)
        assert entry["limit_bytes"] == 700 * MIB, entry
        assert entry["limit_source"] == "cgroup of the kernel"
        assert listing["limit"]["limit_bytes"] > 700 * MIB  # the server's stays
        assert abs(entry["percent"] - 100 * entry["total"] / (700 * MIB)) < 1e-6
        cgroup.release(kernel.manager.provisioner.pid)


async def test_history_grows_while_the_kernel_is_busy(
        jp_fetch: Any, kernel: RunningKernel) -> None:
    start = time.time()
    await asyncio.sleep(2 * SAMPLE_INTERVAL_S)
    busy = asyncio.ensure_future(kernel.run(
        "import time\ntime.sleep(1)\nblock = bytearray(300 * 2**20)\n"
        "for i in range(0, len(block), 4096):\n    block[i] = 1\ntime.sleep(4)"))
    lengths: list[int] = []
    while not busy.done():
        history = await get(jp_fetch, "kernels", kernel.id, "history", since=str(start))
        lengths.append(len(history["rss"]))
        await asyncio.sleep(0.3)
    await busy
    history = await get(jp_fetch, "kernels", kernel.id, "history", since=str(start))
    assert len(lengths) >= 5 and lengths == sorted(lengths) and lengths[-1] > lengths[0]
    assert max(history["rss"]) - history["rss"][0] >= 250 * MIB
    later = await get(jp_fetch, "kernels", kernel.id, "history", since=str(time.time() + 60))
    assert later["times"] == []  # nothing after a time in the future


async def test_since_must_be_a_number(jp_fetch: Any, kernel: RunningKernel) -> None:
    with pytest.raises(tornado.httpclient.HTTPClientError) as caught:
        await jp_fetch("meno-jupyter", "kernels", kernel.id, "history",
                       params={"since": "yesterday"}, method="GET")
    assert caught.value.code == 400
    for bad in ("nan", "inf", "-inf", "1e400"):
        with pytest.raises(tornado.httpclient.HTTPClientError) as caught:
            await jp_fetch("meno-jupyter", "kernels", kernel.id, "history",
                           params={"since": bad}, method="GET")
        assert caught.value.code == 400, bad


async def test_ledger_returns_cells_after_memprofile_and_memwatch(
        jp_fetch: Any, kernel: RunningKernel) -> None:
    empty = await get(jp_fetch, "kernels", kernel.id, "ledger")
    assert not empty["available"] and "%memwatch on" in empty["reason"]
    await kernel.run("%load_ext meno_jupyter")
    await kernel.run("%%memprofile --no-plot\nblock = bytearray(50 * 2**20)")
    profiled = await get(jp_fetch, "kernels", kernel.id, "ledger")
    assert profiled["available"]
    assert [c["source_head"] for c in profiled["cells"]] == ["block = bytearray(50 * 2**20)"]
    assert profiled["cells"][0]["peak_increase"] >= 45 * MIB
    await kernel.run("%memwatch on")
    await kernel.run("other = bytearray(20 * 2**20)")
    watched = await get(jp_fetch, "kernels", kernel.id, "ledger")
    heads = [c["source_head"] for c in watched["cells"]]
    assert heads == ["block = bytearray(50 * 2**20)", "other = bytearray(20 * 2**20)"]
    # A notebook's cell carries its id (JupyterLab sends it); ?since gives only new cells.
    last_start = watched["cells"][-1]["started_at"]
    await kernel.run_cell("third = bytearray(10 * 2**20)", cell_id="cell-abc-123")
    newer = await get(jp_fetch, "kernels", kernel.id, "ledger", since=str(last_start))
    assert [(c["source_head"], c["cell_id"]) for c in newer["cells"]] == [
        ("third = bytearray(10 * 2**20)", "cell-abc-123")]
    assert watched["cells"][0]["cell_id"] is None  # run without a notebook
    code, _ = await error_of(jp_fetch, "kernels", kernel.id, "ledger", since="soon")
    assert code == 400


async def test_a_kernel_without_a_local_process_is_not_measurable(
        jp_fetch: Any, kernel: RunningKernel) -> None:
    provisioner = kernel.manager.provisioner
    pid = provisioner.pid
    provisioner.pid = None  # what a remote (gateway) kernel looks like to this server
    try:
        await asyncio.sleep(3 * SAMPLE_INTERVAL_S)
        listing = await get(jp_fetch, "kernels")
        entry = next(k for k in listing["kernels"] if k["id"] == kernel.id)
        assert not entry["measurable"] and entry["rss"] is None
        assert entry["reason"].startswith("not measurable")
        history = await get(jp_fetch, "kernels", kernel.id, "history")
        assert not history["measurable"] and history["reason"].startswith("not measurable")
    finally:
        provisioner.pid = pid


async def test_a_dead_kernel_is_no_longer_sampled(
        jp_serverapp: Any, jp_fetch: Any, kernel: RunningKernel) -> None:
    sampler = jp_serverapp.web_app.settings["meno_jupyter_sampler"]
    await asyncio.sleep(3 * SAMPLE_INTERVAL_S)
    assert sampler.histories[kernel.id].alive
    os.kill(kernel.manager.provisioner.pid, signal.SIGKILL)
    await asyncio.sleep(5 * SAMPLE_INTERVAL_S)
    history = sampler.histories.get(kernel.id)
    assert history is None or not history.alive
    await jp_serverapp.kernel_manager.shutdown_kernel(kernel.id, now=True)
    await asyncio.sleep(3 * SAMPLE_INTERVAL_S)
    assert kernel.id not in sampler.histories
    code, _ = await error_of(jp_fetch, "kernels", kernel.id, "history")
    assert code == 404


def _ledger_text(pid: int, cells: object = None) -> str:
    cell = {"execution_count": 1, "source_head": "x = 1", "started_at": 1.0,
            "duration_s": 0.5, "start_rss": 100, "end_rss": 120, "peak_rss": 150,
            "exact_peak": True, "children_peak_rss": 0, "error": None,
            "peak_increase": 50, "delta": 20}
    return json.dumps({"schema": 1, "pid": pid, "updated_at": 2.0,
                       "cells": [cell] if cells is None else cells})


async def test_the_ledger_route_reads_only_what_the_kernel_wrote(
        jp_fetch: Any, jp_serverapp: Any, kernel: RunningKernel, tmp_path: Any) -> None:
    from meno_jupyter.core.ledger import ledger_path_for

    path = ledger_path_for(kernel.manager.connection_file)
    pid = kernel.manager.provisioner.pid
    path.write_text(_ledger_text(pid))
    good = await get(jp_fetch, "kernels", kernel.id, "ledger")
    assert good["available"] and good["cells"][0]["source_head"] == "x = 1"

    cases = {
        "a file from the dead process before a restart": (_ledger_text(pid + 10**6),
                                                          "earlier process"),
        "deep nesting": ('{"schema": 1, "cells": ' + "[" * 100_000 + "]" * 100_000 + "}",
                         "not a readable ledger"),
        "NaN": (_ledger_text(pid).replace('"duration_s": 0.5', '"duration_s": NaN'),
                "not a number JSON allows"),
        "cells not a list": (_ledger_text(pid, cells="not a list"), "cells must be a list"),
        "a cell without fields": (_ledger_text(pid, cells=[{"source_head": "x"}]),
                                  "cell 0 has no"),
        "50 MB": ('{"schema": 1, "pad": "' + "x" * 50 * MIB + '"}', "more than a ledger"),
    }
    for what, (text, reason) in cases.items():
        path.write_text(text)
        body = await get(jp_fetch, "kernels", kernel.id, "ledger")
        assert not body["available"] and body["cells"] == [], what
        assert reason in body["reason"], (what, body["reason"])

    path.unlink()
    elsewhere = tmp_path / "other.json"
    elsewhere.write_text(_ledger_text(pid))
    path.symlink_to(elsewhere)
    linked = await get(jp_fetch, "kernels", kernel.id, "ledger")
    assert not linked["available"] and "cannot be opened" in linked["reason"]

    path.unlink()
    os.mkfifo(path)
    try:
        started = time.monotonic()
        fifo = await get(jp_fetch, "kernels", kernel.id, "ledger")
        status = await jp_fetch("api", "status", method="GET")
        assert status.code == 200 and time.monotonic() - started < 2.0  # before: froze
        assert not fifo["available"] and "not a regular file" in fifo["reason"]
    finally:
        path.unlink()


async def test_a_kernel_shut_down_leaves_no_ledger_file(
        jp_fetch: Any, jp_serverapp: Any, kernel: RunningKernel) -> None:
    from meno_jupyter.core.ledger import ledger_path_for

    await kernel.run("%load_ext meno_jupyter")
    await kernel.run("%memwatch on")
    await kernel.run("x = 1")
    path = ledger_path_for(kernel.manager.connection_file)
    assert path.exists()
    kernel.client.stop_channels()
    await jp_serverapp.kernel_manager.shutdown_kernel(kernel.id)  # a normal shutdown
    assert not path.exists()


async def test_kernels_say_whether_the_memory_guard_is_on(
        jp_fetch: Any, kernel: RunningKernel) -> None:
    from meno_jupyter.core.guard import guard_path_for

    async def guard() -> Any:
        listing = await get(jp_fetch, "kernels")
        return next(k for k in listing["kernels"] if k["id"] == kernel.id)["guard"]

    assert await guard() is None  # never loaded
    await kernel.run("%load_ext meno_jupyter\n%memguard on --at 85%")
    assert await guard() == {"on": True, "at": 0.85, "stops": 0}
    await kernel.run("%memguard off")
    assert (await guard())["on"] is False
    path = guard_path_for(kernel.manager.connection_file)
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, "pid": data["pid"] + 10**6, "on": True}))
    assert await guard() is None  # an earlier process's file says nothing of this one
    path.write_text('{"schema": 1, "on": "yes"}')
    assert await guard() is None


async def test_every_route_answers_strict_json(jp_fetch: Any, kernel: RunningKernel) -> None:
    def refuse(name: str) -> Any:
        raise ValueError(f"{name} is not JSON: JSON.parse would fail")

    await kernel.run("%load_ext meno_jupyter\n%memwatch on")
    await kernel.run("x = 1")
    await asyncio.sleep(2 * SAMPLE_INTERVAL_S)
    for parts in (("kernels",), ("limit",), ("deaths",), ("kernels", kernel.id, "history"),
                  ("kernels", kernel.id, "ledger")):
        response = await jp_fetch("meno-jupyter", *parts, method="GET")
        assert isinstance(json.loads(response.body, parse_constant=refuse), dict), parts
    from meno_jupyter.server.handlers import strict_json

    assert json.dumps(strict_json({"a": [float("nan"), (float("-inf"), 2.5)]})) == (
        '{"a": [null, [null, 2.5]]}')


def test_a_ledger_file_is_parsed_once_per_change(tmp_path: Any) -> None:
    from meno_jupyter.core.ledger import Ledger, LedgerFileError, read_ledger_file
    from meno_jupyter.server.handlers import ParsedFileCache

    reads: list[str] = []

    def reader(path: str) -> dict[str, Any]:
        reads.append(path)
        return read_ledger_file(path)

    path = tmp_path / "meno-ledger-k.json"
    ledger = Ledger(10, path=path)
    ledger.write_file()
    cache = ParsedFileCache(reader)
    first = cache.read(str(path))
    assert cache.read(str(path)) is first and len(reads) == 1  # polled again: not re-read
    from meno_jupyter.core.ledger import CellRecord

    ledger.add(CellRecord(1, "x = 1", time.time(), 0.1, MIB, MIB, 2 * MIB, True, 0))
    ledger.write_file()
    assert len(cache.read(str(path))["cells"]) == 1 and len(reads) == 2
    path.unlink()
    path.symlink_to(tmp_path / "elsewhere.json")  # errors are the reader's, and not kept
    with pytest.raises(LedgerFileError):
        cache.read(str(path))
