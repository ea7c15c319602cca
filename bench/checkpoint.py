"""What a checkpoint costs a notebook, against the ways others keep a namespace.

For namespaces of about 0.1, 1 and 4 GB (a numeric frame, a text column of a million
strings, an array), each way runs in a fresh interpreter and is timed as a kernel would
feel it:

- ``meno``: :class:`~meno_jupyter.core.checkpointer.Checkpointer` as ``%memcheckpoint``
  runs it: the pause of the cell that made the data (the fork), the time until the
  checkpoint is complete, the writer's own (copy-on-write) memory, then the pause and bytes
  written for a trivial cell and for a cell that only reads the frame; restoring against
  reading the same bytes raw;
- ``thread``: the same files written by a thread of the kernel instead of a forked child:
  the pause is nothing, but the kernel's own work runs slower while the thread pickles
  (measured: a pure-Python loop's speed during the write against before);
- ``pickle``: pickling the changed variables synchronously after the cell (what Kishu's
  ``post_run_cell`` does; Kishu itself is measured if it is installed);
- ``dill``: ``dill.dump_module`` of the namespace, synchronous (if dill is installed).

Run ``python bench/checkpoint.py`` (``--sizes 0.1,1`` for a quick look).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap

RUN = r"""
import gc, json, os, pickle, sys, tempfile, threading, time, types
from pathlib import Path
import numpy as np, pandas as pd
from meno_jupyter.core.checkpoint import restore, OBJECTS
from meno_jupyter.core.checkpointer import Checkpointer
from meno_jupyter.core.memory import process_own_bytes

how, gb, out = sys.argv[1], float(sys.argv[2]), Path(sys.argv[3])
rng = np.random.default_rng(0)
rows = int(gb * 1e9 * 0.7 / 24)
ns = {
    "frame": pd.DataFrame({"a": rng.random(rows), "b": rng.integers(0, 9, rows),
                           "c": rng.random(rows)}),
    "text": pd.Series([f"customer {i % 50_000}" for i in range(1_000_000)]),
    "emb": rng.random((int(gb * 1e9 * 0.3 / 4 / 384), 384)).astype(np.float32),
}
result = {"how": how, "gb": gb}

def loop_speed(seconds=0.3):
    n, end = 0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        n += 1
    return n / seconds

if how == "meno":
    cp = Checkpointer(out / "cp", notebook="bench", namespace=lambda: dict(ns))
    cp.cell_started(1, "make")
    t = time.perf_counter()
    cp.cell_finished(ns, 1, "make")
    result["pause_ms"] = (time.perf_counter() - t) * 1e3
    pid = cp._writer.pid
    own = 0
    while cp._writer is not None:
        try:
            own = max(own, process_own_bytes(pid))
        except (OSError, ValueError):
            pass
        time.sleep(0.02)
    cp.wait(600)
    result["complete_s"] = cp.last.duration_s + result["pause_ms"] / 1e3
    result["written_mb"] = cp.last.written_bytes / 1e6
    result["writer_own_mb"] = own / 1e6
    cp.cell_started(2, "print(1)")
    t = time.perf_counter(); started = cp.cell_finished(ns, 2, "print(1)")
    result["trivial_ms"] = (time.perf_counter() - t) * 1e3
    assert not started
    cp.cell_started(3, "frame.describe()")
    t = time.perf_counter(); cp.cell_finished(ns, 3, "frame.describe()")
    result["reading_ms"] = (time.perf_counter() - t) * 1e3
    cp.wait(600)
    result["reading_written_b"] = cp.last.written_bytes
    result["reading_s"] = cp.last.duration_s
    cp.close()
    del ns["frame"], ns["text"], ns["emb"]; gc.collect()
    files = [p for p in (out / "cp" / OBJECTS).iterdir()]
    raw = sum(p.stat().st_size for p in files)
    t = time.perf_counter()
    for p in files:
        with open(p, "rb") as f:
            buf = bytearray(p.stat().st_size); f.readinto(buf)
        del buf
    result["raw_read_s"] = time.perf_counter() - t
    back = {}
    t = time.perf_counter()
    restore(out / "cp", back)
    result["restore_s"] = time.perf_counter() - t
    result["restore_mb"] = raw / 1e6
