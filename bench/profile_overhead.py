"""%%memprofile against the un-profiled cell and the peer tools, side by side in one run.

Each tool runs in its own fresh interpreter with a real IPython shell; every workload is
run ``--repeat`` times (median reported). Two workloads:

* ``dicts``: a cell that builds 2 million small dicts (allocation-heavy pure Python: the
  worst case for tracing tools). Its true peak increase is read from the kernel's
  high-water mark around the un-profiled run.
* ``spike``: keeps 100 MiB, then makes a 64 MiB temporary that lives ~40 ms. Truth: peak
  increase 164 MiB, of which 64 MiB is the spike above what the cell keeps. (With the spike
  before the kept block the peak would be 100 MiB and no peak figure could show the spike.)

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
    "spike": (
        "import numpy as np\n"
        "kept = np.ones(100 * 2**20 // 8)\n"
        "spike = np.ones(64 * 2**20 // 8); spike.sum(); spike.sum(); del spike\n"
    ),
}
CLEANUP = "kept = None\nimport gc; gc.collect()\n"
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
    "memory_profiler %%memit": {"setup": ["%load_ext memory_profiler"],
                                "prefix": "%%memit -o -q\n"},
    "memray %%memray_flamegraph": {"setup": ["%load_ext memray"],
                                   "prefix": "%%memray_flamegraph\n"},
    "ipython-memory-usage": {"setup": ["%load_ext ipython_memory_usage", "%imu_start"],
                             "prefix": ""},
}
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


def _reported(tool: str, shell: Any, result: Any, stdout: str) -> tuple[float | None, float | None]:
    """Return (peak increase, kept delta) in bytes as the tool reports them."""
    if tool.startswith("meno"):
        prof = shell.user_ns["_meno"]
        return float(prof.peak_increase), float(prof.delta)
    if tool.startswith("memory_profiler"):
        memit = result.result
        return (max(memit.mem_usage) - memit.baseline) * MIB, None
    if tool.startswith("memray"):
        from memray import FileReader

        dumps = sorted(Path("memray-results").glob("*/memray.dump"), key=os.path.getmtime)
        with FileReader(dumps[-1]) as reader:
            return float(reader.metadata.peak_memory), None
    if tool == "ipython-memory-usage":
        match = IMU_LINE.search(stdout)
        if match is None:
            return None, None
        used, peaked = float(match.group(1)), float(match.group(2))
        return (used + peaked) * MIB, used * MIB
    return None, None


def worker(tool: str, repeat: int) -> None:
    from IPython.testing.globalipapp import start_ipython
    from IPython.utils.capture import capture_output

    os.chdir(tempfile.mkdtemp(prefix="meno-bench-"))
    spec = TOOLS[tool]
    shell = start_ipython()
    if spec.get("rich"):
        shell.display_formatter.active_types = [
            "text/plain", "text/html", "application/vnd.plotly.v1+json"]
    with capture_output():
        for line in spec["setup"]:
            shell.run_cell(line)
        shell.run_cell(WORKLOADS["spike"] + WORKLOADS["dicts"] + CLEANUP)  # warm imports
    for name, cell in WORKLOADS.items():
        times: list[float] = []
        peaks: list[float | None] = []
        kept: list[float | None] = []
        truths: list[int] = []
        for _ in range(repeat):
            with capture_output():
                shell.run_cell(CLEANUP)
            _trim()
            start_rss = _rss()
            _hwm_reset()
            with capture_output() as captured:
                started = time.perf_counter()
                result = shell.run_cell(spec["prefix"] + cell)
                times.append(time.perf_counter() - started)
            truths.append(_hwm() - start_rss)
            if not result.success:
                raise SystemExit(f"{tool} failed on {name}: {result.error_in_exec!r}")
            peak, delta = _reported(tool, shell, result, captured.stdout)
            peaks.append(peak)
            kept.append(delta)
        print(json.dumps({"workload": name, "times": times, "peaks": peaks, "kept": kept,
                          "truths": truths}), flush=True)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value / MIB:7.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--worker", choices=list(TOOLS))
    parser.add_argument("--tools", nargs="*", default=list(TOOLS))
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.repeat)
        return
    results: dict[str, dict[str, Any]] = {}
    for tool in args.tools:
        print(f"running {tool} ...", file=sys.stderr, flush=True)
        out = subprocess.run(
            [sys.executable, __file__, "--worker", tool, "--repeat", str(args.repeat)],
            capture_output=True, text=True, check=False,
        )
        if out.returncode:
            print(f"  {tool} failed:\n{out.stderr[-2000:]}", file=sys.stderr)
            continue
        rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
        results[tool] = {row["workload"]: row for row in rows}
    base = results.get("un-profiled", {})
    for name in WORKLOADS:
        base_time = statistics.median(base[name]["times"]) if name in base else None
        truth = statistics.median(base[name]["truths"]) if name in base else None
        if name == "spike":
            truth = TRUTH_SPIKE_PEAK
        print(f"\n== {name}: true peak increase {_fmt(truth)} MiB"
              + (", spike above kept 64.0 MiB" if name == "spike" else ""))
        print(f"{'tool':30} {'peak incr. MiB (median, min..max)':>36} "
              + ("{:>16} ".format("spike MiB (all)") if name == "spike" else "")
              + f"{'wall s':>8} {'x un-profiled':>13}")
        for tool, rows in results.items():
            row = rows[name]
            peaks = [p for p in row["peaks"] if p is not None]
            wall = statistics.median(row["times"])
            ratio = f"{wall / base_time:13.3f}" if base_time else f"{'n/a':>13}"
            if peaks:
                peak_text = (f"{_fmt(statistics.median(peaks))} "
                             f"({_fmt(min(peaks)).strip()}..{_fmt(max(peaks)).strip()})")
            else:
                peak_text = "not reported" if tool != "un-profiled" else "-"
            spike_text = ""
            if name == "spike":
                spikes = [p - k for p, k in zip(row["peaks"], row["kept"], strict=True)
                          if p is not None and k is not None]
                spike_text = "{:>16} ".format(
                    ",".join(f"{s / MIB:.1f}" for s in spikes) if spikes else "n/a")
            print(f"{tool:30} {peak_text:>36} {spike_text}{wall:8.3f} {ratio}")


if __name__ == "__main__":
    main()
