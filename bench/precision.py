"""The seeds' precision table, measured: stores of float32, float16 and int8 rows, memory-mapped
or read into RAM, from the float MiniLM and from its int8 (quantized) form.

10,000 real documents (Debian's one-line package descriptions, the labelled corpus of
``bench/topics.py``). Each embedding runs ``ChunkedEmbedder`` in a fresh interpreter (the
"kernel") whose whole process tree is sampled every 0.1 s from outside. Per row: the kernel's
peak (its VmHWM), the encoder worker's peak (its VmHWM), the tree's peak, the store's bytes on
disk, the time, then what the rows cost the kernel once embedded — read into RAM as float32
(``as_float32()``) or memory-mapped (``embeddings()``, every page read once: file pages the
kernel can drop, no anonymous memory) — and each document's cosine to the float MiniLM's
float32 row (mean and worst). Last, topic agreement: our ``TopicExplorer`` (the product's
fit, default settings) on each store under several seeds, each fit's topics compared (NMI)
with the float32 rows' fit under the same seed, beside the float32 rows' fits under two
different seeds compared with each other (how well a fit repeats itself). The seeds' published
figures are printed beside ours.

Run ``python bench/precision.py [--docs 10000] [--seeds 42 7 1 3]``.
"""

from __future__ import annotations

import argparse
import tempfile
from itertools import combinations
from pathlib import Path

from topics import MIB, build_corpus, python, run_sampled, subset  # bench/topics.py

# The seeds' table for 10,000 documents (memory, and time relative to float32).
SEED_CLAIMS = {"float32": "100 MB, 1.0x", "float16": "50 MB", "memory-mapped": "30 MB",
               "int8": "10 MB", "fully quantized": "5 MB, up to 1.4x"}

EMBED = """
import json, sys, time
import numpy as np
from meno_jupyter.core.memory import read_hwm
from meno_jupyter.topics import ChunkedEmbedder
from meno_jupyter.topics.store import EmbeddingStore

def rss_parts():
    with open("/proc/self/status") as status:
        fields = dict(line.split(":", 1) for line in status)
    return tuple(int(fields[name].split()[0]) * 1024 for name in ("RssAnon", "RssFile"))

def main():
    corpus, folder, quantize, precision, reference = sys.argv[1:6]
    encoder_peak = [0]
    def note(store, index, encoder):
        pid = getattr(encoder, "pid", None)
        encoder_peak[0] = max(encoder_peak[0], (read_hwm(pid) if pid else 0) or 0)
    embedder = ChunkedEmbedder(quantize=quantize == "1", precision=precision, chunk_size=1000,
                               batch_size=32, progress=False, keep_warm_s=0)
    started = time.perf_counter()
    store = embedder.embed(corpus, folder, text_column="text", on_chunk=note)
    seconds = time.perf_counter() - started
    kernel_peak = read_hwm()
    embedder.close()
    # What the rows cost once embedded: a float32 copy, or a mapping read through once.
    anon, _ = rss_parts()
    rows = np.array(store.as_float32())  # a copy in RAM (float32 stores give their mapping)
    in_ram = rss_parts()[0] - anon
    anon, file = rss_parts()
    mapped = store.embeddings()
    for start in range(0, len(mapped), 1000):
        np.abs(mapped[start:start + 1000]).sum(dtype=np.float64)
    mapped_anon, mapped_file = (after - before for after, before in zip(rss_parts(), (anon, file)))
    result = {"seconds": seconds, "kernel_peak": kernel_peak, "encoder_peak": encoder_peak[0],
              "disk": store.disk_bytes(), "in_ram": in_ram, "mapped_anon": mapped_anon,
              "mapped_file": mapped_file, "torch_in_kernel": "torch" in sys.modules}
    if reference != "-":
        exact = EmbeddingStore.open(reference).as_float32()
        cosine = (rows * exact).sum(axis=1) / (
            np.linalg.norm(rows, axis=1) * np.linalg.norm(exact, axis=1))
        result.update(cosine_mean=float(cosine.mean()), cosine_min=float(cosine.min()))
    print(json.dumps(result))

if __name__ == "__main__":
    main()
"""

