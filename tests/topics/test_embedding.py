"""ChunkedEmbedder with the real packaged all-MiniLM-L6-v2, in its worker process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from meno_jupyter.topics import (
    ChunkedEmbedder,
    EmbeddingStore,
    EncoderError,
    StoreMismatchError,
)
from meno_jupyter.topics.store import JOURNAL_FILE

Corpus = tuple[list[str], list[str]]


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_float32_store_holds_minilm_embeddings(float32_store: Any, corpus: Corpus) -> None:
    texts, _ = corpus
    emb = float32_store.embeddings()
    assert emb.shape == (len(texts), 384) and emb.dtype == np.float32
    assert float32_store.meta.model == "sentence-transformers/all-MiniLM-L6-v2"
    norms = np.linalg.norm(emb, axis=1)
    assert np.allclose(norms, 1.0, atol=1e-3)  # MiniLM normalises its output
    # two texts about the same thing are closer than two about different things
    json_rows = [i for i, t in enumerate(texts) if "JSON" in t][:2]
    logging_row = next(i for i, t in enumerate(texts) if "log" in t.lower())
    same = float(emb[json_rows[0]] @ emb[json_rows[1]])
    other = float(emb[json_rows[0]] @ emb[logging_row])
    assert same > other


@pytest.mark.parametrize("precision", ["float16", "int8"])
def test_low_precision_stays_within_cosine_099_of_float32(
        precision: str, float32_store: Any, corpus: Corpus, tmp_path: Path) -> None:
    texts, _ = corpus
    store = ChunkedEmbedder(precision=precision, chunk_size=50, batch_size=16,  # type: ignore[arg-type]
                            progress=False).embed(texts, tmp_path / precision)
    assert store.embeddings().dtype == np.dtype(precision)
    cosine = cosine_rows(store.as_float32(), float32_store.as_float32())
    assert cosine.min() >= 0.99, cosine.min()
    assert store.disk_bytes() < float32_store.disk_bytes() * (0.6 if precision == "float16"
                                                               else 0.35)


def test_a_complete_store_is_returned_without_starting_the_encoder(
        float32_store: Any, corpus: Corpus) -> None:
    texts, _ = corpus
    started = time.perf_counter()
    again = ChunkedEmbedder(chunk_size=50, batch_size=16, progress=False).embed(
        pd.Series(texts), float32_store.path)
    assert time.perf_counter() - started < 2.0  # no model load
    assert again.complete and again.meta == float32_store.meta


KILLED_RUN = """
import json, sys
from meno_jupyter.topics import ChunkedEmbedder
ChunkedEmbedder(precision="float16", chunk_size=20, batch_size=16, progress=False).embed(
    sys.argv[1], sys.argv[2], text_column="text")
"""


def test_sigkill_mid_way_then_resume_equals_an_uninterrupted_run(
        corpus: Corpus, tmp_path: Path) -> None:
    texts, _ = corpus
    source = tmp_path / "docs.jsonl"
    pd.DataFrame({"text": texts}).to_json(source, orient="records", lines=True)
    store_dir = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, "-c", textwrap.dedent(KILLED_RUN),
                                str(source), str(store_dir)])
    journal = store_dir / JOURNAL_FILE
    deadline = time.monotonic() + 240
    while not (journal.exists() and len(journal.read_text().splitlines()) >= 3):
        assert process.poll() is None, "the embedding run ended before it was killed"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    partial = EmbeddingStore.open(store_dir)
    assert 3 <= partial.done_docs // 20 < partial.meta.n_chunks
    embedder = ChunkedEmbedder(precision="float16", chunk_size=20, batch_size=16,
                               progress=False)
    resumed = embedder.embed(source, store_dir, text_column="text")
    assert resumed.complete
    uninterrupted = embedder.embed(texts, tmp_path / "whole")
    assert np.array_equal(np.asarray(resumed.embeddings()),
                          np.asarray(uninterrupted.embeddings()))


def test_the_encoder_dying_loses_nothing_and_resume_finishes(
        corpus: Corpus, tmp_path: Path) -> None:
    texts, _ = corpus
    embedder = ChunkedEmbedder(chunk_size=100, batch_size=16, progress=False)

    def kill_after_first(store: EmbeddingStore, index: int, encoder: Any) -> None:
        os.kill(encoder.pid, signal.SIGKILL)

    with pytest.raises(EncoderError, match=r"(?s)died \(killed by signal 9\).*100 of 292 "
                                           r"documents are kept"):
        embedder.embed(texts[:292], tmp_path / "s", on_chunk=kill_after_first)
    assert EmbeddingStore.open(tmp_path / "s").done_docs == 100
    assert embedder.embed(texts[:292], tmp_path / "s").complete


def test_kernel_side_never_imports_torch(tmp_path: Path) -> None:
    code = ("import sys\nfrom meno_jupyter.topics import ChunkedEmbedder\n"
            "ChunkedEmbedder(progress=False).embed(['a text', 'another text'], "
            f"{str(tmp_path)!r})\n"
            "print('torch' in sys.modules, 'sentence_transformers' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=240, check=True)
    assert done.stdout.split() == ["False", "False"]


def test_bad_input_is_a_clear_error_and_writes_nothing(
        float32_store: Any, corpus: Corpus, tmp_path: Path) -> None:
    texts, _ = corpus
    embedder = ChunkedEmbedder(chunk_size=50, progress=False)
    with pytest.raises(ValueError, match="corpus is empty"):
        embedder.embed([], tmp_path / "empty")
    with pytest.raises(TypeError, match="document 2 is a float"):
        embedder.embed(["a", "b", 3.5], tmp_path / "numbers")
    assert not (tmp_path / "empty").exists() and not (tmp_path / "numbers").exists()
    with pytest.raises(KeyError, match="no column 'body'"):
        pd.DataFrame({"text": ["a"]}).to_parquet(tmp_path / "d.parquet")
        embedder.embed(tmp_path / "d.parquet", tmp_path / "p", text_column="body")

    class Hashing:
        name = "hashing-encoder"

        def encode(self, batch: list[str], batch_size: int = 8) -> np.ndarray:
            return np.array([[len(t), t.count(" ") + 1.0] for t in batch], dtype=np.float32)

    other = tmp_path / "other-model"
    ChunkedEmbedder(Hashing(), chunk_size=50, progress=False).embed(texts, other)
    with pytest.raises(StoreMismatchError, match="model: store has 'hashing-encoder'"):
        EmbeddingStore.prepare(other, float32_store.meta)
    with pytest.raises(TypeError, match=r"object with \.encode"):
        ChunkedEmbedder(42)
    with pytest.raises(ValueError, match="precision"):
        ChunkedEmbedder(precision="float8")  # type: ignore[arg-type]
