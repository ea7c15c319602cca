"""Embedding on a Dask cluster: one process, then 1 and 2 workers, side by side.

The same corpus (docstrings of the standard library, repeated to size) is embedded into a
float16 store three ways, for the static model and for MiniLM, with a fixed batch size:

* ``ChunkedEmbedder()``: one encoder process beside the kernel (the single-machine path);
* ``ChunkedEmbedder(client=...)`` on a ``LocalCluster`` of 1 single-threaded worker;
* the same on 2 single-threaded workers.

Printed: docs/s of each, the 2-worker speed-up over 1 worker and over the single process,
whether every store holds the same rows bit for bit, and the kernel's own RSS growth (the
kernel never loads the model). Timings exclude starting the cluster and loading the model
(each run is warmed on a small corpus first). On a machine with C cores, the single
process uses torch's threads on all of them while a worker uses one: 2 workers on a 2-core
machine is the fair comparison with the single process.

Run ``python bench/dask_embed.py`` (needs the ``[dask,topics]`` extras).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from meno_jupyter.core.memory import format_bytes, read_rss


def corpus(n_docs: int) -> list[str]:
    """``n_docs`` texts: the docstring corpus, numbered copies past its end."""
    from meno_jupyter.topics import docstring_corpus

    base = docstring_corpus()["text"].tolist()
    return [base[i % len(base)] + ("" if i < len(base) else f" ({i // len(base)})")
            for i in range(n_docs)]


def timed_embed(texts: list[str], model: Any, folder: Path, client: Any = None
                ) -> tuple[float, np.ndarray[Any, Any]]:
    """Embed ``texts`` (after a warm-up run); return seconds and the rows."""
    from meno_jupyter.topics import ChunkedEmbedder

    settings = {"chunk_size": 200, "batch_size": 32, "precision": "float16",
                "progress": False, "client": client}
    embedder = ChunkedEmbedder(model, **settings)
    embedder.embed(texts[:64], folder / "warm", overwrite=True)
    started = time.perf_counter()
    store = embedder.embed(texts, folder / "store", overwrite=True)
    seconds = time.perf_counter() - started
    return seconds, np.array(store.embeddings())


def main() -> None:
    """Print one row per model and way, then the ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minilm-docs", type=int, default=2_000)
    parser.add_argument("--static-docs", type=int, default=40_000)
    args = parser.parse_args()
    from distributed import Client, LocalCluster

    from meno_jupyter.topics.static import distill_static_model

    distill_static_model(verbose=False)
    kernel_before = read_rss()
    print(f"{'model':<8} {'docs':>7} {'way':<16} {'seconds':>8} {'docs/s':>8}")
    for model, n_docs in (("static", args.static_docs), (None, args.minilm_docs)):
        texts = corpus(n_docs)
        name = model or "minilm"
        results: dict[str, tuple[float, np.ndarray[Any, Any]]] = {}
        with tempfile.TemporaryDirectory() as tmp:
            results["one process"] = timed_embed(texts, model, Path(tmp) / "one")
            for workers in (1, 2):
                with LocalCluster(n_workers=workers, processes=True, threads_per_worker=1,
                                  dashboard_address=":0") as cluster, Client(cluster) as client:
                    results[f"{workers} worker(s)"] = timed_embed(
                        texts, model, Path(tmp) / f"w{workers}", client)
        for way, (seconds, _) in results.items():
            print(f"{name:<8} {n_docs:>7,} {way:<16} {seconds:>8.1f} {n_docs / seconds:>8.0f}")
        one, single, two = (results[k][0] for k in ("1 worker(s)", "one process",
                                                     "2 worker(s)"))
        same = all(np.array_equal(rows, results["one process"][1])
                   for _, rows in results.values())
        print(f"{name:<8} 2 workers vs 1 worker: {one / two:.2f}x faster; vs the single "
              f"process: {single / two:.2f}x; rows identical in all three: {same}")
    print(f"kernel RSS growth over all runs: {format_bytes(read_rss() - kernel_before)}")


if __name__ == "__main__":
    main()
