"""Shared corpus and a float32 store embedded once with the real packaged MiniLM."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from meno_jupyter.topics.datasets import docstring_corpus


@pytest.fixture(scope="session")
def corpus() -> tuple[list[str], list[str]]:
    frame = docstring_corpus(per_package=40)
    return frame["text"].tolist(), frame["label"].tolist()


@pytest.fixture(scope="session")
def float32_store(corpus: tuple[list[str], list[str]],
                  tmp_path_factory: pytest.TempPathFactory) -> Any:
    from meno_jupyter.topics import ChunkedEmbedder

    texts, _ = corpus
    path: Path = tmp_path_factory.mktemp("emb") / "float32"
    return ChunkedEmbedder(chunk_size=50, batch_size=16, progress=False).embed(texts, path)
