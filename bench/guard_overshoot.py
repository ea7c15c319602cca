"""How far past its level a growing cell gets before the memory guard stops it.

A process in a real 600 MiB memory cgroup grows in steps (``np.ones`` of 5, 20 or 50 MiB)
until it is stopped; the cgroup's own high-water mark minus the level is the overshoot.
Side by side: the guard's thread (layer 1 alone; its polling adapts to the margin and the
rate of growth, and reads with the GIL held) and the usual watchdog (a thread polling
psutil's RSS every 100 ms, raising the same way). What the margin below the limit must
cover is the largest overshoot. Needs root and a writable memory cgroup. Run
``python bench/guard_overshoot.py``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.cgrouphelp import MemoryCgroup, why_no_memory_cgroup

LIMIT = 600 * 2**20
AT = 0.6
MIB = 2**20

CHILD = """
import sys, threading, time
import numpy as np
from meno_jupyter.core.guard import MemoryGuard, MemoryGuardError, _set_async_exc
step, tool = int(sys.argv[1]), sys.argv[2]
level = int({limit} * {at})
if tool == "meno":
    guard = MemoryGuard(at={at}, limit_allocations=False)
    guard.start()
    guard.cell_started()
else:
    import psutil
    main = threading.main_thread().ident
    def watch():
        me = psutil.Process()
        while True:
            time.sleep(0.1)
            if me.memory_info().rss > level:
                _set_async_exc(main, MemoryGuardError)
                return
    threading.Thread(target=watch, daemon=True).start()
time.sleep(0.2)
chunks = []
try:
    for _ in range(400):
        chunks.append(np.ones(step * 2**20 // 8))
    print("not stopped")
except MemoryGuardError:
    print("stopped")
"""


def overshoot_mib(tool: str, step_mib: int, script: Path) -> float | None:
    """Run one growing process; return its overshoot in MiB, or None when it was killed."""
    with MemoryCgroup(LIMIT) as cgroup:
        read_end, write_end = os.pipe()
        # The child waits on the pipe until it has been moved into the cgroup.
        process = subprocess.Popen(
            [sys.executable, "-c", f"import os, runpy, sys; os.read({read_end}, 1); "
             f"sys.argv = ['child', '{step_mib}', '{tool}']; runpy.run_path({str(script)!r})"],
            pass_fds=(read_end,), stdout=subprocess.PIPE, text=True)
        cgroup.add(process.pid)
        os.write(write_end, b"go")
        output, _ = process.communicate(timeout=120)
        os.close(read_end)
        os.close(write_end)
        if process.returncode != 0 or output.strip() != "stopped":
            return None
        name = "memory.max_usage_in_bytes" if cgroup.version == "v1" else "memory.peak"
        peak = int((cgroup.path / name).read_text())
    return (peak - LIMIT * AT) / MIB


def main() -> None:
    """Print the overshoot of each tool for each step size."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=8)
    args = parser.parse_args()
    reason = why_no_memory_cgroup()
    if reason is not None:
        sys.exit(f"needs a writable memory cgroup: {reason}")
    with tempfile.TemporaryDirectory() as folder:
        script = Path(folder) / "grow.py"  # a file outside the libraries: user code
        script.write_text(CHILD.format(limit=LIMIT, at=AT))
        print(f"overshoot past a level of {AT:.0%} of {LIMIT // MIB} MiB, MiB "
              f"({args.runs} runs each; 'killed' = ended by the OOM killer)")
        print(f"{'tool':<34}{'step':>6}{'median':>8}{'max':>6}{'killed':>8}")
        results: dict[tuple[str, int], float] = {}
        for step in (5, 20, 50):
            for tool, label in (("meno", "meno guard thread"),
                                ("watchdog", "psutil watchdog, 100 ms")):
                found = [overshoot_mib(tool, step, script) for _ in range(args.runs)]
                stopped = [value for value in found if value is not None]
                median = statistics.median(stopped) if stopped else float("nan")
                worst = max(stopped) if stopped else float("nan")
                results[tool, step] = worst
                print(f"{label:<34}{step:>6}{median:>8.0f}{worst:>6.0f}"
                      f"{len(found) - len(stopped):>8}")
        for step in (5, 20, 50):
            ratio = results["watchdog", step] / max(results["meno", step], 1.0)
            print(f"step {step} MiB: the watchdog's worst overshoot is {ratio:.1f}x meno's")


if __name__ == "__main__":
    main()
