"""The float MiniLM (torch) against the int8 one (ONNX Runtime), side by side in one run.

Both run as ``ChunkedEmbedder`` runs them, in their own encoder process, on the same real
held-out corpus (Debian's one-paragraph package descriptions from the apt lists, or the
standard library's docstrings), in chunks of 1,000 at batch 32. Each model gets ``--rounds``
fresh workers, alternating, so a busy machine slows both alike. Printed per model: the
worker's start-up (model loading), docs/s while encoding, the worker's peak memory (its
VmHWM) and its RSS after the last chunk; then the int8 model's cosine to the float rows
(mean and the worst document), the k-means agreement of the two sets of rows (NMI, k = 20,
beside the float rows' agreement with themselves under another seed),
and the ratios the issue asks for (worker peak ≤ 0.60x, pace ≥ 1.5x). Last, the seconds to
the first chunk of a cold ``embed`` call and of the next one, which finds the worker warm.

Run ``python bench/encoder.py [--docs 5000] [--corpus debian|docstrings]``.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np


def texts_of(corpus: str, n_docs: int) -> list[str]:
    """The first ``n_docs`` texts of the corpus."""
    from meno_jupyter.topics.datasets import debian_descriptions, docstring_corpus

    frame = debian_descriptions() if corpus == "debian" else docstring_corpus()
    if len(frame) < n_docs:
        raise SystemExit(f"the {corpus} corpus has {len(frame):,} texts, fewer than {n_docs:,}")
    return list(frame["text"].iloc[:n_docs])


def one_run(spec: str | None, texts: list[str]) -> dict[str, Any]:
    """Start a worker, encode ``texts`` chunk by chunk, read its peak, stop it."""
    from meno_jupyter.core.memory import read_hwm
    from meno_jupyter.topics.encoders import WorkerEncoder

    started = time.perf_counter()
    encoder = WorkerEncoder(spec)
    start_s = time.perf_counter() - started
    started = time.perf_counter()
    rows = np.concatenate([encoder.encode(texts[i:i + 1000], 32)
                           for i in range(0, len(texts), 1000)])
    encode_s = time.perf_counter() - started
    result = {"start_s": start_s, "docs_per_s": len(texts) / encode_s,
              "peak": read_hwm(encoder.pid) or 0, "rss": encoder.rss_bytes, "rows": rows}
    encoder.close()
    return result


def first_chunk_s(embedder: Any, texts: list[str], folder: str) -> float:
    """Seconds from ``embed`` to its first finished chunk."""
    started = time.perf_counter()
    reached: list[float] = []
    embedder.embed(texts, folder, overwrite=True,
                   on_chunk=lambda *_: reached.append(time.perf_counter() - started))
    return reached[0]


def warm_start(texts: list[str]) -> None:
    """A first ``embed`` (cold: the worker loads the model) against the next (warm)."""
    import tempfile

    from meno_jupyter.topics import ChunkedEmbedder

    print("first chunk of 100 texts, a cold call then the next call (warm worker):")
    for name, quantize in (("float MiniLM", False), ("int8 MiniLM", True)):
        embedder = ChunkedEmbedder(quantize=quantize, chunk_size=100, progress=False)
        with tempfile.TemporaryDirectory() as folder:
            cold = first_chunk_s(embedder, texts[:100], f"{folder}/a")
            warm = first_chunk_s(embedder, texts[100:200], f"{folder}/b")
        embedder.close()
        print(f"  {name:14} cold {cold:5.2f} s, warm {warm:5.2f} s ({cold / warm:.0f}x)")


def main() -> None:
    from sklearn.cluster import KMeans
    from sklearn.metrics import normalized_mutual_info_score

    from meno_jupyter.core.memory import format_bytes
    from meno_jupyter.topics._worker import prepare_model
    from meno_jupyter.topics.quantized import QUANTIZED_MODEL

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=5_000)
    parser.add_argument("--corpus", choices=("debian", "docstrings"), default="debian")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    texts = texts_of(args.corpus, args.docs)
    prepare_model(QUANTIZED_MODEL, verbose=True)
    models = {"float MiniLM (torch)": None, "int8 MiniLM (onnxruntime)": QUANTIZED_MODEL}
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in models}
    for _ in range(args.rounds):
        for name, spec in models.items():
            runs[name].append(one_run(spec, texts))
    print(f"{len(texts):,} {args.corpus} texts, chunks of 1,000 at batch 32, "
          f"{args.rounds} fresh workers each (median)")
    print(f"{'':28}{'start':>8}{'docs/s':>9}{'worker peak':>13}{'RSS after':>11}")
    summary = {}
    for name, results in runs.items():
        summary[name] = {key: float(np.median([r[key] for r in results]))
                         for key in ("start_s", "docs_per_s", "peak", "rss")}
        row = summary[name]
        print(f"{name:28}{row['start_s']:7.1f}s{row['docs_per_s']:9.0f}"
              f"{format_bytes(int(row['peak'])):>13}{format_bytes(int(row['rss'])):>11}")
    exact, quantized = (runs[name][0]["rows"] for name in models)
    cosine = (exact * quantized).sum(axis=1) / (
        np.linalg.norm(exact, axis=1) * np.linalg.norm(quantized, axis=1))
    labels = [KMeans(20, n_init=4, random_state=0).fit_predict(rows)
              for rows in (exact, quantized)]
    # k-means is not stable itself: the float rows with another seed are the floor.
    reseeded = KMeans(20, n_init=4, random_state=1).fit_predict(exact)
    float_row, int8_row = summary.values()
    print(f"cosine int8 → float: mean {cosine.mean():.4f}, worst {cosine.min():.4f}, "
          f"{int((cosine < 0.99).sum())} below 0.99")
    print(f"k-means (k=20) agreement of the two: NMI {normalized_mutual_info_score(*labels):.3f}"
          f" (float with another seed: {normalized_mutual_info_score(labels[0], reseeded):.3f})")
    print(f"ratios int8/float: worker peak {int8_row['peak'] / float_row['peak']:.2f}x "
          f"(goal ≤ 0.60x), pace {int8_row['docs_per_s'] / float_row['docs_per_s']:.2f}x "
          f"(goal ≥ 1.5x), start-up {int8_row['start_s'] / float_row['start_s']:.2f}x")
    warm_start(texts)


if __name__ == "__main__":
    main()
