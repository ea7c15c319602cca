"""``TopicExplorer``: BERTopic on a stored embedding matrix, with one memory timeline.

The kernel never imports BERTopic (which imports torch): the fit runs stage by stage in a
spawned topic process that memory-maps the store; the kernel keeps the topic of each
document, the topic table and the figures, and samples the memory of its whole process
tree (kernel, encoder, topic process) for the timeline.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator, Mapping, Sequence, Sized
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from meno_jupyter.core.cleanup import give_back_freed_memory
from meno_jupyter.core.errors import check_count
from meno_jupyter.core.live import LiveFeed, LiveSample
from meno_jupyter.core.memory import format_bytes
from meno_jupyter.core.rendering import text_table
from meno_jupyter.topics._process import WorkerProcess
from meno_jupyter.topics.documents import Documents
from meno_jupyter.topics.embedder import ChunkedEmbedder
from meno_jupyter.topics.recommend import store_precision
from meno_jupyter.topics.store import DOCS_FILE

if TYPE_CHECKING:
    import pandas as pd

SESSION_FILE = "session.json"
MODEL_DIR = "model"
NUMBA_CACHE = Path.home() / ".cache" / "meno-jupyter" / "numba"


@dataclass(frozen=True)
class Stage:
    """One stage of the pipeline, in Unix time."""

    name: str
    start: float
    end: float

    @property
    def duration_s(self) -> float:
        """Seconds the stage took."""
        return self.end - self.start


@dataclass(frozen=True)
class StageTimeline:
    """Memory of the process tree across the pipeline, with a band per stage.

    Attributes
    ----------
    tree_rss : tuple of int
        Kernel RSS plus every descendant's (encoder, topic process, their workers).
    """

    times: tuple[float, ...]
    kernel_rss: tuple[int, ...]
    tree_rss: tuple[int, ...]
    stages: tuple[Stage, ...]

    def peak(self, stage: Stage | None = None, tree: bool = True) -> int:
        """Highest sampled RSS (of the tree, or the kernel alone) overall or in a stage."""
        series = self.tree_rss if tree else self.kernel_rss
        values = [v for t, v in zip(self.times, series, strict=True)
                  if stage is None or stage.start <= t <= stage.end + 0.25]
        return max(values, default=0)

    def rows(self) -> list[tuple[str, str, str, str]]:
        """(stage, seconds, peak of the tree, peak of the kernel) per stage."""
        return [(s.name, f"{s.duration_s:.1f}", format_bytes(self.peak(s)),
                 format_bytes(self.peak(s, tree=False))) for s in self.stages]

    def figure_spec(self, height: int = 320) -> dict[str, Any]:
        """Return the timeline as a plotly spec: tree and kernel RSS, a band per stage."""
        from meno_jupyter.display.figures import stage_timeline_spec

        return stage_timeline_spec(self, height)

    def __str__(self) -> str:
        return text_table(("stage", "seconds", "peak (tree)", "peak (kernel)"), self.rows())

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        from meno_jupyter.display.figures import figure_bundle

        return figure_bundle(self.figure_spec(), str(self))


@dataclass(frozen=True)
class PlotlyFigure:
    """A plotly figure spec that notebooks draw (plotly's mimetype, HTML, text)."""

    spec: dict[str, Any]
    title: str

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        from meno_jupyter.display.figures import figure_bundle

        return figure_bundle(self.spec, self.title)


@dataclass(frozen=True)
class UpdateReport:
    """What ``update`` did to the topics.

    Attributes
    ----------
    stability : float
        Share of the earlier documents that kept their topic.
    word_overlap : float
        Mean Jaccard overlap of the top words of each topic, before and after.
    """

    new_docs: int
    stability: float
    word_overlap: float
    timeline: StageTimeline

    def __str__(self) -> str:
        return (f"{self.new_docs:,} documents added; {100 * self.stability:.1f} % of the "
                f"earlier ones kept their topic; top words overlap "
                f"{100 * self.word_overlap:.1f} %\n{self.timeline}")

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        from meno_jupyter.display.figures import figure_bundle

        return figure_bundle(self.timeline.figure_spec(), str(self))


def _word_overlap(before: list[dict[str, Any]], after: list[dict[str, Any]]) -> float:
    old = {row["topic"]: set(row["words"]) for row in before if row["topic"] >= 0}
    new = {row["topic"]: set(row["words"]) for row in after if row["topic"] >= 0}
    shared = [t for t in old if t in new and (old[t] | new[t])]
    if not shared:
        return 0.0
    return sum(len(old[t] & new[t]) / len(old[t] | new[t]) for t in shared) / len(shared)


class _Recorder:
    """Sample the process tree while stages run; collect the topic process's stages."""

    def __init__(self) -> None:
        self.samples: list[LiveSample] = []
        self.stages: list[Stage] = []
        self._feed = LiveFeed()

    def __enter__(self) -> _Recorder:
        self._subscription = self._feed.subscribe(self.samples.append, 0.2)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._subscription.close()

    def follow(self, process: WorkerProcess, doing: str
               ) -> tuple[list[int], list[dict[str, Any]]]:
        """Record stages until the process reports the fitted topics."""
        reply = self.until(process, doing, "fitted")
        return reply[1], reply[2]

    def until(self, process: WorkerProcess, doing: str, answer: str) -> tuple[Any, ...]:
        """Record stages until the process sends ``answer``; return that reply."""
        while True:
            reply = process.receive(doing)
            if reply[0] == "stage":
                self.stages.append(Stage(reply[1], reply[2], reply[3]))
            elif reply[0] == answer:
                return reply

    def timeline(self) -> StageTimeline:
        """Return the samples and stages as a timeline."""
        samples = self.samples
        return StageTimeline(
            tuple(s.timestamp for s in samples), tuple(s.rss_bytes for s in samples),
            tuple(s.rss_bytes + s.children_bytes for s in samples), tuple(self.stages))


class TopicProcessError(RuntimeError):
    """The topic process failed or died; the embedding store is untouched."""


def _start_topic_process(store_dir: Path) -> WorkerProcess:
    from meno_jupyter.topics._fit_worker import serve

    return _spawn(serve, (str(store_dir),), name="meno-topics", label="the topic process")


def _spawn(target: Any, args: tuple[Any, ...], *, name: str, label: str) -> WorkerProcess:
    NUMBA_CACHE.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("NUMBA_CACHE_DIR", str(NUMBA_CACHE))  # compile once per machine
    return WorkerProcess(target, args, name=name, label=label, error=TopicProcessError)


def _cluster_apart(store_dir: Path, settings: dict[str, Any], recorder: _Recorder
                   ) -> list[int]:
    """Reduce and cluster in a process of their own, gone before the topics are represented.

    UMAP and numba stay ~400 MiB in a process that used them; BERTopic then adds its own
    in the topic process. Apart, the tree holds one or the other, never both.
    """
    from meno_jupyter.topics._fit_worker import serve_clusters

    process = _spawn(serve_clusters, (str(store_dir), settings), name="meno-clusters",
                     label="the clustering process")
    try:
        labels: list[int] = recorder.until(process, "reducing and clustering",
                                           "clustered")[1]
    finally:
        process.close()
    return labels


def _text_array(texts: list[str]) -> Any:
    """Return ``texts`` as an Arrow array built from its buffers.

    ``pyarrow.array`` on a list imports pandas to check its items (~50 MiB a kernel that
    reads its corpus from a file would otherwise never hold).
    """
    import numpy as np
    import pyarrow as pa

    encoded = [text.encode() for text in texts]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    np.cumsum([len(text) for text in encoded], out=offsets[1:])
    return pa.LargeStringArray.from_buffers(len(encoded), pa.py_buffer(offsets),
                                            pa.py_buffer(b"".join(encoded)))


class TopicExplorer:
    """Topics of a corpus: embed (resumably), fit BERTopic stage by stage, explore.

    Parameters
    ----------
    docs : list of str, pandas Series or path
        The corpus (a CSV/TSV/Parquet/JSON Lines file needs ``text_column``).
    store_dir : path
        Where the embeddings (and the session's files) live.
    embedder : ChunkedEmbedder, optional
        Default: the packaged MiniLM at the recommended precision (float16; int8 for a
        list or Series whose float16 store would pass 2 GiB).
    min_topic_size, n_neighbors, n_components, seed
        BERTopic's defaults; UMAP's seed fixed so fits repeat (its layout then runs on
        one core; ``seed=None`` uses every core, and fits no longer repeat).
    mode : {"default", "online"}
        ``default``: UMAP, HDBSCAN (one core: its workers doubled memory), c-TF-IDF.
        ``online``: chunk by chunk with flat memory: MiniBatchKMeans on the embeddings
        themselves (``n_topics`` clusters; default ``n_docs // 200`` within 5..50) and
        an online c-TF-IDF.

    Examples
    --------
    ::

        explorer = TopicExplorer(df["text"], "topics/")
        explorer.fit()                 # the memory timeline, a band per stage
        explorer.topic_table()
        explorer.visualize("barchart")
        explorer.save("topics/session")
    """

    def __init__(
        self,
        docs: Any,
        store_dir: str | os.PathLike[str],
        *,
        text_column: str | None = None,
        embedder: ChunkedEmbedder | None = None,
        min_topic_size: int = 10,
        n_neighbors: int = 15,
        n_components: int = 5,
        seed: int | None = 42,
        core_dist_n_jobs: int = 1,
        mode: str = "default",
        n_topics: int | None = None,
    ) -> None:
        check_count(min_topic_size, minimum=2, name="min_topic_size")
        if mode not in ("default", "online"):
            raise ValueError(f"mode is 'default' or 'online', got {mode!r}")
        if n_topics is not None and n_topics < 2:
            raise ValueError(f"n_topics must be at least 2, got {n_topics}")
        self.documents = Documents(docs, text_column)
        self.store_dir = Path(store_dir)
        self.embedder = embedder or ChunkedEmbedder(precision=store_precision(
            len(docs) if isinstance(docs, Sized) and not isinstance(docs, str) else 0))
        self.settings = {"min_topic_size": min_topic_size, "n_neighbors": n_neighbors,
                         "n_components": n_components, "seed": seed,
                         "core_dist_n_jobs": core_dist_n_jobs, "mode": mode,
                         "n_topics": n_topics}
        self.topics: list[int] | None = None
        self.table: list[dict[str, Any]] | None = None
        self.timeline: StageTimeline | None = None
        self._process: WorkerProcess | None = None
        self._updates: list[tuple[Path, Documents]] = []

    # ------------------------------------------------------------------ fitting

    @staticmethod
    def _write_docs(documents: Documents, store_dir: Path) -> None:
        """Keep the texts beside the store (the topic process reads them; so does load)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = store_dir / DOCS_FILE
        tmp = path.with_name(f".{path.name}.tmp")
        schema = pa.schema([("text", pa.large_string())])
        with pq.ParquetWriter(tmp, schema) as writer:
            for batch in documents.batches(10_000):
                writer.write_batch(pa.RecordBatch.from_arrays([_text_array(batch)],
                                                              schema=schema))
        os.replace(tmp, path)
        # Arrow's pool and malloc keep what reading and writing the texts used (~25 MiB
        # at 20k documents), which the kernel would otherwise hold through the fit.
        give_back_freed_memory()

    def fit(self) -> StageTimeline:
        """Embed what is not embedded yet, then fit; return the memory timeline by stage."""
        with _Recorder() as recorder:
            start = time.time()
            self.embedder.embed(self.documents, self.store_dir)
            self._write_docs(self.documents, self.store_dir)
            recorder.stages.append(Stage("embed", start, time.time()))
            self.close()
            self._updates = []
            settings: dict[str, Any] = dict(self.settings)
            if settings["mode"] != "online":
                settings["labels"] = _cluster_apart(self.store_dir, settings, recorder)
            self._process = _start_topic_process(self.store_dir)
            self._process.send("fit", settings)
            try:
                self.topics, self.table = recorder.follow(self._process, "fitting")
            except KeyboardInterrupt:  # stop the fit too, not only the wait for it
                self.close()
                raise
        self.timeline = recorder.timeline()
        return self.timeline

    def update(self, new_docs: Any, *, text_column: str | None = None) -> UpdateReport:
        """Add documents to an online fit; report how stable the earlier topics stayed.

        The new documents are embedded into their own store (beside the first), the model
        learns from their chunks, and every document is assigned again.
        """
        if self.settings["mode"] != "online":
            raise ValueError("update() adds documents to an online fit: make the explorer "
                             "with mode='online' (a default fit is refitted: fit() on the "
                             "larger corpus)")
        before_topics, before_table = self._fitted()
        process = self._require_process()
        documents = Documents(new_docs, text_column)
        target = self.store_dir / "updates" / f"{len(self._updates) + 1:03d}"
        with _Recorder() as recorder:
            start = time.time()
            self.embedder.embed(documents, target)
            self._write_docs(documents, target)
            recorder.stages.append(Stage("embed", start, time.time()))
            process.send("update", str(target), [*self._store_paths(), str(target)],
                         self.settings["seed"])
            self.topics, self.table = recorder.follow(process, "updating")
        self._updates.append((target, documents))
        kept = sum(a == b for a, b in zip(before_topics, self.topics, strict=False))
        return UpdateReport(
            new_docs=len(self.topics) - len(before_topics),
            stability=kept / len(before_topics),
            word_overlap=_word_overlap(before_table, self.table),
            timeline=recorder.timeline(),
        )

    def _fitted(self) -> tuple[list[int], list[dict[str, Any]]]:
        if self.topics is None or self.table is None:
            raise RuntimeError("fit() (or TopicExplorer.load) first")
        return self.topics, self.table

    def _check_topics(self, ids: set[int]) -> None:
        """Raise KeyError naming any of ``ids`` that is not a topic."""
        known = {row["topic"] for row in self._fitted()[1]}
        if unknown := sorted(ids - known):
            named = unknown[0] if len(unknown) == 1 else unknown
            raise KeyError(f"no topic {named}; the topics are {sorted(known)}")

    def _store_paths(self) -> list[str]:
        """Return the first store and the update stores, in document order."""
        return [str(self.store_dir), *(str(folder) for folder, _ in self._updates)]

    def _ask(self, doing: str, *message: Any) -> pd.DataFrame:
        """Send a request that changes the topics; keep and return the new table."""
        process = self._require_process()
        process.send(*message)
        self.topics, self.table = process.receive(doing)[1:3]
        return self.topic_table()

    # ------------------------------------------------------------------ exploring

    def topic_table(self) -> pd.DataFrame:
        """Return the topics: id, size, name, top words, representative documents."""
        import pandas as pd

        table: pd.DataFrame = pd.DataFrame(self._fitted()[1])
        return table

    def documents_of(self, topic: int, limit: int = 10) -> list[str]:
        """Return up to ``limit`` documents assigned to ``topic`` (-1: the outliers)."""
        self._check_topics({topic})
        found = []
        for text, assigned in zip(self._texts(), self._fitted()[0], strict=False):
            if assigned == topic:
                found.append(text)
                if len(found) >= limit:
                    break
        return found

    def merge_topics(self, *groups: Sequence[int]) -> pd.DataFrame:
        """Merge each group of topics into one; return the new topic table.

        Topic words are computed again over every document (the store is not touched).

        Examples
        --------
        ::

            explorer.merge_topics([1, 4])             # 4 joins 1
            explorer.merge_topics([1, 4], [2, 7, 9])  # two merges at once
        """
        self._fitted()
        merged: list[list[int]] = []
        seen: set[int] = set()
        for group in groups:
            ids = [int(topic) for topic in group]
            if len(set(ids)) < 2:
                raise ValueError(f"each group names at least two different topics, got {ids}")
            self._check_topics(set(ids))
            if again := sorted(seen & set(ids)):
                raise ValueError(f"topic {again} is in more than one group")
            seen.update(ids)
            merged.append(ids)
        if not merged:
            raise ValueError("name the topics to merge, e.g. merge_topics([1, 4])")
        return self._ask("merging topics", "merge", merged, self._store_paths())

    def rename_topics(self, labels: Mapping[int, str]) -> pd.DataFrame:
        """Give topics names of your own (``{3: "networking"}``); return the topic table."""
        self._check_topics(set(labels))
        if bad := [t for t, name in labels.items() if not isinstance(name, str) or not name]:
            raise ValueError(f"topic names must be non-empty strings (topics {bad})")
        return self._ask("renaming topics", "rename",
                         {int(t): name for t, name in labels.items()})

    def _texts(self) -> Iterator[str]:
        yield from self.documents
        for _, documents in self._updates:
            yield from documents

    def _require_process(self) -> WorkerProcess:
        if self._process is None:
            raise RuntimeError("the topic process is closed: fit() or load() again")
        return self._process

    def visualize(self, kind: str = "barchart", **kwargs: Any) -> PlotlyFigure:
        """Return one of BERTopic's figures (barchart, topics, hierarchy, heatmap) to show."""
        self._fitted()
        process = self._require_process()
        process.send("figure", kind, kwargs)
        spec = json.loads(process.receive(f"drawing the {kind} figure")[1])
        return PlotlyFigure(spec, f"BERTopic {kind} figure")

    # ------------------------------------------------------------------ saving

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Save the fitted model and the session (the store is referenced, not copied)."""
        topics, table = self._fitted()
        process = self._require_process()
        root = Path(path)
        root.mkdir(parents=True, exist_ok=True)
        process.send("save", str(root / MODEL_DIR))
        process.receive("saving the model")
        session = {"store_dir": str(self.store_dir.resolve()), "settings": self.settings,
                   "updates": [str(folder.resolve()) for folder, _ in self._updates],
                   "topics": topics, "table": table, "version": 1}
        (root / SESSION_FILE).write_text(json.dumps(session))
        return root

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> TopicExplorer:
        """Reopen a saved session (in a new kernel too): model, topics, store, texts."""
        root = Path(path)
        session_path = root / SESSION_FILE
        if not session_path.exists():
            raise FileNotFoundError(f"{root} holds no saved topic session ({SESSION_FILE})")
        session = json.loads(session_path.read_text())
        store_dir = Path(session["store_dir"])
        if not (store_dir / DOCS_FILE).exists():
            raise FileNotFoundError(f"the session's embedding store {store_dir} is gone")
        updates = [Path(folder) for folder in session.get("updates", [])]
        if gone := [str(folder) for folder in updates if not (folder / DOCS_FILE).exists()]:
            raise FileNotFoundError(f"the session's update stores {gone} are gone")
        explorer = cls(store_dir / DOCS_FILE, store_dir, text_column="text",
                       **session["settings"])
        explorer._updates = [(folder, Documents(folder / DOCS_FILE, "text"))
                             for folder in updates]
        explorer._process = _start_topic_process(store_dir)
        explorer._process.send("load", str(root / MODEL_DIR))
        reply = explorer._process.receive("loading the model")
        explorer.topics, explorer.table = reply[1], reply[2]
        return explorer

    def close(self) -> None:
        """Stop the topic process and the warm encoder (fit, load or update restart them)."""
        if self._process is not None:
            self._process.close()
            self._process = None
        self.embedder.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()
