"""Reading a CSV larger than it should take in memory: meno's loader against its peers.

Each reader runs in a fresh interpreter; its cost is the exact peak (``clear_refs`` +
``VmHWM``) above the interpreter's start, after the libraries are loaded, and its wall time:

- ``pd.read_csv(path)``: the whole frame at once;
- ``pd.read_csv(path, chunksize=100_000)``: pandas' chunks, each dropped (streaming);
- polars' streaming scan (``pl.scan_csv(path).collect(engine="streaming")``), if installed;
- ``meno iter_optimized(path)``: streaming, chunks dropped;
- ``meno read_optimized(path)``: the whole file as one optimized frame.

Two files: one of about ``--gb`` GB (ints, floats, text, zero-padded codes, datetimes,
booleans) and one of ``--rows`` rows of five narrow columns. The AI-Playground seed's claim
("10 M rows: read_csv 8.2 GB and out of memory, chunked 450 MB") is read against the 10 M-row
file: the ratio of read_csv's peak to the streaming peak is what it says. Run
``python bench/loader.py`` (``--gb 0.2 --rows 2000000`` for a quick look).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

MIB = 2**20

WRITE = """
import sys
import numpy as np, pandas as pd
path, kind, target = sys.argv[1], sys.argv[2], float(sys.argv[3])
rng = np.random.default_rng(0)
rows, written, first, i = 200_000, 0, True, 0
while (written < target * 1e9) if kind == "wide" else (written < target):
    n = np.arange(i * rows, (i + 1) * rows)
    if kind == "wide":
        frame = pd.DataFrame({
            "id": n, "score": rng.random(rows).round(5),
            "city": rng.choice(["Lyon", "Nice", "Brest", "Paris"], rows),
            "zip": pd.Series(n % 99999).map("{:05d}".format), "flag": n % 3 == 0,
            "when": pd.Timestamp("2024-01-01") + pd.to_timedelta(n % 5000, unit="min"),
            "note": pd.Series(n % 50_000).map("customer note {}".format)})
    else:
        frame = pd.DataFrame({"id": n, "store": n % 40, "qty": n % 7,
                              "price": (n % 1000) / 100, "ok": n % 2 == 0})
    frame.to_csv(path, mode="a", header=first, index=False)
    first, i = False, i + 1
    written = (Path(path).stat().st_size if kind == "wide" else written + rows)
"""

READ = """
import gc, itertools, sys, time
import pandas as pd
from meno_jupyter.core.memory import PEAK_WATCH, read_rss
from meno_jupyter.core.loader import iter_optimized, read_optimized
path, how = sys.argv[1], sys.argv[2]
if how.startswith("polars"):
    import polars as pl

def run(path):
    rows = 0
    if how == "read_csv":
        rows = len(pd.read_csv(path))
    elif how == "pandas chunked":
        for chunk in pd.read_csv(path, chunksize=100_000):
            rows += len(chunk)
    elif how == "polars streaming":
        rows = pl.scan_csv(path).collect(engine="streaming").height
    elif how == "meno iter_optimized":
        for chunk in iter_optimized(path):
            rows += len(chunk)
    else:
        frame = read_optimized(path, progress=False)
        rows = len(frame)
        held[0] = int(frame.memory_usage(deep=True).sum())
    return rows

held = [0]  # read_optimized's frame, to set its peak beside

# Each reader's code is loaded first, on the file's first 2,000 lines: the peak below is
# what the file itself costs.
small = path + ".head.csv"
with open(path) as source, open(small, "w") as head:
    head.writelines(itertools.islice(source, 2001))
run(small)
gc.collect()
start = read_rss(); token = PEAK_WATCH.open(); began = time.perf_counter()
rows = run(path)
seconds = time.perf_counter() - began
print(rows, PEAK_WATCH.close(token) - start, seconds, held[0])
"""

READERS = ["read_csv", "pandas chunked", "polars streaming", "meno iter_optimized",
           "meno read_optimized"]


def write(path: Path, kind: str, target: float) -> None:
    subprocess.run([sys.executable, "-c", "from pathlib import Path\n" + WRITE, str(path),
                    kind, str(target)], check=True)


def measure(path: Path, how: str) -> tuple[int, int, float, int] | None:
    if how.startswith("polars"):
        try:
            __import__("polars")
        except ImportError:
            return None
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(READ), str(path), how],
                          capture_output=True, text=True, check=False,
                          cwd=Path(__file__).resolve().parent.parent)
    if done.returncode:
        print(f"  {how}: failed ({done.stderr.strip().splitlines()[-1][:120]})")
        return None
    rows, peak, seconds, frame = done.stdout.split()
    return int(rows), int(peak), float(seconds), int(frame)


def table(path: Path, title: str) -> dict[str, tuple[int, int, float, int]]:
    print(f"\n{title}: {path.stat().st_size / 2**30:.2f} GiB")
    print(f"  {'reader':<22}{'rows':>12}{'peak above start':>20}{'seconds':>10}")
    found = {}
    for how in READERS:
        result = measure(path, how)
        if result is None:
            print(f"  {how:<22}{'(not installed)':>12}")
            continue
        rows, peak, seconds, frame = result
        found[how] = result
        print(f"  {how:<22}{rows:>12,}{peak / MIB:>16,.0f} MiB{seconds:>10.1f}")
        if frame:
            print(f"  {'':<22}(its frame: {frame / MIB:,.0f} MiB; the peak is the frame + "
                  f"{(peak - frame) / MIB:,.0f} MiB, the issue's bound + 96 MiB)")
    base = found.get("read_csv")
    if base is not None:
        for how in ("pandas chunked", "meno iter_optimized", "meno read_optimized"):
            if how in found:
                print(f"  read_csv peak / {how} peak: {base[1] / max(found[how][1], 1):.1f}x; "
                      f"time {found[how][2] / base[2]:.2f}x read_csv's")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gb", type=float, default=1.0, help="size of the wide file, GB")
    parser.add_argument("--rows", type=int, default=10_000_000, help="rows of the narrow file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        wide = Path(directory) / "wide.csv"
        narrow = Path(directory) / "narrow.csv"
        write(wide, "wide", args.gb)
        table(wide, f"a {args.gb:g} GB CSV of 7 mixed columns")
        wide.unlink()
        write(narrow, "narrow", args.rows)
        found = table(narrow, f"a {args.rows:,}-row CSV of 5 narrow columns")
        stream = found.get("meno iter_optimized")
        whole = found.get("read_csv")
        if stream and whole:
            print(f"\nAI-Playground seed: read_csv 8.2 GB vs chunked 450 MB for 10 M rows "
                  f"(18x). Here: read_csv {whole[1] / MIB:,.0f} MiB vs meno streaming "
                  f"{stream[1] / MIB:,.0f} MiB ({whole[1] / max(stream[1], 1):.0f}x).")


if __name__ == "__main__":
    main()