elif how == "thread":
    before = loop_speed()
    done = threading.Event()
    def write():
        with open(out / "ns.pkl", "wb") as f:
            for name, value in ns.items():
                pickle.Pickler(f, protocol=5).dump(value)
        done.set()
    t = time.perf_counter()
    threading.Thread(target=write).start()
    result["pause_ms"] = (time.perf_counter() - t) * 1e3
    during = loop_speed()
    done.wait()
    result["complete_s"] = time.perf_counter() - t
    result["kernel_speed_during"] = during / before
elif how == "pickle":
    t = time.perf_counter()
    with open(out / "ns.pkl", "wb") as f:
        for value in ns.values():
            pickle.Pickler(f, protocol=5).dump(value)
    result["pause_ms"] = result["complete_s"] = (time.perf_counter() - t) * 1e3
    result["complete_s"] /= 1e3
elif how == "dill":
    import dill
    module = types.ModuleType("__main__")
    module.__dict__.update(ns)
    t = time.perf_counter()
    dill.dump_module(str(out / "ns.dill"), module=module)
    result["pause_ms"] = (time.perf_counter() - t) * 1e3
    result["complete_s"] = result["pause_ms"] / 1e3
print(json.dumps(result))
"""


def run(how: str, gb: float) -> dict[str, float] | None:
    with tempfile.TemporaryDirectory() as out:
        done = subprocess.run([sys.executable, "-c", textwrap.dedent(RUN), how, str(gb), out],
                              capture_output=True, text=True, check=False)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["?"])[-1]
        print(f"  {how} at {gb} GB did not run: {last}")
        return None
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def available(module: str) -> bool:
    return subprocess.run([sys.executable, "-c", f"import {module}"],
                          capture_output=True, check=False).returncode == 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="0.1,1,4", help="namespace sizes in GB")
    args = parser.parse_args()
    ways = ["meno", "thread", "pickle"] + (["dill"] if available("dill") else [])
    if not available("dill"):
        print("dill is not installed: dill.dump_module left out (pip install dill)")
    if not available("kishu"):
        print("Kishu is not installed: its synchronous post_run_cell pickling is measured as "
              "'pickle' (pip install kishu pulls the old `typing` backport and pins "
              "jupyter-ui-poll; kept out of this environment)")
    for gb in (float(s) for s in args.sizes.split(",")):
        print(f"\nnamespace of {gb} GB")
        results = {how: run(how, gb) for how in ways}
        meno = results.get("meno")
        print(f"{'way':8} {'cell pause':>12} {'complete':>10}  notes")
        for how, r in results.items():
            if r is None:
                continue
            notes = ""
            if how == "meno":
                notes = (f"writer's own memory {r['writer_own_mb']:.0f} MB; wrote "
                         f"{r['written_mb']:.0f} MB; trivial cell +{r['trivial_ms']:.2f} ms, "
                         f"0 B; a cell reading the frame +{r['reading_ms']:.1f} ms, "
                         f"{r['reading_written_b']:.0f} B written ({r['reading_s']:.1f} s "
                         f"in the background); restore {r['restore_s']:.2f} s vs raw read "
                         f"{r['raw_read_s']:.2f} s of {r['restore_mb']:.0f} MB "
                         f"({r['restore_s'] / max(r['raw_read_s'], 1e-9):.1f}x)")
            elif how == "thread":
                notes = (f"kernel's own Python ran at {r['kernel_speed_during']:.0%} of its "
                         "speed while the thread wrote")
            if meno and how != "meno":
                notes += f"  pause {r['pause_ms'] / max(meno['pause_ms'], 1e-9):.0f}x meno's"
            print(f"{how:8} {r['pause_ms']:>9.1f} ms {r['complete_s']:>8.1f} s  {notes}")


if __name__ == "__main__":
    main()
