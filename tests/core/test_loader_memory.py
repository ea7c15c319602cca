"""The loader's memory, measured exactly (clear_refs + VmHWM) in a fresh interpreter per format.

Streaming stays flat whatever the file's size; ``read_optimized`` holds the result and little
more. Each file is written in pieces by the child, then the high-water mark is reset.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

LINUX = sys.platform.startswith("linux")
MIB = 2**20

WRITE = {
    # ~1.3 M rows of ints, floats, text, zero-padded codes, dates and booleans: ~90 MB of CSV.
    "csv": "piece.to_csv(path, mode='a', header=first, index=False)",
    "tsv": "piece.to_csv(path, mode='a', header=first, index=False, sep='\\t')",
    "jsonl": ("open(path, 'a').write(piece.to_json(orient='records', lines=True, "
              "date_format='iso'))"),
    "parquet": None,  # written whole by pyarrow, one row group per piece
    "feather": None,  # Arrow IPC, zstd-compressed record batches
    "xlsx": "piece.to_excel(path, index=False)",  # one piece: openpyxl writes slowly
}

CHILD = """
import gc, os, sys
import numpy as np, pandas as pd
from meno_jupyter.core.cleanup import trim_allocator
from meno_jupyter.core.loader import iter_optimized, read_optimized
from meno_jupyter.core.memory import PEAK_WATCH, read_rss

kind, path, pieces, rows = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
rng = np.random.default_rng(0)

def make(i, rows):
    n = np.arange(i * rows, (i + 1) * rows)
    return pd.DataFrame({
        "id": n, "score": rng.random(rows).round(4),
        "city": rng.choice(["Lyon", "Nice", "Brest"], rows),
        "zip": pd.Series(n % 99999).map("{:05d}".format), "flag": n % 3 == 0,
        "when": pd.Timestamp("2024-01-01") + pd.to_timedelta(n % 1000, unit="h"),
        "note": pd.Series(n).map("row {} of the file".format)})

def write(path, pieces, rows):
    if kind in ("parquet", "feather"):
        import pyarrow as pa, pyarrow.parquet as pq, pyarrow.ipc as ipc
        schema = pa.Schema.from_pandas(make(0, rows), preserve_index=False)
        if kind == "parquet":
            writer = pq.ParquetWriter(path, schema)
        else:
            writer = ipc.new_file(path, schema, options=ipc.IpcWriteOptions(compression="zstd"))
        for i in range(pieces):
            table = pa.Table.from_pandas(make(i, rows), schema=schema, preserve_index=False)
            writer.write_table(table) if kind == "parquet" else writer.write(table)
        writer.close()
        return
    for i in range(pieces):
        piece, first = make(i, rows), i == 0
        WRITE_LINE

# The libraries' code and pools are loaded once per process: a small file first, so that
# what is measured is what reading the large one adds.
small = os.path.join(os.path.dirname(path), "small-" + os.path.basename(path))
write(small, 1, 2000)
frame = read_optimized(small, progress=False)
for chunk in iter_optimized(small):
    pass
write(path, pieces, rows)
del frame, chunk
gc.collect(); trim_allocator()

start = read_rss(); token = PEAK_WATCH.open()
count = 0
for chunk in iter_optimized(path):
    count += len(chunk)
stream_peak = PEAK_WATCH.close(token) - start
assert count == pieces * rows, count
del chunk
gc.collect(); trim_allocator()

start = read_rss(); token = PEAK_WATCH.open()
frame = read_optimized(path, progress=False)
read_peak = PEAK_WATCH.close(token) - start
held = int(frame.memory_usage(deep=True).sum())
assert len(frame) == pieces * rows
pandas_peak = 0
if kind == "xlsx":  # what pandas' own reader takes, for comparison
    del frame
    gc.collect(); trim_allocator()
    start = read_rss(); token = PEAK_WATCH.open()
    whole = pd.read_excel(path)
    pandas_peak = PEAK_WATCH.close(token) - start
print(stream_peak, read_peak, held, os.path.getsize(path), pandas_peak)
"""


def measure(kind: str, tmp_path: Path, pieces: int, rows: int
            ) -> tuple[int, int, int, int, int]:
    write = WRITE[kind] or "pass"
    script = CHILD.replace("WRITE_LINE", write)
    path = tmp_path / f"data.{kind}"
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(script), kind, str(path),
                           str(pieces), str(rows)], capture_output=True, text=True,
                          timeout=600, check=False, cwd=Path(__file__).parents[2])
    assert done.returncode == 0, done.stderr[-3000:]
    stream, read, held, size, pandas_peak = map(int, done.stdout.split())
    return stream, read, held, size, pandas_peak


@pytest.mark.skipif(not LINUX, reason="the exact peak needs /proc/self/clear_refs")
@pytest.mark.parametrize(("kind", "pieces"), [("csv", 13), ("tsv", 6), ("jsonl", 4),
                                              ("parquet", 13), ("feather", 13)])
def test_streaming_is_flat_and_reading_holds_the_result(kind: str, pieces: int,
                                                        tmp_path: Path) -> None:
    stream, read, held, size, _ = measure(kind, tmp_path, pieces, 100_000)
    assert size > 20 * MIB or held > 40 * MIB  # well above the bounds below (zstd shrinks)
    assert stream <= 64 * MIB, f"{kind}: streaming peaked {stream / MIB:.0f} MiB above start"
    assert read <= held + 96 * MIB, (
        f"{kind}: read_optimized peaked {read / MIB:.0f} MiB for a {held / MIB:.0f} MiB frame")


@pytest.mark.skipif(not LINUX, reason="the exact peak needs /proc/self/clear_refs")
def test_excel_is_streamed_in_read_only_mode(tmp_path: Path) -> None:
    stream, read, held, _, pandas_peak = measure("xlsx", tmp_path, 1, 30_000)
    # pandas loads the whole workbook into openpyxl's cell objects first.
    assert stream * 2 < pandas_peak, (stream, pandas_peak)
    assert read <= held + 96 * MIB
