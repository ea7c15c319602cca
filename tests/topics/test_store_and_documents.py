"""The embedding store and document sources, without a model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from meno_jupyter.topics import (
    CorruptStoreError,
    Documents,
    EmbeddingStore,
    StoreError,
    StoreMeta,
    StoreMismatchError,
)
from meno_jupyter.topics.store import JOURNAL_FILE, hash_documents, quantize_int8


def meta(**overrides: object) -> StoreMeta:
    fields: dict[str, object] = {"model": "m", "dim": 4, "precision": "float32", "n_docs": 5,
                                 "docs_hash": "h", "chunk_size": 2}
    fields.update(overrides)
    return StoreMeta(**fields)  # type: ignore[arg-type]


def rows(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 4)).astype(np.float32)


@pytest.mark.parametrize("precision", ["float32", "float16", "int8"])
def test_a_store_round_trips_at_each_precision(tmp_path: Path, precision: str) -> None:
    store = EmbeddingStore.create(tmp_path / "s", meta(precision=precision))
    data = rows(5)
    for index in store.pending_chunks():
        start, stop = store.meta.chunk_bounds(index)
        store.write_chunk(index, data[start:stop])
    reopened = EmbeddingStore.open(tmp_path / "s", verify=True)
    assert reopened.complete and reopened.done_docs == 5
    assert reopened.embeddings().dtype == np.dtype(precision)
    assert isinstance(reopened.embeddings(), np.memmap)
    tolerance = {"float32": 0, "float16": 2e-3, "int8": 2e-2}[precision]
    np.testing.assert_allclose(reopened.as_float32(), data, atol=tolerance * 3)
    # np.load reads the store without meno-jupyter
    assert np.load(tmp_path / "s" / "embeddings.npy", mmap_mode="r").shape == (5, 4)


def test_int8_keeps_scales_so_values_can_be_dequantized() -> None:
    data = rows(100)
    values, scales = quantize_int8(data)
    assert values.dtype == np.int8 and scales.shape == (100,)
    assert np.abs(values).max() == 127
    restored = values.astype(np.float32) * scales[:, None]
    cosine = (restored * data).sum(1) / np.linalg.norm(restored, axis=1) / np.linalg.norm(
        data, axis=1)
    assert cosine.min() > 0.999


def test_resume_continues_at_the_first_unfinished_chunk(tmp_path: Path) -> None:
    store = EmbeddingStore.create(tmp_path / "s", meta())
    store.write_chunk(0, rows(2))
    store.write_chunk(2, rows(1))
    again = EmbeddingStore.prepare(tmp_path / "s", meta())
    assert again.pending_chunks() == [1]
    assert again.done_docs == 3
    with pytest.raises(StoreError, match=r"not finished .3 of 5"):
        again.embeddings()


def test_a_journal_line_cut_short_by_a_kill_is_redone(tmp_path: Path) -> None:
    store = EmbeddingStore.create(tmp_path / "s", meta())
    store.write_chunk(0, rows(2))
    with open(tmp_path / "s" / JOURNAL_FILE, "a") as journal:
        journal.write('{"chunk": 1, "start": 2, "sto')
    assert EmbeddingStore.open(tmp_path / "s").pending_chunks() == [1, 2]


def test_other_documents_or_model_are_refused_unless_overwritten(tmp_path: Path) -> None:
    EmbeddingStore.create(tmp_path / "s", meta()).write_chunk(0, rows(2))
    with pytest.raises(StoreMismatchError, match=r"other documents.*docs_hash"):
        EmbeddingStore.prepare(tmp_path / "s", meta(docs_hash="other"))
    with pytest.raises(StoreMismatchError, match="model: store has 'm', asked for 'x'"):
        EmbeddingStore.prepare(tmp_path / "s", meta(model="x"))
    fresh = EmbeddingStore.prepare(tmp_path / "s", meta(model="x"), overwrite=True)
    assert fresh.meta.model == "x" and fresh.done_docs == 0


def test_a_truncated_file_is_a_clear_error(tmp_path: Path) -> None:
    store = EmbeddingStore.create(tmp_path / "s", meta())
    store.write_chunk(0, rows(2))
    data = tmp_path / "s" / "embeddings.npy"
    data.write_bytes(data.read_bytes()[:-20])
    with pytest.raises(CorruptStoreError, match="truncated"):
        EmbeddingStore.open(tmp_path / "s")


def test_changed_bytes_fail_the_checksum(tmp_path: Path) -> None:
    store = EmbeddingStore.create(tmp_path / "s", meta())
    for index in store.pending_chunks():
        start, stop = store.meta.chunk_bounds(index)
        store.write_chunk(index, rows(stop - start))
    del store
    data = tmp_path / "s" / "embeddings.npy"
    raw = bytearray(data.read_bytes())
    raw[-1] ^= 0xFF  # a byte of the last chunk
    data.write_bytes(bytes(raw))
    with pytest.raises(CorruptStoreError, match=r"1 chunk.s. do not match.*documents 4-5"):
        EmbeddingStore.open(tmp_path / "s", verify=True)


def test_a_damaged_meta_file_and_a_missing_store_are_clear(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="not an embedding store"):
        EmbeddingStore.open(tmp_path)
    EmbeddingStore.create(tmp_path / "s", meta())
    (tmp_path / "s" / "meta.json").write_text("{not json")
    with pytest.raises(CorruptStoreError, match=r"meta.json is damaged"):
        EmbeddingStore.open(tmp_path / "s")


def test_bad_chunks_are_refused_before_anything_is_written(tmp_path: Path) -> None:
    store = EmbeddingStore.create(tmp_path / "s", meta())
    with pytest.raises(ValueError, match="needs shape"):
        store.write_chunk(0, rows(3))
    bad = rows(2)
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        store.write_chunk(0, bad)
    assert store.done_docs == 0


def test_documents_from_a_list_a_series_and_files(tmp_path: Path) -> None:
    texts = [f"document number {i}" for i in range(25)]
    frame = pd.DataFrame({"id": range(25), "body": texts})
    frame.to_csv(tmp_path / "c.csv", index=False)
    frame.to_parquet(tmp_path / "c.parquet")
    frame.to_json(tmp_path / "c.jsonl", orient="records", lines=True)
    expected = hash_documents(texts)
    assert hash_documents(Documents(texts)) == expected
    assert hash_documents(Documents(frame["body"].iloc[::-1].iloc[::-1])) == expected
    for name in ("c.csv", "c.parquet", "c.jsonl"):
        docs = Documents(tmp_path / name, text_column="body")
        assert hash_documents(docs) == expected, name
        assert [len(b) for b in docs.batches(10)] == [10, 10, 5]
        assert next(docs.batches(10, skip=20)) == texts[20:]


def test_bad_documents_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="document 1 is a NoneType"):
        list(Documents(["fine", None]))
    with pytest.raises(TypeError, match="document 0 is a float"):
        list(Documents(pd.Series([np.nan, "x"])))
    with pytest.raises(TypeError, match="single string"):
        Documents("just one text")
    with pytest.raises(TypeError, match="got int"):
        Documents(42)
    pd.DataFrame({"body": ["a"]}).to_csv(tmp_path / "c.csv", index=False)
    with pytest.raises(KeyError, match="no column 'text'; the columns are 'body'"):
        Documents(tmp_path / "c.csv", text_column="text")
    with pytest.raises(ValueError, match="text_column"):
        Documents(tmp_path / "c.csv")
    with pytest.raises(FileNotFoundError):
        Documents(tmp_path / "missing.parquet", text_column="x")
    (tmp_path / "c.txt").write_text("x")
    with pytest.raises(ValueError, match="JSON Lines"):
        Documents(tmp_path / "c.txt", text_column="x")
