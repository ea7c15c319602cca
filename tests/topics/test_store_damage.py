"""The store under damage: cut-off journals, a full disk, changed bytes, fuzzed files."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meno_jupyter.topics import ChunkedEmbedder, CorruptStoreError, EmbeddingStore, StoreError
from meno_jupyter.topics.store import (
    DATA_FILE,
    JOURNAL_FILE,
    META_FILE,
    StoreMeta,
    StoreSpaceError,
)
from tests.fuzzhelp import FLIPS, damaged

DIM = 4


class Hashing:
    """A tiny deterministic encoder: the store is under test, not the model."""

    name = "hashing-encoder"

    def encode(self, batch: list[str], batch_size: int = 8) -> np.ndarray:
        return np.array([[len(t), t.count(" ") + 1.0, len(t) % 7, 1.0] for t in batch],
                        dtype=np.float32)


TEXTS = [f"document {i} " + "word " * (i % 5) for i in range(10)]


def meta(**overrides: object) -> StoreMeta:
    fields: dict[str, object] = {"model": "m", "dim": DIM, "precision": "float32",
                                 "n_docs": 5, "docs_hash": "h", "chunk_size": 2}
    fields.update(overrides)
    return StoreMeta(**fields)  # type: ignore[arg-type]


def full_store(path: Path, precision: str = "float32") -> np.ndarray:
    store = EmbeddingStore.create(path, meta(precision=precision))
    data = np.random.default_rng(1).normal(size=(5, DIM)).astype(np.float32)
    for index in store.pending_chunks():
        start, stop = store.meta.chunk_bounds(index)
        store.write_chunk(index, data[start:stop])
    return data


def embedder() -> ChunkedEmbedder:
    return ChunkedEmbedder(Hashing(), chunk_size=3, progress=False)


# ---------------------------------------------------------------------------- journal (3, 11)

def test_embed_repairs_a_journal_cut_short_before_appending(tmp_path: Path) -> None:
    store_dir = tmp_path / "s"
    embedder().embed(TEXTS, store_dir)
    journal = store_dir / JOURNAL_FILE
    journal.write_bytes(journal.read_bytes()[:-40])  # the last entry loses its end
    assert not EmbeddingStore.open(store_dir).complete
    resumed = embedder().embed(TEXTS, store_dir)
    assert resumed.complete
    reopened = EmbeddingStore.open(store_dir)
    assert reopened.complete, "the next entry was appended onto the fragment"
    lines = journal.read_bytes().splitlines()
    assert all(json.loads(line)["sha256"] for line in lines)
    np.testing.assert_array_equal(reopened.as_float32(), Hashing().encode(TEXTS))


@pytest.mark.parametrize("damage", [
    b'{"chunk": 99, "start": 198, "stop": 200, "sha256": "' + b"0" * 64 + b'"}\n',
    b'{"chunk": -1, "start": 0, "stop": 2, "sha256": "' + b"0" * 64 + b'"}\n',
    b"\xff\xfe not utf-8 \x80\n",
    b'["a list"]\n',
    b'{"chunk": "0", "start": 0, "stop": 2, "sha256": "x"}\n',
])
def test_a_damaged_journal_line_is_a_corrupt_store_naming_the_file(
        tmp_path: Path, damage: bytes) -> None:
    store_dir = tmp_path / "s"
    full_store(store_dir)
    with open(store_dir / JOURNAL_FILE, "ab") as journal:
        journal.write(damage)
    for attempt in (lambda: EmbeddingStore.open(store_dir),
                    lambda: EmbeddingStore.prepare(store_dir, meta())):
        with pytest.raises(CorruptStoreError, match=r"journal.jsonl, line 4, is damaged.*"
                                                    r"overwrite=True"):
            attempt()


def test_embed_on_a_damaged_journal_says_start_again(tmp_path: Path) -> None:
    store_dir = tmp_path / "s"
    embedder().embed(TEXTS, store_dir)
    with open(store_dir / JOURNAL_FILE, "ab") as journal:
        journal.write(b'{"chunk": 99}\n')
    with pytest.raises(CorruptStoreError, match="overwrite=True"):
        embedder().embed(TEXTS, store_dir)
    assert embedder().embed(TEXTS, store_dir, overwrite=True).complete


# ---------------------------------------------------------------------------- full disk (4)

@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A real 64 kB tmpfs (root mounts one), unmounted afterwards."""
    mount_point = tmp_path / f"tmpfs-{uuid.uuid4().hex[:8]}"
    mount_point.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount_point)],
                   check=True, capture_output=True)
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_a_full_disk_is_a_clear_error_not_a_crash(small_tmpfs: Path) -> None:
    # In a child process: before the fix the kernel died of SIGBUS (exit 135).
    code = textwrap.dedent(f"""
        import numpy as np
        from meno_jupyter.topics import ChunkedEmbedder
        from tests.topics.test_store_damage import Hashing
        texts = [f"text {{i}}" for i in range(20_000)]  # 320 kB of float32: more than 64 kB
        try:
            ChunkedEmbedder(Hashing(), chunk_size=1000, progress=False).embed(
                texts, {str(small_tmpfs / "s")!r})
        except OSError as error:
            import errno
            from meno_jupyter.topics.store import StoreError
            print("ENOSPC" if error.errno == errno.ENOSPC else error.errno,
                  isinstance(error, StoreError))
            print(error)
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=Path(__file__).parents[2], check=False)
    assert done.returncode == 0, done.stderr
    first, message = done.stdout.splitlines()[:2]
    assert first == "ENOSPC True"
    assert "needs 320,128 bytes" in message and "free" in message
    assert not any((small_tmpfs / "s").glob("*.npy")), "a half-made store was left behind"


def test_finished_chunks_stay_valid_when_the_disk_fills_later(small_tmpfs: Path) -> None:
    store_dir = small_tmpfs / "s"
    texts = [f"text {i}" for i in range(1000)]  # 16 kB of rows: fits
    store = ChunkedEmbedder(Hashing(), chunk_size=100, progress=False).embed(texts, store_dir)
    filler = os.open(small_tmpfs / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        with pytest.raises(OSError) as full:
            while True:
                os.write(filler, b"x" * 4096)
    finally:
        os.close(filler)
    assert full.value.errno == errno.ENOSPC
    reopened = EmbeddingStore.open(store_dir)
    reopened.verify()
    np.testing.assert_array_equal(reopened.as_float32(), Hashing().encode(texts))
    assert store.complete


def test_reserve_space_allocates_the_whole_file(tmp_path: Path) -> None:
    store = EmbeddingStore.create(tmp_path / "s", meta(n_docs=100_000, dim=8))
    status = (tmp_path / "s" / DATA_FILE).stat()
    assert status.st_blocks * 512 >= status.st_size, "the file is still sparse"
    assert isinstance(StoreSpaceError(errno.ENOSPC, "x"), OSError)
    assert store.pending_chunks()[:2] == [0, 1]


# ---------------------------------------------------------------------------- verify (5)

@pytest.mark.parametrize("precision", ["float32", "float16", "int8"])
def test_open_verifies_what_it_reads_by_default(tmp_path: Path, precision: str) -> None:
    store_dir = tmp_path / "s"
    full_store(store_dir, precision)
    data = store_dir / DATA_FILE
    raw = bytearray(data.read_bytes())
    raw[-1] ^= 0x01  # one flipped bit in the last chunk (documents 4-5)
    data.write_bytes(bytes(raw))
    store = EmbeddingStore.open(store_dir)
    assert store.as_float32(slice(0, 4)).shape == (4, DIM), "untouched chunks still read"
    with pytest.raises(CorruptStoreError, match="documents 4-5"):
        store.as_float32()
    with pytest.raises(CorruptStoreError, match="documents 4-5"):
        EmbeddingStore.open(store_dir).as_float32(np.array([4]))
    with pytest.raises(CorruptStoreError, match="documents 4-5"):
        EmbeddingStore.open(store_dir).embeddings()
    assert EmbeddingStore.open(store_dir, verify=False).as_float32().shape == (5, DIM)


def test_a_nan_written_into_the_file_is_caught(tmp_path: Path) -> None:
    store_dir = tmp_path / "s"
    full_store(store_dir)
    array = np.load(store_dir / DATA_FILE, mmap_mode="r+")
    array[1, 2] = np.nan
    array.flush()
    del array
    with pytest.raises(CorruptStoreError, match="documents 0-2"):
        EmbeddingStore.open(store_dir).as_float32()


# ---------------------------------------------------------------------------- fuzzing

FUZZ = settings(max_examples=60, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


def read_everything(store_dir: Path) -> np.ndarray:
    store = EmbeddingStore.open(store_dir)
    return store.as_float32()


@FUZZ
@given(name=st.sampled_from([META_FILE, JOURNAL_FILE, DATA_FILE, "scales.npy"]),
       cut=st.integers(0, 10_000),
       flips=FLIPS)
def test_fuzzed_store_files_give_the_right_rows_or_a_store_error(
        tmp_path_factory: pytest.TempPathFactory, name: str, cut: int,
        flips: list[tuple[int, int]]) -> None:
    store_dir = tmp_path_factory.mktemp("fuzz") / "s"
    full_store(store_dir, "int8")
    expected = read_everything(store_dir)
    path = store_dir / name
    original = path.read_bytes()
    path.write_bytes(damaged(original, cut, flips))
    try:
        rows = read_everything(store_dir)
    except StoreError:
        return
    np.testing.assert_array_equal(rows, expected)  # never wrong data


@FUZZ
@given(key=st.sampled_from(["model", "dim", "precision", "n_docs", "docs_hash", "chunk_size",
                            "version", "extra"]),
       value=st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=3),
    max_leaves=8))
def test_fuzzed_meta_values_are_a_store_error(
        tmp_path_factory: pytest.TempPathFactory, key: str, value: object) -> None:
    store_dir = tmp_path_factory.mktemp("meta") / "s"
    full_store(store_dir)
    fields = json.loads((store_dir / META_FILE).read_text())
    fields[key] = value
    (store_dir / META_FILE).write_text(json.dumps(fields))
    try:
        store = EmbeddingStore.open(store_dir)
        store.as_float32()
    except StoreError:
        return
    assert store.meta.n_docs == 5 and store.meta.dim == DIM


def test_huge_sizes_and_odd_files_are_store_errors(tmp_path: Path) -> None:
    store_dir = tmp_path / "s"
    full_store(store_dir)
    fields = json.loads((store_dir / META_FILE).read_text())
    for huge in ({"n_docs": 10**30}, {"dim": 2**62}, {"chunk_size": 0}):
        (store_dir / META_FILE).write_text(json.dumps({**fields, **huge}))
        with pytest.raises(StoreError):
            EmbeddingStore.open(store_dir).as_float32()
    (store_dir / META_FILE).write_text('[' * 100_000 + ']' * 100_000)
    with pytest.raises(CorruptStoreError):
        EmbeddingStore.open(store_dir)
    (store_dir / META_FILE).unlink()
    (store_dir / META_FILE).symlink_to(tmp_path / "elsewhere.json")
    (tmp_path / "elsewhere.json").write_text(json.dumps(fields))
    with pytest.raises(CorruptStoreError):
        EmbeddingStore.open(store_dir)


def test_rows_written_elsewhere_are_journaled_only_when_they_verify(tmp_path: Path) -> None:
    meta = StoreMeta("m", dim=DIM, precision="int8", n_docs=4, docs_hash="h", chunk_size=2)
    store = EmbeddingStore.create(tmp_path / "s", meta)
    writer = EmbeddingStore.for_writing_rows(tmp_path / "s", meta)  # a worker's view
    good = writer.write_rows(0, np.ones((2, DIM)))
    checksum_of_other_rows = writer.write_rows(1, np.zeros((2, DIM)))
    writer.write_rows(1, np.full((2, DIM), 2.0))  # the disk now holds other rows
    assert not EmbeddingStore.open(tmp_path / "s").done_chunks  # nothing journaled yet
    store.record_chunk(0, good)
    with pytest.raises(CorruptStoreError, match=r"documents 2-4 on disk do not match"):
        store.record_chunk(1, checksum_of_other_rows)
    reopened = EmbeddingStore.open(tmp_path / "s", verify=True)
    assert reopened.done_chunks == {0}
    first = np.array(reopened.embeddings(allow_partial=True)[:2])
    assert (first == first.max()).all() and first.max() > 0  # the rows of ones, quantized


def test_a_writer_that_does_not_reach_the_store_is_told_so(tmp_path: Path) -> None:
    meta = StoreMeta("m", dim=DIM, precision="float32", n_docs=4, docs_hash="h",
                     chunk_size=2)
    with pytest.raises(StoreError, match=r"meta.json is not there on .*every worker can reach"):
        EmbeddingStore.for_writing_rows(tmp_path / "elsewhere", meta)
    EmbeddingStore.create(tmp_path / "s", meta)
    other = StoreMeta("m", dim=DIM, precision="float32", n_docs=4, docs_hash="other",
                      chunk_size=2)
    with pytest.raises(StoreError, match="holds another store"):
        EmbeddingStore.for_writing_rows(tmp_path / "s", other)
