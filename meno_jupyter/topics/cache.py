"""``EmbeddingCache``: embeddings of texts already seen, so re-runs skip known texts.

One SQLite file (stdlib, safe across processes), keyed by the model's name and the
SHA-256 of the text, holding float32 rows. Sharing one cache between stores means a
corpus that grew, or was shuffled or filtered, only costs the encoding of its new texts.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

LOOKUP_BATCH = 500  # keys per SELECT, well below SQLite's variable limit


def text_key(text: str) -> bytes:
    """Return the cache key of ``text`` (SHA-256 of its UTF-8 bytes)."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


class EmbeddingCache:
    """Embeddings by (model, text hash) in a SQLite file; created when missing.

    Parameters
    ----------
    path : str or path-like
        A directory (``embeddings.sqlite`` inside it) or a ``.sqlite``/``.db`` file.
    model : str
        The name of the model the rows come from; other models' rows are never returned.
    """

    def __init__(self, path: str | os.PathLike[str], model: str) -> None:
        target = Path(path).expanduser()
        if target.suffix not in (".sqlite", ".sqlite3", ".db"):
            target = target / "embeddings.sqlite"
        target.parent.mkdir(parents=True, exist_ok=True)
        self.path = target
        self.model = model
        self.hits = 0
        self.misses = 0
        self._db = sqlite3.connect(target, timeout=30)
        self._db.execute("CREATE TABLE IF NOT EXISTS rows (model TEXT, key BLOB, "
                         "vector BLOB, PRIMARY KEY (model, key)) WITHOUT ROWID")

    def lookup(self, texts: Sequence[str]) -> list[np.ndarray[Any, Any] | None]:
        """Return each text's cached float32 row, or None where it is not cached."""
        keys = [text_key(text) for text in texts]
        found: dict[bytes, bytes] = {}
        for start in range(0, len(keys), LOOKUP_BATCH):
            part = keys[start:start + LOOKUP_BATCH]
            marks = ",".join("?" * len(part))
            found.update(self._db.execute(
                f"SELECT key, vector FROM rows WHERE model = ? AND key IN ({marks})",
                [self.model, *part]))
        rows = [None if key not in found else np.frombuffer(found[key], dtype=np.float32)
                for key in keys]
        known = sum(row is not None for row in rows)
        self.hits += known
        self.misses += len(rows) - known
        return rows

    def add(self, texts: Sequence[str], rows: np.ndarray[Any, Any]) -> None:
        """Remember the float32 ``rows`` of ``texts``."""
        data = np.ascontiguousarray(rows, dtype=np.float32)
        with self._db:
            self._db.executemany(
                "INSERT OR REPLACE INTO rows VALUES (?, ?, ?)",
                [(self.model, text_key(text), row.tobytes()) for text, row in zip(
                    texts, data, strict=True)])

    def __len__(self) -> int:
        count = self._db.execute("SELECT COUNT(*) FROM rows WHERE model = ?",
                                 [self.model]).fetchone()
        return int(count[0])

    def close(self) -> None:
        """Close the database."""
        self._db.close()

    def __enter__(self) -> EmbeddingCache:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"EmbeddingCache({str(self.path)!r}, model={self.model!r}: {len(self):,} rows; "
                f"this run {self.hits:,} hits, {self.misses:,} misses)")


def encode_with_cache(cache: EmbeddingCache, texts: list[str],
                      encode: Any) -> np.ndarray[Any, Any]:
    """Return the rows of ``texts``: cached ones looked up, the rest encoded and cached."""
    rows = cache.lookup(texts)
    missing = [index for index, row in enumerate(rows) if row is None]
    if missing:
        new_texts = [texts[index] for index in missing]
        fresh = np.asarray(encode(new_texts), dtype=np.float32)
        cache.add(new_texts, fresh)
        for index, row in zip(missing, fresh, strict=True):
            rows[index] = row
    return np.stack([row for row in rows if row is not None])
