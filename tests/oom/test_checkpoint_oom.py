"""A kernel really OOM-killed in a cgroup; a new kernel's %memrestore brings its variables back."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tests.cgrouphelp import (
    KernelDiedError,
    MemoryCgroup,
    execute,
    execute_ok,
    require_memory_cgroup,
    run_tutorial_in,
    start_kernel_in,
)

pytestmark = pytest.mark.kernel

LIMIT = 700 * 2**20
NOTEBOOK = "/work/analysis/Sales 2026.ipynb"

# Built alike in both kernels: the dead one keeps them, the new one compares.
BUILD = """
import numpy as np, pandas as pd
from sklearn.linear_model import LinearRegression
rng = np.random.default_rng(7)
n = 200_000
{p}sales = pd.DataFrame({{
    "amount": rng.random(n),
    "units": rng.integers(0, 1000, n, dtype=np.int32),
    "region": pd.Categorical(rng.choice(["north", "south", "east"], n)),
    "when": pd.date_range("2026-01-01", periods=n, freq="min", tz="America/New_York"),
    "note": [f"order {{i}}" for i in range(n)],
}})
{p}matrix = rng.random((2000, 2500))  # 40 MB
{p}nested = {{"weights": [rng.random(10), (1, "two")], "meta": {{"seen": {{3, 4}}}}}}
{p}model = LinearRegression().fit(rng.random((500, 3)), rng.random(500))
"""


def ok(kernel: tuple[Any, Any], code: str, timeout: float = 180) -> str:
    return execute_ok(*kernel, code, timeout)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "JUPYTER_DATA_DIR": str(tmp_path / "data"),
            "JPY_SESSION_NAME": NOTEBOOK}


def test_a_killed_kernels_variables_come_back_in_a_new_kernel(
        env: dict[str, str], kernels: list[tuple[Any, Any]], tmp_path: Path) -> None:
    require_memory_cgroup()
    with MemoryCgroup(LIMIT) as cgroup:
        dead = start_kernel_in(cgroup, env=env)
        kernels.append(dead)
        ok(dead, "%load_ext meno_jupyter\n%memcheckpoint on")
        ok(dead, BUILD.format(p=""))
        ok(dead, "double = lambda x: 2 * x\nsquares = (i * i for i in range(10))")
        status = ok(dead, "%memcheckpoint status --wait")
        assert "last checkpoint after cell [3]" in status, status
        assert "a generator: where it stopped cannot be saved" in status
        assert str(tmp_path / "data" / "meno-jupyter" / "checkpoints" / "Sales_2026-") in status
        kills = cgroup.oom_kills()
        with pytest.raises(KernelDiedError) as died:
            execute(*dead, "never = 'made'\nchunks = []\nwhile True:\n"
                           "    chunks.append(np.ones(2**22))", 180)
        assert died.value.exit_code == -9
        assert cgroup.oom_kills() == kills + 1
    fresh = start_kernel_in(None, env=env)
    kernels.append(fresh)
    report = ok(fresh, "%load_ext meno_jupyter\n%memrestore")
    assert "restored 10 variables" in report, report
    assert "as after cell [2]" in report and "as after cell [3]" in report
    assert "squares" in report and "not restored: a generator" in report
    assert "made by cell [3]: run it again" in report
    assert ("Cells run after the checkpoint (their effects are not in it):\n"
            "  [4] %memcheckpoint status --wait\n  [5] never = 'made'") in report
    assert "Checkpoints are off in this kernel: %memcheckpoint on keeps them again." in report
    checks = ok(fresh, BUILD.format(p="expected_") + """
print(sales.equals(expected_sales), sales.dtypes.equals(expected_sales.dtypes))
print(np.array_equal(matrix, expected_matrix), matrix.dtype)
print(nested["meta"] == expected_nested["meta"],
      np.array_equal(nested["weights"][0], expected_nested["weights"][0]))
