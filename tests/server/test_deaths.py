"""Post-mortems of real kernel deaths: the OOM killer in a real cgroup, a crash, an exit."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meno_jupyter.core.ledger import inflight_path_for
from meno_jupyter.server.deaths import DeathWatch
from tests.cgrouphelp import MemoryCgroup, require_memory_cgroup
from tests.fuzzhelp import FLIPS, JSON_VALUES, damaged
from tests.server.conftest import RunningKernel

pytestmark = pytest.mark.server

MIB = 2**20


async def deaths_of(jp_fetch: Any, kernel: RunningKernel, timeout: float = 30) -> list[Any]:
    """Wait for the server to record a death of ``kernel``; return its post-mortems.

    Returns once the server has restarted the kernel too (shutting a kernel down in the
    middle of its restart fails in jupyter_client).
    """
    deadline = time.monotonic() + timeout
    deaths: list[Any] = []
    while time.monotonic() < deadline:
        response = await jp_fetch("meno-jupyter", "deaths", params={"kernel": kernel.id},
                                  method="GET")
        deaths = json.loads(response.body)["deaths"]
        ready = kernel.manager.ready
        if deaths and ready.done() and await kernel.manager.is_alive():
            break
        await asyncio.sleep(0.3)
    return list(deaths)


async def start_dying_cell(kernel: RunningKernel, code: str) -> None:
    """Send a cell that kills the kernel (no reply will come)."""
    kernel.client.execute(code)
    await asyncio.sleep(0.5)


async def test_an_oom_kill_is_named_with_its_cell_and_memory(
        jp_fetch: Any, kernel: RunningKernel) -> None:
    require_memory_cgroup()
    await kernel.run("%load_ext meno_jupyter\n%memwatch on")
    with MemoryCgroup(600 * MIB) as cgroup:
        cgroup.add(kernel.manager.provisioner.pid)
        await asyncio.sleep(1.0)  # the server sees the kernel in its new cgroup
        await start_dying_cell(kernel, "import numpy as np, time\nchunks = []\n"
                                       "for step in range(100):\n"
                                       "    chunks.append(np.ones(20 * 2**20 // 8))\n"
                                       "    time.sleep(0.03)")
        deaths = await deaths_of(jp_fetch, kernel)
        assert cgroup.oom_kills() == 1
    assert len(deaths) == 1, deaths
    death = deaths[0]
    assert death["cause"] == "killed by the out-of-memory killer"
    assert death["signal"] == "SIGKILL" and death["exit_code"] == -9
    assert death["execution_count"] == 2
    assert death["source_head"] == "import numpy as np, time"
    assert death["summary"] == ("The kernel was killed by the out-of-memory killer while "
                                "running cell [2] (import numpy as np, time).")
    assert death["limit_bytes"] == 600 * MIB
    assert death["peak_rss_bytes"] >= 0.5 * 600 * MIB  # the last minute reached the limit
    assert len(death["times"]) == len(death["rss"]) >= 3


@pytest.mark.parametrize(("code", "cause", "signal_name"), [
    ("import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)", "crashed: segmentation fault",
     "SIGSEGV"),
    ("import os\nos._exit(3)", "exited with code 3", None),
])
async def test_a_crash_and_an_exit_are_told_apart(
        jp_fetch: Any, kernel: RunningKernel, code: str, cause: str,
        signal_name: str | None) -> None:
    await kernel.run("%load_ext meno_jupyter\n%memguard on")
    await asyncio.sleep(0.5)
    await start_dying_cell(kernel, code)
    deaths = await deaths_of(jp_fetch, kernel)
    assert [d["cause"] for d in deaths] == [cause]
    assert deaths[0]["signal"] == signal_name
    assert deaths[0]["execution_count"] == 2
    assert deaths[0]["source_head"] == code.partition("\n")[0]


async def test_a_restart_or_shutdown_from_the_ui_is_not_a_death(
        jp_fetch: Any, kernel: RunningKernel) -> None:
    await kernel.run("%load_ext meno_jupyter\n%memwatch on")
    await asyncio.sleep(0.5)
    response = await jp_fetch("api", "kernels", kernel.id, "restart", method="POST",
                              body="")
    assert response.code == 200
    assert await deaths_of(jp_fetch, kernel, timeout=6) == []


async def test_deaths_survive_the_server_and_orphans_are_found(tmp_path: Path) -> None:
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)
    dead_pid = int(child.stdout)
    runtime = tmp_path / "runtime"
    runtime.mkdir()
    inflight = inflight_path_for(runtime / "kernel-abc-123.json")
    inflight.write_text(json.dumps({
        "schema": 1, "pid": dead_pid, "running": True, "execution_count": 7,
        "cell_id": "c7", "source_head": "model.fit(X)", "started_at": 1.0,
        "start_rss": 10 * MIB}))
    for name, text in [("meno-inflight-kernel-huge.json", "x" * 200_000),
                       ("meno-inflight-kernel-schema.json", '{"schema": 2}'),
                       ("meno-inflight-kernel-bytes.json", "\udcff")]:
        (runtime / name).write_bytes(text.encode("utf-8", "surrogateescape"))
    watch = DeathWatch(tmp_path / "data", lambda kernel_id: None, lambda: (8 * 2**30, "system"))
    assert watch.scan_orphans(runtime) == 1
    assert not inflight.exists()  # reported once
    again = DeathWatch(tmp_path / "data", lambda kernel_id: None, lambda: (1, "system"))
    (death,) = again.list()
    assert death["kernel_id"] == "abc-123" and death["execution_count"] == 7
    assert death["summary"] == ("The kernel stopped while running cell [7] (model.fit(X)); "
                                "no exit status was recorded.")
    with open(again.file, "ab") as handle:  # damage does not lose the good lines
        handle.write(b'{"not": "a death"}\n\xff\xfe\n[' + b"[" * 50_000 + b"\n")
    third = DeathWatch(tmp_path / "data", lambda kernel_id: None, lambda: (1, "system"))
    assert len(third.list()) == 1 and third.unreadable_lines == 3
    assert (os.stat(again.file).st_mode & 0o777) == 0o600


async def test_deaths_refuses_a_bad_since(jp_fetch: Any) -> None:
    import tornado.httpclient

    with pytest.raises(tornado.httpclient.HTTPClientError) as caught:
        await jp_fetch("meno-jupyter", "deaths", params={"since": "nan"}, method="GET")
    assert caught.value.code == 400
    response = await jp_fetch("meno-jupyter", "deaths", method="GET")
    assert json.loads(response.body)["deaths"] == []


def _strict(text: str | bytes) -> Any:
    """Parse JSON as a browser's ``JSON.parse`` does: NaN and Infinity are errors."""
    def refuse(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")
    return json.loads(text, parse_constant=refuse)


GOOD_DEATH = {"kernel_id": "k-good", "pid": 4242, "died_at": 1_700_000_000.5,
              "cause": "killed by the out-of-memory killer",
              "summary": "The kernel was killed by the out-of-memory killer.",
              "exit_code": -9, "signal": "SIGKILL", "rss_bytes": 5 * MIB,
              "times": [1_700_000_000.0], "rss": [5 * MIB]}


@pytest.fixture
def planted_deaths(jp_data_dir: Path) -> Path:
    """A deaths.jsonl with one good post-mortem among bad lines, before the server starts."""
    directory = jp_data_dir / "meno-jupyter"
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    bad = [
        {**GOOD_DEATH, "died_at": "soon"},
        {**GOOD_DEATH, "pid": int("9" * 400)},
        {**GOOD_DEATH, "times": [1.0, 2.0]},  # a second time without its figure
        {**GOOD_DEATH, "exit_code": True},
    ]
    lines = [json.dumps(d) for d in bad]
    lines.append(json.dumps(GOOD_DEATH).replace('"rss_bytes": 5242880', '"rss_bytes": NaN'))
    lines.append(json.dumps(GOOD_DEATH).replace("1700000000.5", "Infinity"))
    lines.append(json.dumps(GOOD_DEATH))
    path = directory / "deaths.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


async def test_one_bad_line_hides_no_other_post_mortem(
        planted_deaths: Path, jp_fetch: Any) -> None:
    response = await jp_fetch("meno-jupyter", "deaths", method="GET")
    body = _strict(response.body)
    assert [d["kernel_id"] for d in body["deaths"]] == ["k-good"]
    assert body["unreadable_lines"] == 6
    assert body["deaths"][0]["id"] == "k-good:4242:1700000000.500"
    since = await jp_fetch("meno-jupyter", "deaths", params={"since": "1"}, method="GET")
    assert len(_strict(since.body)["deaths"]) == 1


def test_a_post_mortem_is_checked_field_by_field() -> None:
    from meno_jupyter.server.deaths import Death

    assert Death.from_dict({**GOOD_DEATH, "id": "ignored"}).pid == 4242
    for bad in ({**GOOD_DEATH, "died_at": float("nan")}, {**GOOD_DEATH, "rss": ["x"]},
                {**GOOD_DEATH, "surplus": 1}, {"kernel_id": "k"}, [GOOD_DEATH], None,
                {**GOOD_DEATH, "signal": 9}, {**GOOD_DEATH, "died_at": -5}):
        with pytest.raises(ValueError):
            Death.from_dict(bad)


FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(cut=st.integers(0, 3_000), flips=FLIPS)
def test_a_damaged_deaths_file_keeps_what_it_can_and_serves_strict_json(
        tmp_path_factory: pytest.TempPathFactory, cut: int, flips: list[tuple[int, int]]
) -> None:
    directory = tmp_path_factory.mktemp("data")
    lines = [json.dumps({**GOOD_DEATH, "kernel_id": f"k{n}", "died_at": 1e9 + n})
             for n in range(4)]
    raw = ("\n".join(lines) + "\n").encode()
    (directory / "deaths.jsonl").write_bytes(damaged(raw, cut, flips))
    watch = DeathWatch(directory, lambda kernel_id: None, lambda: (1, "system"))
    listed = watch.list()
    assert len(listed) + watch.unreadable_lines <= raw.count(b"\n") + 1
    _strict(json.dumps(listed, allow_nan=False))
    assert all(isinstance(d["id"], str) for d in watch.list(since=0.0, kernel_id="k1"))


@FUZZ
@given(field=st.sampled_from([*GOOD_DEATH, "execution_count", "cell_id", "path"]),
       value=JSON_VALUES)
def test_wrong_types_in_a_post_mortem_are_refused(field: str, value: object) -> None:
    from meno_jupyter.server.deaths import Death

    try:
        death = Death.from_dict({**GOOD_DEATH, field: value})
    except ValueError:
        return
    _strict(json.dumps(death.to_dict(), allow_nan=False))
    assert isinstance(death.died_at, (int, float)) and isinstance(death.pid, int)
