"""Without the server extension (VS Code), the next kernel of a notebook tells of a death."""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from tests.cgrouphelp import (
    KernelDiedError,
    MemoryCgroup,
    execute,
    execute_ok,
    require_memory_cgroup,
    start_kernel_in,
)

pytestmark = pytest.mark.kernel


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "JUPYTER_DATA_DIR": str(tmp_path / "data"),
            "JPY_SESSION_NAME": str(tmp_path / "analysis.ipynb")}


def start(env: dict[str, str], kernels: list[Any]) -> tuple[Any, Any]:
    kernel = start_kernel_in(None, env=env)
    kernels.append(kernel)
    return kernel


def ok(kernel: tuple[Any, Any], code: str) -> str:
    return execute_ok(*kernel, code, 120)


def test_a_kernel_killed_mid_cell_is_reported_once_by_the_next(
        env: dict[str, str], kernels: list[Any]) -> None:
    first = start(env, kernels)
    ok(first, "%load_ext meno_jupyter")
    first[1].execute("import time\ntime.sleep(120)  # the long cell")
    time.sleep(1.5)
    os.kill(first[0].provisioner.process.pid, signal.SIGKILL)
    second = start(env, kernels)
    said = ok(second, "%load_ext meno_jupyter")
    assert said.startswith("meno-jupyter: The previous kernel of this notebook stopped while "
                           "running cell [2] (import time)"), said
    assert re.search(r"\(import time\); that cell started \d s ago\. Its exit status is "
                     r"not known here\.", said), said
    assert "%memguard on" in said and "%memcheckpoint on" in said
    assert "The previous kernel of this notebook" in ok(second, "%memstatus --top 0")
    # Said once: a third kernel (after the second exits cleanly) says nothing.
    second[0].shutdown_kernel(now=False)
    third = start(env, kernels)
    assert ok(third, "%load_ext meno_jupyter") == ""


def test_an_oom_kill_is_named(env: dict[str, str], kernels: list[Any]) -> None:
    require_memory_cgroup()
    with MemoryCgroup(600 * 2**20) as cgroup:
        manager, client = start_kernel_in(cgroup, env=env)
        kernels.append((manager, client))
        ok((manager, client), "%load_ext meno_jupyter\nimport numpy as np")
        with pytest.raises(KernelDiedError):
            execute(manager, client, "chunks = []\nwhile True:\n"
                                     "    chunks.append(np.ones(2**22))", 120)
        assert cgroup.oom_kills() == 1
        second = start(env, kernels)
        said = ok(second, "%load_ext meno_jupyter")
    assert said.startswith("meno-jupyter: The previous kernel of this notebook was killed by "
                           "the out-of-memory killer while running cell [2] (chunks = [])"), said
    assert "Its memory limit was 600.0 MiB." in said