FIT = """
import json, sys, time
from meno_jupyter.topics import ChunkedEmbedder, TopicExplorer
from meno_jupyter.topics.quantized import QUANTIZED_MODEL_NAME
from meno_jupyter.topics.store import EmbeddingStore
corpus, folder, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
meta = EmbeddingStore.open(folder).meta  # the embedder that wrote it: nothing is embedded again
embedder = ChunkedEmbedder(quantize=meta.model == QUANTIZED_MODEL_NAME, precision=meta.precision,
                           chunk_size=meta.chunk_size, progress=False, keep_warm_s=0)
explorer = TopicExplorer(corpus, folder, text_column="text", embedder=embedder, seed=seed)
started = time.perf_counter()
explorer.fit()
explorer.close()
print(json.dumps({"seconds": time.perf_counter() - started, "topics": explorer.topics}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=10_000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 7, 1, 3],
                        help="the fit's seeds (default: 42 7 1 3)")
    args = parser.parse_args()
    if len(set(args.seeds)) < 2:
        parser.error("--seeds needs two different seeds at least (a fit against itself)")
    tmp = Path(tempfile.mkdtemp(prefix="meno-precision-"))
    corpus = tmp / "corpus.parquet"
    build_corpus("debian", corpus)
    part = subset(corpus, args.docs, tmp)
    runs = [(quantize, precision) for quantize in ("0", "1")
            for precision in ("float32", "float16", "int8")]
    reference = tmp / "store-0-float32"
    results = {}
    for quantize, precision in runs:
        store = tmp / f"store-{quantize}-{precision}"
        compared_to = "-" if store == reference else reference
        results[(quantize, precision)] = run_sampled(python(
            EMBED, part, store, quantize, precision, compared_to))
    print(f"{args.docs:,} Debian descriptions, chunks of 1,000 at batch 32, fresh processes\n")
    print(f"{'encoder':8} {'store':8} {'kernel peak':>11} {'encoder peak':>12} "
          f"{'tree peak':>9} {'store':>8} {'time s':>7} {'rows in RAM':>11} "
          f"{'mapped: anon / file':>19} {'cos mean':>8} {'cos min':>8}")
    base_time = float(results[("0", "float32")][0]["seconds"])  # type: ignore[arg-type]
    for (quantize, precision), (result, tree) in results.items():
        encoder = "int8" if quantize == "1" else "float"
        cosine = (f"{result['cosine_mean']:8.4f} {result['cosine_min']:8.4f}"
                  if "cosine_mean" in result else f"{'1':>8} {'1':>8}")
        print(f"{encoder:8} {precision:8} {int(result['kernel_peak']) / MIB:8.0f} MiB "
              f"{int(result['encoder_peak']) / MIB:9.0f} MiB {tree / MIB:6.0f} MiB "
              f"{int(result['disk']) / MIB:5.1f} MiB {float(result['seconds']):7.1f} "
              f"{int(result['in_ram']) / MIB:8.1f} MiB "
              f"{int(result['mapped_anon']) / MIB:6.1f} / "
              f"{int(result['mapped_file']) / MIB:5.1f} MiB {cosine}"
              f"   ({float(result['seconds']) / base_time:.2f}x the time)")
    print("\nthe seeds' claims for 10,000 documents: "
          + "; ".join(f"{k} {v}" for k, v in SEED_CLAIMS.items()))
    print("(here a row of 384 numbers is 1.5 KiB in float32: 10,000 rows are 14.6 MiB, "
          "not 100 MB)")

    agreement(part, tmp, list(dict.fromkeys(args.seeds)))  # each seed once


def agreement(part: Path, tmp: Path, seeds: list[int]) -> None:
    """Fit each store under every seed; print NMI with the float32 rows' fit, same seed."""
    import numpy as np
    from sklearn.metrics import normalized_mutual_info_score

    stores = {"float encoder, float32 store": "store-0-float32",
              "float encoder, float16 store": "store-0-float16",
              "float encoder, int8 store": "store-0-int8",
              "int8 encoder, float32 store": "store-1-float32"}
    print(f"\ntopic agreement: TopicExplorer's fit (default settings), seeds "
          f"{' '.join(map(str, seeds))}; NMI with the float32 rows' fit")
    topics: dict[tuple[str, int], list[int]] = {}
    for name, store in stores.items():
        seconds = []
        for seed in seeds:
            result, _ = run_sampled(python(FIT, part, tmp / store, seed))
            topics[(name, seed)] = result["topics"]  # type: ignore[assignment]
            seconds.append(float(result["seconds"]))  # type: ignore[arg-type]
        counts = [len(set(topics[(name, seed)]) - {-1}) for seed in seeds]
        print(f"  fitted {name}: {np.mean(seconds):.1f} s a fit, {min(counts)}-{max(counts)} "
              "topics")
    reference = next(iter(stores))

    def summary(label: str, pairs: list[tuple[tuple[str, int], tuple[str, int]]]) -> None:
        values = [normalized_mutual_info_score(topics[a], topics[b]) for a, b in pairs]
        print(f"  {label:52} mean {np.mean(values):.3f}  min {min(values):.3f}  "
              f"max {max(values):.3f}  ({len(values)} pairs)")

    summary("float32 rows, another seed (a fit against itself)",
            [((reference, a), (reference, b)) for a, b in combinations(seeds, 2)])
    for name in list(stores)[1:]:
        summary(f"{name}, same seed", [((reference, seed), (name, seed)) for seed in seeds])
    summary("int8 encoder, float32 store, another seed",
            [((reference, a), ("int8 encoder, float32 store", b))
             for a in seeds for b in seeds if a != b])


if __name__ == "__main__":
    main()
