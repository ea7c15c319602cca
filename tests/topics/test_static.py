"""The static encoder: distilled from the packaged MiniLM, served by the encoder process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from meno_jupyter.topics import ChunkedEmbedder, EmbeddingStore
from meno_jupyter.topics.embedder import format_duration, static_offer
from meno_jupyter.topics.static import (
    STATIC_MODEL_NAME,
    distill_static_model,
    static_model_ready,
)


@pytest.fixture(scope="module")
def static_dir() -> Path:
    return distill_static_model(verbose=False)


def test_distilled_model_is_cached_and_reused(static_dir: Path) -> None:
    assert static_model_ready(static_dir)
    stamp = (static_dir / "model.safetensors").stat().st_mtime_ns
    assert distill_static_model(verbose=False) == static_dir
    assert (static_dir / "model.safetensors").stat().st_mtime_ns == stamp
    assert not list(static_dir.parent.glob("*.partial-*"))


def test_static_store_separates_packages(static_dir: Path, corpus: tuple[list[str], list[str]],
                                         tmp_path: Path) -> None:
    texts, labels = corpus
    store = ChunkedEmbedder("static", precision="float16", chunk_size=100,
                            progress=False).embed(texts, tmp_path / "static")
    assert store.meta.model == STATIC_MODEL_NAME and store.meta.dim == 256
    assert store.complete and store.meta.n_docs == len(texts)
    rows = store.as_float32()
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    similarity = rows @ rows.T
    same = np.equal.outer(np.array(labels), np.array(labels))
    np.fill_diagonal(same, False)
    other = ~np.equal.outer(np.array(labels), np.array(labels))
    # Documents of one package are closer to each other than to other packages' documents.
    assert similarity[same].mean() > similarity[other].mean() + 0.05
    reopened = EmbeddingStore.open(tmp_path / "static")
    reopened.verify()


def test_static_encoding_keeps_torch_out_of_the_caller(static_dir: Path, tmp_path: Path
                                                       ) -> None:
    script = (
        "import sys\n"
        "from meno_jupyter.topics import ChunkedEmbedder\n"
        f"store = ChunkedEmbedder('static', progress=False).embed(['a short text'] * 5, "
        f"{str(tmp_path / 's')!r})\n"
        "print(store.meta.dim, 'torch' in sys.modules, 'model2vec' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          check=True, timeout=300)
    assert done.stdout.split() == ["256", "False", "False"]


def test_offer_names_both_estimates() -> None:
    assert static_offer(2_000, minilm_rate=100.0) is None  # 20 s: no need
    offer = static_offer(1_000_000, minilm_rate=150.0)
    assert offer is not None
    assert "1,000,000 documents" in offer and "1 h 51 min with MiniLM at 150 docs/s" in offer
    assert "static model would take about 3 min" in offer  # 40x faster, at least
    assert "model='static'" in offer


def test_format_duration() -> None:
    assert format_duration(40) == "40 s"
    assert format_duration(600) == "10 min"
    assert format_duration(7_500) == "2 h 5 min"


def test_a_long_minilm_run_offers_the_static_model(corpus: tuple[list[str], list[str]],
                                                    tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    from meno_jupyter.topics import embedder

    monkeypatch.setattr(embedder, "OFFER_STATIC_ABOVE_S", 0.0)  # every run counts as long
    texts, _ = corpus
    ChunkedEmbedder(chunk_size=50, progress=False).embed(texts[:120], tmp_path / "m")
    said = capsys.readouterr().out
    assert said.count("the static model would take about") == 1  # once, after the first chunk
    assert "the remaining 70 documents take about" in said and "docs/s" in said
