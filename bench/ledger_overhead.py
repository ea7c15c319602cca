"""Fixed cost per cell of always-on recording: %memwatch against the peers, in one run.

Each tool runs in a fresh interpreter with a real IPython shell; a trivial cell (``x = 1``)
is run many times with the tool on and, interleaved, with it off, so the difference is the
tool's own cost per cell. "(+in-flight)" adds what a kernel also does: the cell in flight
written atomically to a small file at its start and removed at its end (for post-mortems).
The peers: ipython-memory-usage (``%imu_start``, a per-cell
hook) and memory_profiler's ``%memit`` (per cell, by hand). Also checks that the ledger
caught a 64 MiB spike exactly. Run ``make bench``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from typing import Any

CELLS = 300
# A plain shell has no connection file; give the in-flight record one, as a kernel would.
INFLIGHT_IN_A_TEMP_DIR = (
    "import pathlib, tempfile\n"
    "from meno_jupyter.magics._common import cell_in_flight\n"
    "cell_in_flight(get_ipython()).path = "
    "pathlib.Path(tempfile.mkdtemp()) / 'meno-inflight-kernel-bench.json'")
TOOLS: dict[str, dict[str, Any]] = {
    "meno %memwatch": {"setup": ["%load_ext meno_jupyter"], "on": "%memwatch on",
                       "off": "%memwatch off", "prefix": ""},
    # As in a kernel: the cell in flight is also written to its file for post-mortems.
    "meno %memwatch (+in-flight)": {
        "setup": ["%load_ext meno_jupyter", INFLIGHT_IN_A_TEMP_DIR], "on": "%memwatch on",
        "off": "%memwatch off", "prefix": ""},
    "ipython-memory-usage": {"setup": ["%load_ext ipython_memory_usage"], "on": "%imu_start",
                             "off": "%imu_stop", "prefix": ""},
    "memory_profiler %memit": {"setup": ["%load_ext memory_profiler"], "on": None, "off": None,
                               "prefix": "%%memit -q\n"},
}


def _cost_per_cell(shell: Any, spec: dict[str, Any], cells: int) -> tuple[float, float]:
    from IPython.utils.capture import capture_output

    def run(prefix: str) -> float:
        with capture_output():
            started = time.perf_counter()
            for _ in range(cells // 10):
                shell.run_cell(prefix + "x = 1", store_history=True)
            return (time.perf_counter() - started) / (cells // 10)

    on: list[float] = []
    off: list[float] = []
    for _ in range(10):  # interleaved, so drift hits both
        with capture_output():
            if spec["on"]:
                shell.run_cell(spec["on"])
        on.append(run(spec["prefix"]))
        with capture_output():
            if spec["off"]:
                shell.run_cell(spec["off"])
        off.append(run(""))
    return statistics.median(on), statistics.median(off)


def worker(tool: str, cells: int) -> None:
    from IPython.testing.globalipapp import start_ipython
    from IPython.utils.capture import capture_output

    spec = TOOLS[tool]
    shell = start_ipython()
    with capture_output():
        for line in spec["setup"]:
            shell.run_cell(line)
    on_s, off_s = _cost_per_cell(shell, spec, cells)
    spike = None
    if tool.startswith("meno"):
        import meno_jupyter

        with capture_output():
            shell.run_cell("%memwatch on")
            shell.run_cell("import mmap, numpy as np")
            shell.run_cell("m = mmap.mmap(-1, 64 * 2**20); v = np.frombuffer(m, np.uint8); "
                           "v[::4096] = 1; del v; m.close()", store_history=True)
        spike = float(meno_jupyter.ledger().iloc[-1].peak_increase)
    print(json.dumps({"on": on_s, "off": off_s, "spike": spike}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", choices=list(TOOLS))
    parser.add_argument("--cells", type=int, default=CELLS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.cells)
        return
    print(f"{'tool':26} {'per cell on':>12} {'per cell off':>13} {'cost/cell':>10} {'ratio':>7}")
    for tool in TOOLS:
        out = subprocess.run([sys.executable, __file__, "--worker", tool, "--cells",
                              str(args.cells)], capture_output=True, text=True, check=False)
        if out.returncode:
            print(f"{tool}: failed\n{out.stderr[-1500:]}")
            continue
        row = json.loads(out.stdout.strip().splitlines()[-1])
        cost = row["on"] - row["off"]
        print(f"{tool:26} {row['on'] * 1e3:10.3f}ms {row['off'] * 1e3:11.3f}ms "
              f"{cost * 1e3:8.3f}ms {row['on'] / row['off']:7.2f}")
        if row["spike"] is not None:
            print(f"{'':26} ledger's peak for a 64 MiB spike cell: {row['spike'] / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
