"""Embedding on a Dask cluster: each chunk a task, the encoder loaded once per worker.

``ChunkedEmbedder(client=client)`` registers an :class:`EncoderPlugin` (a Dask worker
plugin: every worker, and every worker a nanny restarts, loads the model once), then
submits the pending chunks as tasks, a few per worker at a time. A task encodes its chunk,
writes the rows into the store at the chunk's offset (the store's directory must be one
every worker reaches: one machine, or a shared filesystem) and returns the chunk's
checksum. The driver journals a chunk only after reading its rows back and finding that
checksum, so the store keeps its guarantees: resuming starts at the first unfinished chunk,
the rows equal a single-process run's, damage is detected. A worker killed mid-chunk leaves
its rows unjournaled; Dask runs the task again elsewhere.

This module imports ``distributed``: it is imported only when a client is given. Torch is
imported by the workers, never by the kernel.
"""

from __future__ import annotations

import contextlib
import gc
import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from distributed import WorkerPlugin, as_completed, get_worker

from meno_jupyter.core.cleanup import trim_allocator
from meno_jupyter.core.cluster import worker_statuses
from meno_jupyter.core.memory import format_bytes
from meno_jupyter.topics._worker import load_encoder, prepare_model
from meno_jupyter.topics.encoders import Encoder, EncoderError, InProcessEncoder
from meno_jupyter.topics.store import EmbeddingStore, StoreError, StoreMeta

TASKS_PER_WORKER = 2  # in flight per worker: one running, one queued with its texts
TASK_RETRIES = 1  # a task that raised runs once more (a worker that died is Dask's own retry)
PLUGIN_PREFIX = "meno-encoder"


class EncoderPlugin(WorkerPlugin):
    """Loads the encoder once in every worker (and in every worker its nanny restarts).

    Parameters
    ----------
    model : None, str or object
        What ``ChunkedEmbedder(model=...)`` took: the packaged MiniLM (None), ``"static"``,
        ``"minilm-int8"`` (``quantize=True``),
        a sentence-transformers name or path (loaded on the worker), or an object with
        ``.encode`` (pickled to the workers).
    device : str
        Where a sentence-transformers model runs on the workers.
    """

    def __init__(self, model: Any, device: str) -> None:
        self.model = model
        self.device = device
        self.name = f"{PLUGIN_PREFIX}-{uuid.uuid4().hex[:12]}"
        self.dim: int | None = None
        self._encode: Callable[[list[str], int], Any] | None = None

    def setup(self, worker: Any) -> None:
        """Load the model in this worker process."""
        if self.model is None or isinstance(self.model, str | os.PathLike):
            spec = None if self.model is None else str(self.model)
            prepare_model(spec, verbose=False)  # a host the driver's copy is not on
            self.dim, self._encode = load_encoder(spec, self.device)
        else:
            encoder = InProcessEncoder(self.model)
            self.dim, self._encode = encoder.dim, encoder.encode

    def teardown(self, worker: Any) -> None:
        """Drop the model."""
        self._encode = None
        gc.collect()

    def encode(self, texts: list[str], batch_size: int) -> np.ndarray[Any, Any]:
        """Encode ``texts`` with the loaded model."""
        if self._encode is None:
            raise RuntimeError("the encoder plugin was not set up on this worker")
        return np.asarray(self._encode(texts, batch_size), dtype=np.float32)


def _plugin(name: str, worker: Any = None) -> EncoderPlugin:
    plugin = (worker or get_worker()).plugins[name]
    if not isinstance(plugin, EncoderPlugin):
        raise RuntimeError(f"worker plugin {name} is not meno-jupyter's encoder")
    return plugin


def _worker_dim(name: str, dask_worker: Any) -> int | None:
    """Run on a worker by ``Client.run``: the dimension its encoder reports."""
    return _plugin(name, dask_worker).dim


def _check_store(path: str, meta: StoreMeta) -> str:
    """Run on a worker by ``Client.run``: whether it reaches the store; "" when it does."""
    try:
        EmbeddingStore.for_writing_rows(path, meta)
    except Exception as error:  # reported by the driver, naming the worker
        return f"{type(error).__name__}: {error}"
    return ""


