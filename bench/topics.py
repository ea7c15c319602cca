"""Embedding a growing corpus: does memory stay flat? (the embedding half of the topics issue)

A real labelled corpus this machine has offline: the first paragraphs of the docstrings of
installed packages, labelled by package. For each size, a fresh process (the "kernel")
embeds the corpus with the packaged all-MiniLM-L6-v2 into a float16 store through
``ChunkedEmbedder`` (encoder in its worker process); we report the kernel's peak RSS
(its high-water mark), the encoder's largest RSS, time and documents per second.

Run: ``.venv/bin/python bench/topics.py [--sizes 1000 4000 10000]``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

PACKAGES = ("sklearn", "pandas", "numpy", "scipy", "IPython", "tornado", "traitlets",
            "jupyter_server", "email", "http", "xml", "logging", "asyncio", "unittest",
            "urllib", "pyarrow", "plotly", "psutil", "sqlite3", "json", "concurrent",
            "multiprocessing", "importlib", "distutils", "tkinter", "ctypes", "numba",
            "umap", "hdbscan", "transformers")

BUILD_CORPUS = """
import importlib, inspect, pkgutil, sys, warnings
import pandas as pd
warnings.simplefilter("ignore")
rows, seen = [], set()
for package in sys.argv[2].split(","):
    try:
        root = importlib.import_module(package)
    except Exception:
        continue
    names = [package] + sorted(m.name for m in pkgutil.walk_packages(
        getattr(root, "__path__", []), prefix=package + ".", onerror=lambda n: None)
        if "test" not in m.name and not m.name.endswith("__main__"))
    count = 0
    for name in names:
        try:
            module = importlib.import_module(name)
        except BaseException:
            continue
        for attr, value in sorted(vars(module).items()):
            if attr.startswith("_") or getattr(value, "__module__", None) != name:
                continue
            try:
                doc = inspect.getdoc(value) or ""
            except Exception:
                continue
            head = doc.split("\\n\\n")[0].replace("\\n", " ").strip()[:400]
            if len(head) >= 40 and head not in seen:
                seen.add(head)
                rows.append((head, package))
                count += 1
        if count >= 3000:
            break
pd.DataFrame(rows, columns=["text", "label"]).to_parquet(sys.argv[1])
print(len(rows))
"""

EMBED = """
import json, resource, sys, time
import pandas as pd
from meno_jupyter.topics import ChunkedEmbedder
texts = pd.read_parquet(sys.argv[1])["text"].iloc[: int(sys.argv[3])]
path = sys.argv[1] + ".subset.parquet"
texts.to_frame().to_parquet(path)
del texts
worker_peak = [0]
def note(store, index, encoder):
    worker_peak[0] = max(worker_peak[0], encoder.rss_bytes)
started = time.perf_counter()
store = ChunkedEmbedder(precision="float16", chunk_size=1000, progress=False).embed(
    path, sys.argv[2], text_column="text", on_chunk=note)
elapsed = time.perf_counter() - started
print(json.dumps({"docs": store.meta.n_docs, "seconds": elapsed,
                  "kernel_peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                  "encoder_peak": worker_peak[0], "disk": store.disk_bytes(),
                  "torch_in_kernel": "torch" in sys.modules}))
"""

MIB = 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 4000, 10000])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus.parquet"
        found = subprocess.run([sys.executable, "-c", textwrap.dedent(BUILD_CORPUS),
                                str(corpus), ",".join(PACKAGES)], capture_output=True,
                               text=True, check=True).stdout.split()[-1]
        print(f"corpus: {found} docstrings of {len(PACKAGES)} packages")
        print(f"{'docs':>7} {'time s':>8} {'docs/s':>7} {'kernel peak':>12} "
              f"{'encoder peak':>13} {'store on disk':>14} torch in kernel")
        results = []
        for size in args.sizes:
            if size > int(found):
                print(f"{size:>7} skipped: the corpus has {found} documents")
                continue
            done = subprocess.run(
                [sys.executable, "-c", textwrap.dedent(EMBED), str(corpus),
                 str(Path(tmp) / f"store-{size}"), str(size)],
                capture_output=True, text=True, check=True)
            result = json.loads(done.stdout.strip().splitlines()[-1])
            results.append(result)
            print(f"{result['docs']:>7} {result['seconds']:>8.1f} "
                  f"{result['docs'] / result['seconds']:>7.0f} "
                  f"{result['kernel_peak'] / MIB:>9.0f} MiB {result['encoder_peak'] / MIB:>10.0f}"
                  f" MiB {result['disk'] / MIB:>11.1f} MiB {result['torch_in_kernel']}")
        if len(results) >= 2:
            first, last = results[0], results[-1]
            print(f"\n{last['docs'] / first['docs']:.0f}x the documents: kernel peak "
                  f"{last['kernel_peak'] / first['kernel_peak']:.2f}x, encoder peak "
                  f"{last['encoder_peak'] / first['encoder_peak']:.2f}x (flat = 1.00x)")


if __name__ == "__main__":
    main()
