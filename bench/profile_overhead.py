"""%%memprofile against the un-profiled cell and the peer tools, side by side in one run.

Each tool runs in its own fresh interpreter with a real IPython shell, where every workload
runs ``--repeat`` times under the tool, each time paired with an un-profiled run of the same
cell in the same process (so the wall-time ratio compares like with like). Two workloads:

* ``dicts``: a cell that builds 2 million small dicts (allocation-heavy pure Python: the
  worst case for tracing tools). Its true peak increase is read from the kernel's
  high-water mark around the un-profiled run.
* ``spike``: keeps 100 MiB, then makes a 64 MiB temporary that lives ~40 ms. Truth: peak
  increase 164 MiB, of which 64 MiB is the spike above what the cell keeps. (With the spike
  before the kept block the peak would be 100 MiB and no peak figure could show the spike.)

* ``dicts-kept``: the same 2 million dicts, kept (what notebooks do). Tracing pays for
  every live allocation at the end of the cell: with ``del rows`` the end snapshot of
  tracemalloc is empty and cheap, which is why an earlier ``dicts``-only run showed
  ``--trace`` at a fraction of what users saw; this workload catches that gap.
* ``numpy-temp``: ``a`` (64 MiB) and a 64 MiB temporary made and freed inside one line.
  The tracing rows name the line holding the most at the peak: the temporary's, 64 MiB.
* ``function``: calls a function defined in an earlier cell that builds 100 MB of small
  objects in a list comprehension; the tracing rows must name that function's line.

``meno guard: %memguard on`` profiles nothing: it shows what the memory guard costs a cell.
``--trace`` uses memray when it is installed; the ``(tracemalloc)`` row hides memray to
show the fallback, and ``tracemalloc.start(16)`` is the bare tracer around the same cell.

Run ``make bench`` (installs memray, memory_profiler, ipython-memory-usage).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

MIB = 2**20
WORKLOADS = {
    "dicts": "rows = [{'id': i, 'value': i * 2} for i in range(2_000_000)]\ndel rows\n",
    "dicts-kept": "rows = [{'id': i, 'value': i * 2} for i in range(2_000_000)]\n",
    "numpy-temp": "a = np.ones(64 * 2**20 // 8)\nb = float((a * 2 + 1).sum())\n",
    "function": "built = build()\n",
    "spike": (
        "import numpy as np\n"
        "kept = np.ones(100 * 2**20 // 8)\n"
        "spike = np.ones(64 * 2**20 // 8); spike.sum(); spike.sum(); del spike\n"
    ),
}
# Defined in an earlier cell, as notebooks do.
WORKLOAD_SETUP = {"function": "def build():\n    return [bytes(1000) for _ in range(100_000)]\n"}
CLEANUP = "kept = rows = a = b = built = None\nimport gc; gc.collect()\n"
TRUTH_SPIKE_PEAK = 164 * MIB
TRUTH_SPIKE = 64 * MIB

TOOLS: dict[str, dict[str, Any]] = {
    "un-profiled": {"setup": [], "prefix": ""},
    "meno %%memprofile": {"setup": ["%load_ext meno_jupyter"],
                          "prefix": "%%memprofile -o _meno\n"},
    "meno %%memprofile (+plot)": {"setup": ["%load_ext meno_jupyter"],
                                  "prefix": "%%memprofile -o _meno\n", "rich": True},
    "meno %%memprofile --trace": {"setup": ["%load_ext meno_jupyter"],
                                  "prefix": "%%memprofile --trace -o _meno\n"},
    "meno --trace (tracemalloc)": {"setup": ["%load_ext meno_jupyter"], "hide_memray": True,
                                   "prefix": "%%memprofile --trace -o _meno\n"},
    "tracemalloc.start(16)": {"setup": ["import tracemalloc"], "prefix": "",
                              "on": "tracemalloc.start(16)", "off": "tracemalloc.stop()"},
    # The guard profiles nothing: only its cost is compared (its thread and the allocation
    # limit it keeps), against the un-profiled cell in the same process.
    "meno guard: %memguard on": {"setup": ["%load_ext meno_jupyter"], "prefix": "",
                                 "on": "%memguard on", "off": "%memguard off"},
    "memory_profiler %%memit": {"setup": ["%load_ext memory_profiler"],
                                "prefix": "%%memit -o -q\n"},
    "memray %%memray_flamegraph": {"setup": ["%load_ext memray"],
                                   "prefix": "%%memray_flamegraph\n"},
    "ipython-memory-usage": {"setup": ["%load_ext ipython_memory_usage"], "prefix": "",
                             "on": "%imu_start", "off": "%imu_stop"},
}
MEMRAY_PEAK = re.compile(r"Peak memory usage: ([\d.]+) (B|KB|MB|GB)")
MEMRAY_UNITS = {"B": 1, "KB": 2**10, "MB": 2**20, "GB": 2**30}
IMU_LINE = re.compile(r"used (-?[\d.]+) MiB RAM .*peaked (-?[\d.]+) MiB above final usage")


def _trim() -> None:
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _hwm_reset() -> None:
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")


def _hwm() -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM")


def _rss() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _reported(  # noqa: PLR0911 - one return per tool
    tool: str, shell: Any, result: Any, stdout: str
) -> tuple[float | None, float | None]:
    """Return (peak increase, kept delta) in bytes as the tool reports them."""
    if tool.startswith("meno guard"):
        return None, None
    if tool.startswith("meno"):
        prof = shell.user_ns["_meno"]
        return float(prof.peak_increase), float(prof.delta)
    if tool.startswith("memory_profiler"):
        memit = result.result
        return (max(memit.mem_usage) - memit.baseline) * MIB, None
    if tool.startswith("memray"):
        # memray deletes its capture after rendering; the flame graph states the peak.
        pages = sorted(Path("memray-results").glob("*/flamegraph.html"), key=os.path.getmtime)
        match = MEMRAY_PEAK.search(pages[-1].read_text())
        if match is None:
            return None, None
        return float(match.group(1)) * MEMRAY_UNITS[match.group(2)], None
    if tool == "ipython-memory-usage":
        match = IMU_LINE.search(stdout)
        if match is None:
            return None, None
        used, peaked = float(match.group(1)), float(match.group(2))
        return (used + peaked) * MIB, used * MIB
    return None, None


def _timed(shell: Any, cell: str) -> tuple[float, Any, str, int]:
    """Run a cell from a trimmed heap; return (seconds, result, stdout, true peak increase)."""
    from IPython.utils.capture import capture_output

    with capture_output():
        shell.run_cell(CLEANUP)
    _trim()
    start_rss = _rss()
    _hwm_reset()
    with capture_output() as captured:
        started = time.perf_counter()
        result = shell.run_cell(cell)
        elapsed = time.perf_counter() - started
    if not result.success:
        raise SystemExit(f"failed: {result.error_in_exec!r}\n{captured.stdout[-2000:]}")
    return elapsed, result, captured.stdout, _hwm() - start_rss


def worker(tool: str, name: str, repeat: int) -> None:
    from IPython.testing.globalipapp import start_ipython
    from IPython.utils.capture import capture_output

    os.chdir(tempfile.mkdtemp(prefix="meno-bench-"))
    spec = TOOLS[tool]
    if spec.get("hide_memray"):
        sys.modules["memray"] = None  # type: ignore[assignment]  # as if not installed
    shell = start_ipython()
    if spec.get("rich"):
        shell.display_formatter.active_types = [
            "text/plain", "text/html", "application/vnd.plotly.v1+json"]
    with capture_output():
        for line in spec["setup"]:
            shell.run_cell(line)
        shell.run_cell("import numpy as np\n" + CLEANUP)  # warm imports
        shell.run_cell(WORKLOAD_SETUP.get(name, ""))
    for cell in [WORKLOADS[name]]:
        row: dict[str, Any] = {"workload": name, "plain": [], "times": [], "peaks": [],
                               "kept": [], "truths": [], "tool_truths": [], "named": []}
        for _ in range(repeat):
            plain_s, _, _, truth = _timed(shell, cell)
            row["plain"].append(plain_s)
            row["truths"].append(truth)
            if tool == "un-profiled":
                continue
            if "on" in spec:
                with capture_output():
                    shell.run_cell(spec["on"])
            tool_s, result, stdout, tool_truth = _timed(shell, spec["prefix"] + cell)
            row["tool_truths"].append(tool_truth)
            if "off" in spec:
                with capture_output():
                    shell.run_cell(spec["off"])
            peak, delta = _reported(tool, shell, result, stdout)
            prof = shell.user_ns.get("_meno")
            if "--trace" in tool and prof is not None and prof.top_lines:
                top = prof.top_lines[0]
                row["named"].append(f"{top.line.source[:34]} {top.peak_bytes / MIB:.1f} MiB "
                                    f"[{prof.tracer}]")
            row["times"].append(tool_s)
            row["peaks"].append(peak)
            row["kept"].append(delta)
        print(json.dumps(row), flush=True)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value / MIB:7.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--worker", choices=list(TOOLS))
    parser.add_argument("--workload", choices=list(WORKLOADS))
    parser.add_argument("--tools", nargs="*", default=list(TOOLS))
    parser.add_argument("--workloads", nargs="*", default=list(WORKLOADS), choices=list(WORKLOADS))
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.workload, args.repeat)
        return
    # One fresh process per tool and workload: the heap one run leaves must not shape the next.
    results: dict[str, dict[str, Any]] = {}
    for tool in args.tools:
        for name in args.workloads:
            print(f"running {tool} on {name} ...", file=sys.stderr, flush=True)
            out = subprocess.run(
                [sys.executable, __file__, "--worker", tool, "--workload", name,
                 "--repeat", str(args.repeat)],
                capture_output=True, text=True, check=False,
            )
            if out.returncode:
                print(f"  {tool} failed:\n{out.stderr[-2000:]}", file=sys.stderr)
                continue
            rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
            results.setdefault(tool, {}).update({row["workload"]: row for row in rows})
    base = results.get("un-profiled", {})
    for name in args.workloads:
        truth = float(statistics.median(base[name]["truths"])) if name in base else None
        if name == "spike":
            truth = TRUTH_SPIKE_PEAK
        print(f"\n== {name}: true peak increase {_fmt(truth)} MiB"
              + (", spike above kept 64.0 MiB" if name == "spike" else "")
              + (f"; un-profiled cell {statistics.median(base[name]['plain']):.3f} s"
                 if name in base else ""))
        print(f"{'tool':30} {'peak incr. MiB median (min..max)':>34} {'|err| MiB':>9} "
              + ("{:>24} ".format("spike MiB (every run)") if name == "spike" else "")
              + f"{'wall s':>8} {'x un-profiled':>13}")
        for tool, rows in results.items():
            if tool == "un-profiled":
                continue
            if name not in rows:
                continue
            row = rows[name]
            peaks = [p for p in row["peaks"] if p is not None]
            # Error against the true peak increase of the very same run (kernel high-water mark).
            errors = [abs(p - t) for p, t in zip(row["peaks"], row["tool_truths"], strict=True)
                      if p is not None]
            error_text = f"{statistics.median(errors) / MIB:9.1f}" if errors else f"{'n/a':>9}"
            wall = statistics.median(row["times"])
            ratio = wall / statistics.median(row["plain"])
            peak_text = "not reported"
            if peaks:
                peak_text = (f"{_fmt(statistics.median(peaks))} "
                             f"({_fmt(min(peaks)).strip()}..{_fmt(max(peaks)).strip()})")
            spike_text = ""
            if name == "spike":
                spikes = [p - k for p, k in zip(row["peaks"], row["kept"], strict=True)
                          if p is not None and k is not None]
                spike_text = "{:>24} ".format(
                    ",".join(f"{s / MIB:.0f}" for s in spikes) if spikes else "n/a")
            named = f"  named: {row['named'][-1]}" if row.get("named") else ""
            print(f"{tool:30} {peak_text:>34} {error_text} {spike_text}{wall:8.3f} "
                  f"{ratio:13.3f}{named}")


if __name__ == "__main__":
    main()