print(np.allclose(model.coef_, expected_model.coef_), double(21))
print("never" in globals(), "chunks" in globals(), "squares" in globals())
""")
    assert checks.split("\n")[:5] == ["True True", "True float64", "True True", "True 42",
                                      "False False False"], checks


def test_config_and_a_silent_magic_turn_checkpoints_on(
        env: dict[str, str], kernels: list[tuple[Any, Any]], tmp_path: Path) -> None:
    # IPython config at start-up: every kernel checkpoints, to the configured directory.
    configured = start_kernel_in(None, env=env, extra_arguments=[
        "--InteractiveShellApp.extensions=meno_jupyter", "--MemCheckpoint.on_load=True",
        f"--MemCheckpoint.directory={tmp_path / 'configured'}", "--MemCheckpoint.max_size=1G"])
    kernels.append(configured)
    ok(configured, "answer = 41 + 1")
    status = ok(configured, "%memcheckpoint status --wait")
    assert f"in {tmp_path / 'configured'} (size cap 953.7 MiB)" in status, status
    assert "answer" in status
    # A front end's button runs its magics silently (no run-cell hooks for that cell).
    silent = start_kernel_in(None, env=env)
    kernels.append(silent)
    reply, text = execute(*silent, "%load_ext meno_jupyter\n%memcheckpoint on", silent=True)
    assert reply["status"] == "ok", text
    ok(silent, "question = 'six times seven'")
    assert "question" in ok(silent, "%memcheckpoint status --wait")


def test_the_tutorial_runs_in_a_cgroup_kernel(env: dict[str, str]) -> None:
    require_memory_cgroup()
    notebook, kills = run_tutorial_in(LIMIT, "09_checkpoints.ipynb", env)
    assert kills == 0
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    texts = ["".join(out.get("text", "") + out.get("data", {}).get("text/plain", "")
                     for out in cell.outputs) for cell in code]
    assert not [out for cell in code for out in cell.outputs if out.output_type == "error"]
    assert "a generator: where it stopped cannot be saved" in texts[2]
    assert "last checkpoint after cell [4]" in texts[3]  # `total` made, nothing rewritten
    assert texts[4].endswith("False")
    assert "restored 9 variables" in texts[5] and "not restored: a generator" in texts[5]
    assert "'when': datetime64[" in texts[6] and "(20000, 384) float32 120.0" in texts[6]
    assert "nothing restored: --list" in texts[7]
    assert "embeddings        ndarray           29.3 MiB  as after cell [2]" in texts[7]


def test_with_the_guard_a_stopped_cell_is_no_death_and_the_checkpoint_goes_on(
        env: dict[str, str], kernels: list[tuple[Any, Any]]) -> None:
    require_memory_cgroup()
    with MemoryCgroup(LIMIT) as cgroup:
        kernel = start_kernel_in(cgroup, env=env)
        kernels.append(kernel)
        ok(kernel, "%load_ext meno_jupyter\n%memguard on\n%memcheckpoint on\n"
                   "import numpy as np\nkeep = np.arange(5_000_000)")
        assert "last checkpoint after cell [1]" in ok(kernel, "%memcheckpoint status --wait")
        reply, text = execute(*kernel, "chunks = []\nwhile True:\n"
                                       "    chunks.append(np.ones(2**22))", 180)
        assert reply["ename"] == "MemoryGuardError", text
        ok(kernel, "del chunks\nafter = int(keep[-1])")
        status = ok(kernel, "%memcheckpoint status --wait")
        assert "\nafter  int" in status and "chunks" not in status, status
        assert cgroup.oom_kills() == 0


def test_a_bad_setting_leaves_checkpoints_off_and_the_extension_loaded(
        env: dict[str, str], kernels: list[tuple[Any, Any]]) -> None:
    kernel = start_kernel_in(None, env=env, extra_arguments=[
        "--InteractiveShellApp.extensions=meno_jupyter", "--MemCheckpoint.on_load=True",
        "--MemCheckpoint.max_size=lots", "--MemGuard.on_load=True", "--MemGuard.at=7"])
    kernels.append(kernel)
    assert ok(kernel, "%memcheckpoint").startswith("checkpoints off")
    assert ok(kernel, "%memguard status").startswith("memory guard off")  # at=7: also off
