"""The int8 MiniLM: built once from the packaged model, run by ONNX Runtime without torch."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from meno_jupyter.topics import ChunkedEmbedder, EmbeddingStore
from meno_jupyter.topics.quantized import (
    CONFIG_FILE,
    MODEL_FILE,
    QUANTIZED_MODEL_NAME,
    build_quantized_model,
    quantized_model_ready,
)


@pytest.fixture(scope="module")
def int8_dir() -> Path:
    return build_quantized_model(verbose=False)


def test_the_model_is_built_once_and_reused(int8_dir: Path) -> None:
    assert quantized_model_ready(int8_dir)
    stamp = (int8_dir / MODEL_FILE).stat().st_mtime_ns
    assert build_quantized_model(verbose=False) == int8_dir
    assert (int8_dir / MODEL_FILE).stat().st_mtime_ns == stamp
    assert not list(int8_dir.parent.glob("*.partial-*"))
    assert (int8_dir / MODEL_FILE).stat().st_size < 40 * 1024**2  # the float one: 87 MiB


def test_a_build_of_another_recipe_or_a_damaged_one_is_not_used(int8_dir: Path,
                                                                 tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in (MODEL_FILE, "tokenizer.json", CONFIG_FILE):
        (copy / name).write_bytes((int8_dir / name).read_bytes())
    assert quantized_model_ready(copy)
    config = json.loads((copy / CONFIG_FILE).read_text())
    (copy / CONFIG_FILE).write_text(json.dumps({**config, "recipe": config["recipe"] - 1}))
    assert not quantized_model_ready(copy)
    (copy / CONFIG_FILE).write_text("{not json")
    assert not quantized_model_ready(copy)


def test_every_document_stays_close_to_the_float_model(
        int8_dir: Path, corpus: tuple[list[str], list[str]], float32_store: Any,
        tmp_path: Path) -> None:
    texts, _ = corpus
    libraries: list[str] = []

    def look_at_the_worker(store: EmbeddingStore, index: int, encoder: Any) -> None:
        with open(f"/proc/{encoder.pid}/maps") as maps:
            libraries.extend(line.rsplit("/", 1)[-1].strip() for line in maps if ".so" in line)

    store = ChunkedEmbedder(quantize=True, chunk_size=50, batch_size=16, progress=False).embed(
        texts, tmp_path / "int8", on_chunk=look_at_the_worker)
    assert store.meta.model == QUANTIZED_MODEL_NAME != float32_store.meta.model
    assert store.complete and store.meta.dim == float32_store.meta.dim
    exact, quantized = float32_store.as_float32(), store.as_float32()
    cosine = (exact * quantized).sum(axis=1) / (
        np.linalg.norm(exact, axis=1) * np.linalg.norm(quantized, axis=1))
    assert cosine.min() >= 0.99, np.sort(cosine)[:5]
    assert cosine.mean() >= 0.995
    assert any("onnxruntime" in name for name in libraries)
    assert not any("libtorch" in name for name in libraries)  # torch stays out of the worker


def test_the_order_of_texts_is_kept_whatever_their_length(int8_dir: Path) -> None:
    from meno_jupyter.topics.quantized import QuantizedEncoder

    encoder = QuantizedEncoder(int8_dir)
    texts = ["a much longer sentence about memory in notebooks and kernels", "short",
             "a medium one", "short"]
    together = encoder.encode(texts, 2)
    alone = np.stack([encoder.encode([text], 1)[0] for text in texts])
    # Activations are quantized per batch: a text's row moves a little with its batch-mates,
    # never far, and each row is still its own text's.
    similarity = together @ alone.T
    assert np.diag(similarity).min() >= 0.99, similarity
    assert list(similarity[[0, 1, 2]].argmax(axis=1)) in ([0, 1, 2], [0, 3, 2])
    np.testing.assert_array_equal(together[1], together[3])  # same text, same batch
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)


def test_quantize_is_for_the_packaged_minilm_only() -> None:
    with pytest.raises(ValueError, match="quantize=True is for the packaged MiniLM"):
        ChunkedEmbedder("static", quantize=True)
    with pytest.raises(TypeError, match="quantize must be True or False"):
        ChunkedEmbedder(quantize="yes")  # type: ignore[arg-type]
    assert ChunkedEmbedder("minilm", quantize=True).name == QUANTIZED_MODEL_NAME


def test_the_caller_never_imports_torch_or_onnxruntime(int8_dir: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    script = (
        "import sys\n"
        "from meno_jupyter.topics import ChunkedEmbedder\n"
        f"store = ChunkedEmbedder(quantize=True, progress=False).embed(['a short text'] * 5, "
        f"{str(tmp_path / 'q')!r})\n"
        "print(store.meta.dim, 'torch' in sys.modules, 'onnxruntime' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True,
                          text=True, timeout=300,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["384", "False", "False"]