def embed_chunk(plugin_name: str, path: str, meta: StoreMeta, index: int, texts: list[str],
                *, batch_size: int) -> tuple[int, str]:
    """Encode one chunk and write its rows into the store (a Dask task, on a worker).

    Returns ``(index, checksum)``: the driver journals the chunk once the rows match.
    """
    rows = _plugin(plugin_name).encode(texts, batch_size)
    checksum = EmbeddingStore.for_writing_rows(path, meta).write_rows(index, rows)
    del rows
    gc.collect()  # a long-lived encoder creeps without these (see _worker.serve)
    trim_allocator()
    return index, checksum


class ClusterEncoder(Encoder):
    """The encoder of every worker of ``client``: registered on creation, removed on close.

    It encodes nothing in this process: :func:`embed_on_cluster` sends the chunks.

    Raises
    ------
    EncoderError
        The cluster has no worker, or the workers' models disagree on the dimension.
    """

    def __init__(self, client: Any, model: Any, device: str) -> None:
        self.client = client
        if not worker_statuses(client):
            raise EncoderError(f"the Dask cluster of {client} has no "
                               "worker; start some (cluster.scale(n)) and embed again")
        self.plugin = EncoderPlugin(model, device)
        try:
            client.register_plugin(self.plugin, name=self.plugin.name)
            dims = {dim for dim in client.run(_worker_dim, self.plugin.name).values()
                    if dim is not None}
        except Exception as error:
            self.close()
            raise EncoderError(f"the workers could not load the encoder: {error}") from error
        if len(dims) != 1:
            self.close()
            raise EncoderError(f"the workers' encoders disagree on the dimension ({dims})")
        self.dim = dims.pop()

    def memory_text(self) -> str:
        """Say the workers' memory, from the scheduler's metrics (their last heartbeat)."""
        rss = [worker.rss_bytes for worker in worker_statuses(self.client)]
        return (f"{len(rss)} workers {format_bytes(sum(rss))} "
                f"(largest {format_bytes(max(rss, default=0))})")

    def close(self) -> None:
        """Remove the plugin (its teardown drops every worker's model)."""
        with contextlib.suppress(Exception):  # never hides the error being raised
            self.client.unregister_worker_plugin(self.plugin.name)


def check_workers_reach(client: Any, store: EmbeddingStore) -> None:
    """Raise :class:`StoreError` naming every worker that cannot write into ``store``."""
    answers = client.run(_check_store, str(store.path.resolve()), store.meta)
    missing = {address: why for address, why in answers.items() if why}
    if missing:
        lines = "; ".join(f"{address}: {why}" for address, why in sorted(missing.items()))
        raise StoreError(f"{len(missing)} of {len(answers)} workers cannot write into the "
                         f"store: {lines}")


def embed_on_cluster(store: EmbeddingStore, chunks: Iterator[tuple[int, list[str]]],
                     encoder: ClusterEncoder, batch_size: int,
                     on_done: Callable[[int, int], None]) -> None:
    """Run ``chunks`` as Dask tasks; journal each once its rows verify; call ``on_done``.

    ``on_done(index, n_docs)`` is called in the driver after chunk ``index`` is journaled.
    On any error or Ctrl-C the tasks still queued are cancelled; what was journaled stays.
    """
    client = encoder.client
    n_workers = max(1, len(worker_statuses(client)))
    path = str(store.path.resolve())
    running: Any = as_completed()  # type: ignore[no-untyped-call]
    in_flight: dict[Any, int] = {}  # future: its documents (done ones are let go)

    def submit_next() -> None:
        item = next(chunks, None)
        if item is None:
            return
        index, texts = item
        future = client.submit(embed_chunk, encoder.plugin.name, path, store.meta, index,
                               texts, batch_size=batch_size, pure=False, retries=TASK_RETRIES,
                               key=f"meno-embed-{index}-{uuid.uuid4().hex[:8]}")
        in_flight[future] = len(texts)
        running.add(future)

    try:
        for _ in range(TASKS_PER_WORKER * n_workers):
            submit_next()
        for future in running:
            index, checksum = future.result()
            store.record_chunk(index, checksum)
            on_done(index, in_flight.pop(future))
            submit_next()
    except (StoreError, EncoderError):
        raise
    except Exception as error:  # a task's own error, or KilledWorker after Dask's retries
        raise EncoderError(f"embedding on the cluster failed: {type(error).__name__}: "
                           f"{error}") from error
    finally:
        with contextlib.suppress(Exception):  # never hides the error being raised
            client.cancel(list(in_flight))
