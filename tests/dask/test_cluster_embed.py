"""Embedding on a real LocalCluster of worker processes with the real packaged MiniLM."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from meno_jupyter.topics.embedder import ChunkedEmbedder
from meno_jupyter.topics.encoders import EncoderError
from meno_jupyter.topics.store import EmbeddingStore
from tests.dask.conftest import running_cluster

pytestmark = pytest.mark.dask

SETTINGS: dict[str, Any] = {"chunk_size": 40, "batch_size": 16, "precision": "float16",
                            "progress": False}


@pytest.fixture(scope="module")
def texts() -> list[str]:
    from meno_jupyter.topics.datasets import docstring_corpus

    return list(docstring_corpus(per_package=40)["text"])[:400]


@pytest.fixture(scope="module")
def single_process(texts: list[str], tmp_path_factory: pytest.TempPathFactory
                   ) -> EmbeddingStore:
    """The same corpus embedded by one encoder process: what the cluster must equal."""
    return ChunkedEmbedder(**SETTINGS).embed(texts, tmp_path_factory.mktemp("one") / "store")


def rows(store: EmbeddingStore) -> np.ndarray[Any, Any]:
    return np.array(EmbeddingStore.open(store.path, verify=True).embeddings())


def test_two_workers_write_the_single_process_store_bit_for_bit(
        cluster_client: Any, texts: list[str], single_process: EmbeddingStore,
        tmp_path: Path) -> None:
    from distributed import get_task_stream

    seen: list[str] = []
    with get_task_stream(cluster_client) as stream:
        store = ChunkedEmbedder(client=cluster_client, **SETTINGS).embed(
            texts, tmp_path / "store", on_chunk=lambda _s, _i, encoder: seen.append(
                encoder.memory_text()))
    chunk_tasks = [task for task in stream.data if "meno-embed-" in str(task["key"])]
    assert len(chunk_tasks) == store.meta.n_chunks >= 6
    assert len({task["worker"] for task in chunk_tasks}) == 2  # both workers embedded
    assert store.complete and store.meta == single_process.meta
    assert np.array_equal(rows(store), rows(single_process))
    assert store.path.joinpath("embeddings.npy").read_bytes() == (
        single_process.path.joinpath("embeddings.npy").read_bytes())
    assert len(seen) == store.meta.n_chunks and seen[-1].startswith("2 workers ")
    # The encoder plugin is removed from every worker at the end.
    dims = cluster_client.run(lambda dask_worker: [
        p.dim for name, p in dask_worker.plugins.items() if name.startswith("meno-encoder")])
    assert dims and all(found == [] for found in dims.values())  # removed at the end


def test_interrupted_on_the_cluster_resumes_to_the_same_rows(
        cluster_client: Any, texts: list[str], single_process: EmbeddingStore,
        tmp_path: Path) -> None:
    def stop_after_three(store: EmbeddingStore, _index: int, _encoder: Any) -> None:
        if len(store.done_chunks) == 3:
            raise KeyboardInterrupt

    embedder = ChunkedEmbedder(client=cluster_client, **SETTINGS)
    with pytest.raises(KeyboardInterrupt):
        embedder.embed(texts, tmp_path / "store", on_chunk=stop_after_three)
    kept = EmbeddingStore.open(tmp_path / "store", verify=True)
    assert len(kept.done_chunks) == 3 and not kept.complete
    resumed: list[int] = []
    store = embedder.embed(texts, tmp_path / "store",
                           on_chunk=lambda _s, index, _e: resumed.append(index))
    assert sorted(resumed) == sorted(set(range(store.meta.n_chunks)) - kept.done_chunks)
    assert np.array_equal(rows(store), rows(single_process))
    assert not cluster_client.processing() or not any(cluster_client.processing().values())


def test_a_worker_killed_mid_embedding_is_replaced_and_the_run_completes(
        texts: list[str], single_process: EmbeddingStore, tmp_path: Path) -> None:
    with running_cluster(allowed_failures=3) as client:  # Dask's default: run it elsewhere
        before = client.run(os.getpid)
        victim = sorted(before)[0]
        killed: list[int] = []

        def kill_one(store: EmbeddingStore, _index: int, _encoder: Any) -> None:
            if not killed and len(store.done_chunks) == 2:
                os.kill(before[victim], signal.SIGKILL)
                killed.append(before[victim])

        store = ChunkedEmbedder(client=client, **SETTINGS).embed(
            texts, tmp_path / "store", on_chunk=kill_one)
        after = client.run(os.getpid)
    assert killed and killed[0] not in after.values()  # the nanny started another
    assert store.complete
    assert np.array_equal(rows(store), rows(single_process))  # verified, nothing lost


class FailsOn:
    """An in-process model the workers receive pickled; raises on one text."""

    dim = 4

    def __init__(self, bad: str) -> None:
        self.bad = bad

    def encode(self, texts: list[str], batch_size: int = 1) -> np.ndarray[Any, Any]:
        if self.bad in texts:
            raise RuntimeError(f"cannot encode {self.bad!r}")
        return np.ones((len(texts), self.dim), dtype=np.float32)


def test_a_task_that_fails_says_so_and_keeps_what_was_journaled(
        cluster_client: Any, tmp_path: Path) -> None:
    docs = [f"text {i}" for i in range(200)]
    embedder = ChunkedEmbedder(FailsOn("text 150"), client=cluster_client,
                               **{**SETTINGS, "precision": "float32"})
    with pytest.raises(EncoderError, match=r"(?s)cannot encode 'text 150'.*run embed again"):
        embedder.embed(docs, tmp_path / "store")
    kept = EmbeddingStore.open(tmp_path / "store", verify=True)
    assert 3 not in kept.done_chunks and kept.done_docs <= 160


def test_bad_arguments_are_refused_before_anything_starts(cluster_client: Any) -> None:
    with pytest.raises(ValueError, match="cache= is not used with client="):
        ChunkedEmbedder(client=cluster_client, cache="/tmp/never")
    with pytest.raises(TypeError, match=r"client must be a distributed.Client, got str"):
        ChunkedEmbedder(client="tcp://127.0.0.1:8786")


def test_a_model_the_workers_cannot_load_is_an_encoder_error(cluster_client: Any,
                                                             tmp_path: Path) -> None:
    embedder = ChunkedEmbedder(FailsOn("dimension probe"), client=cluster_client,
                               **SETTINGS)
    with pytest.raises(EncoderError, match=r"workers could not load the encoder.*probe"):
        embedder.embed(["a", "b"], tmp_path / "store")
    left = cluster_client.run(lambda dask_worker: [
        name for name in dask_worker.plugins if name.startswith("meno-encoder")])
    assert all(names == [] for names in left.values())  # nothing left registered
