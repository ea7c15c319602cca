"""The embedding cache: texts already embedded are looked up, not encoded again."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from meno_jupyter.topics import ChunkedEmbedder, EmbeddingCache
from meno_jupyter.topics.static import distill_static_model


class CountingStatic:
    """The real distilled static model, in-process, counting the texts it encodes."""

    name = "static-in-process"

    def __init__(self) -> None:
        from model2vec import StaticModel

        self.model = StaticModel.from_pretrained(str(distill_static_model(verbose=False)))
        self.encoded = 0

    def encode(self, texts: list[str], batch_size: int = 256) -> Any:
        self.encoded += len(texts)
        return self.model.encode(texts, use_multiprocessing=False)


def test_a_grown_corpus_only_encodes_its_new_texts(corpus: tuple[list[str], list[str]],
                                                   tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    texts, _ = corpus
    model = CountingStatic()
    cache = tmp_path / "cache"
    first = ChunkedEmbedder(model, chunk_size=40, cache=cache).embed(texts[:100], tmp_path / "a")
    after_first = model.encoded
    assert after_first == 100 + 1  # + the dimension probe
    grown = texts[50:100] + texts[100:160]  # 50 known texts, reordered, and 60 new ones
    second = ChunkedEmbedder(model, chunk_size=40, cache=cache).embed(grown, tmp_path / "b")
    assert model.encoded - after_first == 60 + 1
    assert "embedding cache: 50 of 110 texts were known" in capsys.readouterr().out
    np.testing.assert_array_equal(second.as_float32()[:50], first.as_float32()[50:100])
    with EmbeddingCache(cache / "embeddings.sqlite", "static-in-process") as opened:
        assert len(opened) == 160
    with EmbeddingCache(cache / "embeddings.sqlite", "another-model") as other:
        assert len(other) == 0 and other.lookup(texts[:3]) == [None, None, None]

