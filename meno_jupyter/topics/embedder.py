"""``ChunkedEmbedder``: documents to an on-disk store, chunk by chunk, in a worker process.

Memory stays flat as the corpus grows: the kernel holds one chunk of texts at a time and
the embeddings go straight to a memory-mapped file; the encoder (and torch) live in a
separate process that trims its heap after every chunk. Stop it any time (Ctrl-C, a
killed kernel): running it again on the same documents resumes where it stopped.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from meno_jupyter.core.batching import adaptive_batch_size
from meno_jupyter.core.errors import check_count
from meno_jupyter.core.memory import format_bytes, read_rss
from meno_jupyter.topics._format import format_duration
from meno_jupyter.topics._worker import PACKAGED_ALIAS, PACKAGED_MODEL, prepare_model
from meno_jupyter.topics.cache import EmbeddingCache, encode_with_cache
from meno_jupyter.topics.documents import Documents
from meno_jupyter.topics.encoders import (
    DEFAULT_KEEP_WARM_S,
    Encoder,
    EncoderError,
    InProcessEncoder,
    WorkerEncoder,
    warm_encoders,
)
from meno_jupyter.topics.quantized import QUANTIZED_MODEL, QUANTIZED_MODEL_NAME
from meno_jupyter.topics.static import (
    DISTILL_SECONDS,
    STATIC_MODEL,
    STATIC_MODEL_NAME,
    STATIC_SPEEDUP,
    static_model_ready,
)
from meno_jupyter.topics.store import (
    EmbeddingStore,
    Precision,
    StoreError,
    StoreMeta,
    check_precision,
    hash_documents,
)

if TYPE_CHECKING:
    from meno_jupyter.topics.recommend import Recommendation

DEFAULT_CHUNK_SIZE = 1_000
DEFAULT_BATCH_SIZE = 32  # MiniLM on 2 cores: 64 and 128 were slower and took 1.4-1.6 GB
OFFER_STATIC_ABOVE_S = 20 * 60.0  # MiniLM would take longer than this: mention "static"
ChunkCallback = Callable[[EmbeddingStore, int, "Encoder"], object]


def model_name(model: Any) -> str:
    """Return the name a store records for ``model``."""
    if model is None:
        return PACKAGED_MODEL
    if model == STATIC_MODEL:
        return STATIC_MODEL_NAME
    if model == QUANTIZED_MODEL:
        return QUANTIZED_MODEL_NAME
    if isinstance(model, str | os.PathLike):
        return str(model)
    kind = type(model)
    return str(getattr(model, "name", None) or f"{kind.__module__}.{kind.__qualname__}")


class ChunkedEmbedder:
    """Embed a corpus into an :class:`EmbeddingStore`, chunk by chunk, resumably.

    Parameters
    ----------
    model : None, str or object
        None or ``"minilm"``: the packaged all-MiniLM-L6-v2 (offline). ``"static"``: a
        model2vec model distilled once from it (40-60x faster than MiniLM, somewhat lower
        topic quality). A sentence-transformers name or path: loaded in a worker process. An
        object with ``.encode``: called in-process.
    quantize : bool
        Run the packaged MiniLM with int8 weights in ONNX Runtime (built once, ~15 s):
        1.3-1.5x its pace with a third of its worker's memory, no torch, every document's
        cosine to the float model ≥ 0.99. Its rows go to stores of their own.
    precision : {"float32", "float16", "int8"}
        How the store keeps the embeddings (int8 with one scale per row).
    chunk_size : int
        Documents per chunk: the unit of progress, checkpointing and memory.
    batch_size : int, optional
        The encoder's batch; default 32, smaller under memory pressure. Fix it when two
        runs must give bit-identical embeddings (batching changes padding).
    progress : bool
        Show a progress bar (docs/s, ETA, RSS of kernel and encoder).
    cache : str or path-like, optional
        A directory (or ``.sqlite`` file) caching embeddings by model and text hash, shared
        by runs: texts already in it are not encoded again.
    keep_warm_s : float
        Keep the encoder process (and its loaded model) this long after ``embed`` returns,
        so the next call on the same model starts at once; 0 closes it with each call. It
        is closed sooner by :meth:`close`, under memory pressure (``shrink_caches``, a cell
        the guard stops) and at kernel exit.
    client : distributed.Client, optional
        Embed on this Dask cluster: every chunk a task, the model loaded once per worker,
        the rows written by the workers into the store (a directory they all reach), each
        chunk journaled by this process once its rows verify. The [dask] extra.

    Examples
    --------
    ::

        embedder = ChunkedEmbedder(precision="float16")
        store = embedder.embed(df["text"], "embeddings/")      # Ctrl-C, re-run: resumes
        store = embedder.embed("corpus.parquet", "emb/", text_column="body")
        fast = ChunkedEmbedder(model="static", chunk_size=10_000)  # 1M docs in minutes
        smaller = ChunkedEmbedder(quantize=True)  # int8 MiniLM: a third of the worker memory
        again = ChunkedEmbedder(cache="~/embedding-cache")  # known texts are not re-encoded
        fitted = ChunkedEmbedder.from_recommendation(recommend_settings(len(df)))
        spread = ChunkedEmbedder(client=Client(cluster), batch_size=32)  # on Dask workers
    """

    @classmethod
    def from_recommendation(cls, recommendation: Recommendation,
                            **options: Any) -> ChunkedEmbedder:
        """Return an embedder with a recommendation's model, precision, chunk and batch size.

        ``options`` (``device``, ``progress``, ``cache``, or any of those four) win over
        the recommendation.
        """
        settings: dict[str, Any] = {
            "model": recommendation.model, "quantize": recommendation.quantize,
            "precision": recommendation.precision, "chunk_size": recommendation.chunk_size,
            "batch_size": recommendation.batch_size}
        settings.update(options)
        return cls(**settings)

    def __init__(
        self,
        model: Any = None,
        *,
        quantize: bool = False,
        precision: Precision = "float32",
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        batch_size: int | None = None,
        device: str = "cpu",
        progress: bool = True,
        cache: str | os.PathLike[str] | None = None,
        keep_warm_s: float = DEFAULT_KEEP_WARM_S,
        client: Any = None,
    ) -> None:
        check_precision(precision)
        if not isinstance(keep_warm_s, int | float) or keep_warm_s < 0:
            raise ValueError(f"keep_warm_s must be a number of seconds ≥ 0, got {keep_warm_s!r}")
        self.keep_warm_s = float(keep_warm_s)
        check_count(chunk_size, minimum=1, name="chunk_size")
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if model is not None and not isinstance(model, str | os.PathLike) and not hasattr(
                model, "encode"):
            raise TypeError("model must be None (the packaged MiniLM), a sentence-transformers "
                            f"name or path, or an object with .encode; got {type(model).__name__}")
        self.model = None if isinstance(model, str) and model == PACKAGED_ALIAS else model
        if not isinstance(quantize, bool):
            raise TypeError(f"quantize must be True or False, got {type(quantize).__name__}")
        if quantize and self.model is not None:
            raise ValueError("quantize=True is for the packaged MiniLM (model=None or "
                             f"'minilm'); got model={model!r}. The static model is already "
                             "smaller and faster; other models are used as they are")
        self.quantize = quantize
        self.precision = precision
        self.chunk_size = chunk_size
        self.batch_size = batch_size
        self.device = device
        self.progress = progress
        if client is not None and cache is not None:
            raise ValueError("cache= is not used with client= yet: the cache is a file of "
                             "this machine; embed on the cluster without it")
        if client is not None and not callable(getattr(client, "submit", None)):
            raise TypeError("client must be a distributed.Client, got "
                            f"{type(client).__name__}")
        self.cache = None if cache is None else Path(cache).expanduser()
        self.client = client
        self.name = model_name(self._spec())
        self.last_rate: float | None = None

    def _spec(self) -> Any:
        """Return the model as the encoder process names it (the int8 MiniLM has its own)."""
        return QUANTIZED_MODEL if self.quantize else self.model

    def _encoder(self) -> Encoder:
        spec = self._spec()
        if isinstance(spec, str) and spec in (STATIC_MODEL, QUANTIZED_MODEL):
            prepare_model(spec, verbose=self.progress)
        if self.client is not None:
            from meno_jupyter.topics.cluster import ClusterEncoder

            return ClusterEncoder(self.client, spec, self.device)
        if spec is None or isinstance(spec, str | os.PathLike):
            return warm_encoders.acquire(None if spec is None else str(spec), self.device)
        return InProcessEncoder(spec)

    def _done_with(self, encoder: Encoder, succeeded: bool) -> None:
        """Keep a worker warm after a call that went well; close anything else."""
        spec = self._spec()
        if succeeded and isinstance(encoder, WorkerEncoder) and self.client is None:
            warm_encoders.release(encoder, None if spec is None else str(spec), self.device,
                                  self.keep_warm_s)
        else:  # an interrupted worker may still owe a reply: never lend it again
            encoder.close()

    def close(self) -> None:
        """Close this model's warm encoder process now (the next ``embed`` starts one)."""
        spec = self._spec()
        if spec is None or isinstance(spec, str | os.PathLike):
            warm_encoders.close(None if spec is None else str(spec), self.device)

    def _finished(self, path: Path, docs_hash: str, n_docs: int) -> EmbeddingStore | None:
        """Return the store at ``path`` if it already holds exactly this, complete."""
        try:
            store = EmbeddingStore.open(path)
        except StoreError:
            return None
        # The dimension is known once the model is loaded: compare everything else.
        wanted = StoreMeta(self.name, store.meta.dim, self.precision, n_docs, docs_hash,
                           self.chunk_size)
        if not store.meta.differences(wanted) and store.complete:
            store.verify()
            return store
        return None

    def embed(
        self,
        docs: Any,
        store_dir: str | os.PathLike[str],
        *,
        text_column: str | None = None,
        overwrite: bool = False,
        on_chunk: ChunkCallback | None = None,
    ) -> EmbeddingStore:
        """Embed ``docs`` into the store at ``store_dir``; resume it if it is unfinished.

        ``docs`` is a list of texts, a pandas Series, or a CSV/TSV/Parquet/JSON Lines file
        with ``text_column``. A store made from other documents or another model raises
        :class:`~meno_jupyter.topics.store.StoreMismatchError` unless ``overwrite``.
        """
        documents = Documents(docs, text_column)
        docs_hash, n_docs = hash_documents(documents)  # one streamed pass: checks every text
        if n_docs == 0:
            raise ValueError("the corpus is empty: there is nothing to embed")
        path = Path(store_dir)
        if not overwrite and (done := self._finished(path, docs_hash, n_docs)) is not None:
            return done
        encoder = self._encoder()
        cache = None if self.cache is None else EmbeddingCache(self.cache, self.name)
        succeeded = False
        try:
            meta = StoreMeta(self.name, encoder.dim, self.precision, n_docs, docs_hash,
                             self.chunk_size)
            store = EmbeddingStore.prepare(path, meta, overwrite=overwrite)
            if self.client is not None:
                from meno_jupyter.topics.cluster import check_workers_reach

                check_workers_reach(self.client, store)
            self._run(store, documents, encoder, on_chunk, cache)
            succeeded = True
        finally:
            self._done_with(encoder, succeeded)
            if cache is not None:
                cache.close()
        if cache is not None and self.progress:
            print(f"embedding cache: {cache.hits:,} of {cache.hits + cache.misses:,} texts "
                  f"were known ({cache.path})")
        return store

    def _pending(self, store: EmbeddingStore, documents: Documents
                 ) -> Iterator[tuple[int, list[str]]]:
        pending = set(store.pending_chunks())
        for index, texts in enumerate(documents.batches(self.chunk_size)):
            if index in pending:
                yield index, texts

    def _run(self, store: EmbeddingStore, documents: Documents, encoder: Encoder,
             on_chunk: ChunkCallback | None, cache: EmbeddingCache | None = None) -> None:
        from tqdm.auto import tqdm

        n_docs = store.meta.n_docs
        bar = tqdm(total=n_docs, initial=store.done_docs, unit="doc", desc="embedding",
                   disable=not self.progress, dynamic_ncols=True)
        started, embedded = time.perf_counter(), 0

        def chunk_done(index: int, n_texts: int) -> None:
            nonlocal embedded
            if not embedded and self.model is None:  # the first chunk: MiniLM's pace here
                rate = n_texts / max(time.perf_counter() - started, 1e-6)
                if offer := static_offer(n_docs - store.done_docs, rate):
                    bar.write(offer)
            embedded += n_texts
            bar.update(n_texts)
            bar.set_postfix_str(f"kernel {format_bytes(read_rss())}, {encoder.memory_text()}",
                                refresh=False)
            if on_chunk is not None:
                on_chunk(store, index, encoder)

        try:
            chunks = self._pending(store, documents)
            if self.client is not None:
                from meno_jupyter.topics.cluster import ClusterEncoder, embed_on_cluster

                assert isinstance(encoder, ClusterEncoder)
                embed_on_cluster(store, chunks, encoder, self.batch_size or DEFAULT_BATCH_SIZE,
                                 chunk_done)
            for index, texts in chunks:  # in this process (none left after the cluster)
                batch = self.batch_size or adaptive_batch_size(DEFAULT_BATCH_SIZE)
                encode = functools.partial(encoder.encode, batch_size=batch)
                rows = encode(texts) if cache is None else encode_with_cache(cache, texts,
                                                                             encode)
                store.write_chunk(index, rows)
                chunk_done(index, len(texts))
        except KeyboardInterrupt:
            bar.close()
            print(f"interrupted: {store.done_docs:,} of {n_docs:,} documents are embedded "
                  f"and kept in {store.path}; run embed again to resume")
            raise
        except EncoderError as error:
            bar.close()
            raise EncoderError(f"{error}\n{store.done_docs:,} of {n_docs:,} documents are "
                               f"kept in {store.path}; run embed again to resume") from None
        bar.close()
        elapsed = time.perf_counter() - started
        self.last_rate = embedded / elapsed if embedded and elapsed > 0 else None


def static_offer(remaining_docs: int, minilm_rate: float) -> str | None:
    """Say, with both estimates, when the static model would spare a long MiniLM run."""
    minilm_s = remaining_docs / minilm_rate
    if minilm_s < OFFER_STATIC_ABOVE_S:
        return None
    static_s = minilm_s / STATIC_SPEEDUP
    distill = "" if static_model_ready() else (
        f" + about {format_duration(DISTILL_SECONDS)} to distill it once")
    return (f"the remaining {remaining_docs:,} documents take about "
            f"{format_duration(minilm_s)} with MiniLM at {minilm_rate:.0f} docs/s; the static "
            f"model would take about {format_duration(static_s)}{distill}, with somewhat lower "
            "topic quality. To switch: Ctrl-C (finished chunks are kept), then "
            "ChunkedEmbedder(model='static').embed(...) into another directory.")
