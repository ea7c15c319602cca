"""``recommend_settings``: model, precision, chunk, batch and mode from the headroom, and why.

The figures behind the rules were measured on a 2-core machine with all-MiniLM-L6-v2:
~150 docs/s on one-line texts and ~42 docs/s on ~90-token descriptions at batch 32
(64 and 128 were slower and took 1.4-1.6 GB), its worker peaking near 1 GiB; the int8
MiniLM 1.2-1.5x as fast with a worker of ~200 MiB; the default fit (UMAP in a process of its
own, then BERTopic's c-TF-IDF) peaked at 625 MiB (process tree, kernel included) at 20k
documents and 822 MiB at 50k, where BERTopic's own took 1,955 and 2,138 MiB; the static
model encodes thousands of documents per second on one core in a ~100 MiB worker.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field

from meno_jupyter.core.errors import check_count
from meno_jupyter.core.memory import GIB, MemoryLimit, effective_limit, format_bytes
from meno_jupyter.topics._format import format_duration
from meno_jupyter.topics._worker import PACKAGED_ALIAS
from meno_jupyter.topics.quantized import BUILD_SECONDS
from meno_jupyter.topics.static import (
    DISTILL_SECONDS,
    STATIC_DOCS_PER_S,
    STATIC_FAST_DOCS_PER_S,
)
from meno_jupyter.topics.store import Precision

MINILM_DIM, STATIC_DIM = 384, 256
DEFAULT_FIT_MAX_DOCS = 200_000  # UMAP: ~1 min per 10k documents on 2 cores, superlinear
STATIC_ABOVE_S = 3_600.0  # MiniLM would take longer than this: recommend the static model

FAST_DOCS_PER_S = 150.0  # one-line texts
SLOW_DOCS_PER_S = 42.0  # ~90-token descriptions
SHORT_TEXT_CHARS = 200
ENCODER_PEAK_BYTES = int(1.0 * GIB)  # MiniLM worker at batch 32
QUANTIZED_PEAK_BYTES = 256 * 1024**2  # the int8 MiniLM's worker: 189 MiB measured
STATIC_PEAK_BYTES = 128 * 1024**2  # the static model's worker: 101 MiB measured
ENCODER_MARGIN_BYTES = 256 * 1024**2  # beside the worker: the kernel's chunk, the store
QUANTIZED_SPEEDUP = 1.4  # int8 against float MiniLM: 1.22-1.78x in bench/encoder.py runs
QUANTIZE_ABOVE_S = 5 * 60.0  # the float MiniLM would take longer: the int8 one saves minutes
FIT_BASE_BYTES = 512 * 1024**2  # the default fit's process tree: a line above 20k and 50k
FIT_BYTES_PER_DOC = 7 * 1024
INT8_ABOVE_BYTES = 2 * GIB  # a float16 store larger than this: int8 instead


@dataclass(frozen=True)
class Recommendation:
    """Settings for a corpus, and why.

    Attributes
    ----------
    model : {"minilm", "static"}
        What ``ChunkedEmbedder(model=...)`` takes: the packaged MiniLM or its static
        distillation (``ChunkedEmbedder.from_recommendation`` passes it on).
    quantize : bool
        Run MiniLM with int8 weights (``ChunkedEmbedder(quantize=True)``).
    encoder_peak_bytes : int
        The measured peak of the chosen encoder's worker process.
    mode : {"default", "online"}
        ``default``: UMAP + HDBSCAN on all embeddings; ``online``: chunk by chunk.
    embed_seconds : float
        Estimated encoding time with the recommended model on this kind of CPU.
    """

    n_docs: int
    model: str
    precision: Precision
    chunk_size: int
    batch_size: int
    mode: str
    store_bytes: int
    fit_peak_bytes: int
    embed_seconds: float
    headroom_bytes: int
    reasons: tuple[str, ...] = field(default=())
    quantize: bool = False
    encoder_peak_bytes: int = 0

    def __str__(self) -> str:
        lines = [
            f"{self.n_docs:,} documents, {format_bytes(self.headroom_bytes)} of headroom",
            f"model={self.model!r}  quantize={self.quantize}  precision={self.precision!r}  "
            f"chunk_size={self.chunk_size}  "
            f"batch_size={self.batch_size}  mode={self.mode!r}",
            f"store on disk ≈ {format_bytes(self.store_bytes)}; default fit peak ≈ "
            f"{format_bytes(self.fit_peak_bytes)}; "
            f"embedding ≈ {format_duration(self.embed_seconds)} in a worker of ≈ "
            f"{format_bytes(self.encoder_peak_bytes)}",
        ]
        return "\n".join(lines + [f"- {reason}" for reason in self.reasons])

    def _repr_pretty_(self, printer: object, cycle: bool) -> None:
        printer.text(str(self))  # type: ignore[attr-defined]


def store_precision(n_docs: int, dim: int = MINILM_DIM) -> Precision:
    """Return the store precision for ``n_docs`` rows of ``dim``: float16, int8 past 2 GiB.

    Examples
    --------
    >>> store_precision(10_000), store_precision(10_000_000)
    ('float16', 'int8')
    """
    return "int8" if n_docs * dim * 2 > INT8_ABOVE_BYTES else "float16"


def recommend_settings(
    n_docs: int,
    *,
    mean_chars: float | None = None,
    dim: int = MINILM_DIM,
    limit: MemoryLimit | None = None,
) -> Recommendation:
    """Propose the model, precision, chunk size, batch size and mode for ``n_docs`` documents.

    Parameters
    ----------
    n_docs : int
        Documents in the corpus.
    mean_chars : float, optional
        Mean text length, for the time estimate (long texts encode ~3.5x slower).
    dim : int
        Embedding dimension of MiniLM (384; the static model's is 256).
    limit : MemoryLimit, optional
        Default: this process's effective (cgroup-aware) limit and what is available.

    Examples
    --------
    >>> from meno_jupyter.core.memory import MemoryLimit
    >>> small = MemoryLimit(4 * GIB, "test", 3 * GIB, 8 * GIB)
    >>> recommend_settings(5_000, limit=small).mode
    'default'
    >>> recommend_settings(1_000_000, limit=small).mode
    'online'
    """
    check_count(n_docs, minimum=1, name="n_docs")
    found = limit or effective_limit()
    headroom = found.available_bytes
    reasons: list[str] = []
    short = (mean_chars or 0) < SHORT_TEXT_CHARS
    rate = FAST_DOCS_PER_S if short else SLOW_DOCS_PER_S
    static_rate = STATIC_FAST_DOCS_PER_S if short else STATIC_DOCS_PER_S
    minilm_s, static_s = n_docs / rate, n_docs / static_rate + DISTILL_SECONDS
    int8_s = minilm_s / QUANTIZED_SPEEDUP + BUILD_SECONDS
    can_quantize = importlib.util.find_spec("onnxruntime") is not None
    both = (f"MiniLM ≈ {format_duration(minilm_s)} at {rate:.0f} docs/s"
            + (f", its int8 form ≈ {format_duration(int8_s)}" if can_quantize else "")
            + f", the static model ≈ {format_duration(static_s)} (distilling it once included)")
    peaks = (f"workers peak near {format_bytes(ENCODER_PEAK_BYTES)} (MiniLM), "
             f"{format_bytes(QUANTIZED_PEAK_BYTES)} (int8) and "
             f"{format_bytes(STATIC_PEAK_BYTES)} (static); {format_bytes(headroom)} is free")

    def fits(peak: int) -> bool:
        return headroom >= peak + ENCODER_MARGIN_BYTES

    fastest_minilm_s = int8_s if can_quantize else minilm_s
    quantize = False
    if fastest_minilm_s > STATIC_ABOVE_S:
        model, seconds, peak = "static", static_s, STATIC_PEAK_BYTES
        reasons.append(f"model='static': {both}; its topics are somewhat less sharp (NMI "
                       "0.33-0.34 against 0.36-0.46 measured)")
    elif not fits(QUANTIZED_PEAK_BYTES if can_quantize else ENCODER_PEAK_BYTES):
        model, seconds, peak = "static", static_s, STATIC_PEAK_BYTES
        reasons.append(f"model='static': {peaks}, too little for MiniLM's; its topics are "
                       "somewhat less sharp")
    elif can_quantize and (not fits(ENCODER_PEAK_BYTES) or minilm_s > QUANTIZE_ABOVE_S):
        model, seconds, peak, quantize = PACKAGED_ALIAS, int8_s, QUANTIZED_PEAK_BYTES, True
        why = (peaks if not fits(ENCODER_PEAK_BYTES)
               else f"{both}; the {format_duration(minilm_s - int8_s)} saved are worth it")
        reasons.append(f"quantize=True (the int8 MiniLM, every document's cosine to the float "
                       f"model ≥ 0.99): {why}")
    else:
        model, seconds, peak = PACKAGED_ALIAS, minilm_s, ENCODER_PEAK_BYTES
        reasons.append(f"model=None (the packaged MiniLM): {both}; its topics are the better "
                       "ones and the wait is acceptable")
    if model == "static" and dim == MINILM_DIM:
        dim = STATIC_DIM
    float16_bytes = n_docs * dim * 2
    precision = store_precision(n_docs, dim)
    if precision == "int8":
        store_bytes = n_docs * (dim + 4)
        reasons.append(f"int8 (one scale per row, cosine ≥ 0.99 to float32): a float16 store "
                       f"would take {format_bytes(float16_bytes)}")
    else:
        store_bytes = float16_bytes
        reasons.append("float16: half the disk and memory of float32 outside UMAP (which "
                       "works in float32 anyway), same topics with a fixed seed")
    if model == "static":
        chunk_size = min(10_000, max(1_000, n_docs // 100))
        reasons.append(f"chunk_size={chunk_size}: a few seconds of static encoding per "
                       "checkpoint; an interruption loses at most one chunk")
    else:
        chunk_size = min(1_000, max(100, n_docs // 20))
        reasons.append(f"chunk_size={chunk_size}: a checkpoint at least every 5 % of the "
                       "corpus; an interruption loses at most one chunk")
    if not fits(peak):
        batch_size = 16
        reasons.append(f"batch_size=16: the encoder peaks near {format_bytes(peak)}"
                       f" at 32 and only {format_bytes(headroom)} is free")
    else:
        batch_size = 32
        reasons.append("batch_size=32: the fastest measured (64 and 128 were slower and "
                       "larger)")
    fit_peak = FIT_BASE_BYTES + FIT_BYTES_PER_DOC * n_docs
    if fit_peak > 0.8 * headroom:
        mode = "online"
        reasons.append(f"mode='online': the default fit would peak near {format_bytes(fit_peak)}"
                       f", more than 80 % of the {format_bytes(headroom)} free")
    elif n_docs > DEFAULT_FIT_MAX_DOCS:
        mode = "online"
        reasons.append(f"mode='online': UMAP over {n_docs:,} documents would take hours on a "
                       "few cores; the online fit streams the store in minutes")
    else:
        mode = "default"
        reasons.append(f"mode='default': its peak (≈ {format_bytes(fit_peak)}) fits the "
                       "headroom, and it gives the best topics")
    if seconds > 3_600:
        reasons.append("the embedding can be stopped and resumed at any chunk")
    return Recommendation(n_docs, model, precision, chunk_size, batch_size, mode, store_bytes,
                          fit_peak, seconds, headroom, tuple(reasons), quantize, peak)


