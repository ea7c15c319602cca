"""recommend_settings: settings from the headroom, with reasons."""

from __future__ import annotations

import pytest

from meno_jupyter.core.memory import GIB, MemoryLimit
from meno_jupyter.topics import recommend_settings


def limit(available_gib: float) -> MemoryLimit:
    total = int(max(16.0, available_gib) * GIB)
    return MemoryLimit(total, "test", int(available_gib * GIB), total)


def test_a_small_corpus_gets_the_default_pipeline_at_float16() -> None:
    advice = recommend_settings(20_000, limit=limit(8))
    assert (advice.precision, advice.mode, advice.batch_size) == ("float16", "default", 32)
    assert advice.chunk_size == 1_000
    assert advice.store_bytes == 20_000 * 384 * 2
    assert any("float16" in r for r in advice.reasons)


def test_a_large_corpus_in_little_memory_goes_online_at_int8() -> None:
    advice = recommend_settings(5_000_000, limit=limit(1.2))
    # The static model's worker (~128 MiB) leaves room for batches of 32.
    assert (advice.precision, advice.mode, advice.batch_size) == ("int8", "online", 32)
    assert (advice.model, advice.encoder_peak_bytes) == ("static", 128 * 1024**2)
    assert advice.store_bytes == 5_000_000 * (256 + 4)  # the static model's 256 dimensions
    text = str(advice)
    assert "mode='online'" in text and "more than 80 %" in text


def test_a_corpus_too_long_for_minilm_gets_the_static_model_with_both_times() -> None:
    advice = recommend_settings(1_000_000, mean_chars=600, limit=limit(24))
    assert (advice.model, advice.mode, advice.chunk_size) == ("static", "online", 10_000)
    assert 500 < advice.embed_seconds < 1_000  # 1M / 1,850 docs/s + distilling once
    reason = next(r for r in advice.reasons if r.startswith("model='static'"))
    assert ("MiniLM ≈ 6 h 36 min at 42 docs/s, its int8 form ≈ 4 h 43 min, the static model "
            "≈ 10 min") in reason  # one wording
    assert "UMAP over 1,000,000 documents" in str(advice)
    assert recommend_settings(20_000, limit=limit(8)).model == "minilm"


def test_the_encoder_is_chosen_by_the_memory_free() -> None:
    roomy = recommend_settings(20_000, limit=limit(8))
    assert (roomy.model, roomy.quantize, roomy.encoder_peak_bytes) == ("minilm", False, GIB)
    # 614 MiB free (as seen in a real session): MiniLM's ~1 GiB worker does not fit, the
    # int8 one (~256 MiB) does, with room for batches of 32.
    tight = recommend_settings(20_000, limit=limit(0.6))
    assert (tight.model, tight.quantize, tight.batch_size) == ("minilm", True, 32)
    assert "int8" in tight.reasons[0] and "614.4 MiB is free" in tight.reasons[0]
    assert "quantize=True" in str(tight) and "worker of ≈ 256.0 MiB" in str(tight)
    starved = recommend_settings(20_000, limit=limit(0.4))
    assert (starved.model, starved.quantize) == ("static", False)
    assert "too little for MiniLM's" in starved.reasons[0]
    # Plenty of memory, but a long float run: the int8 one saves minutes.
    long_run = recommend_settings(100_000, limit=limit(8))
    assert long_run.quantize and "saved are worth it" in long_run.reasons[0]
    assert long_run.embed_seconds < 100_000 / 150  # faster than the float MiniLM's


def test_long_texts_take_longer_and_chunks_checkpoint_often() -> None:
    short = recommend_settings(10_000, mean_chars=80, limit=limit(8))
    long = recommend_settings(10_000, mean_chars=600, limit=limit(8))
    assert long.embed_seconds > 3 * short.embed_seconds
    assert recommend_settings(1_000, limit=limit(8)).chunk_size == 100


def test_it_reads_the_real_limit_by_default() -> None:
    assert recommend_settings(100).headroom_bytes > 0
    with pytest.raises(ValueError, match="n_docs"):
        recommend_settings(0)


def test_an_embedder_takes_a_recommendation_as_it_is() -> None:
    from meno_jupyter.topics.embedder import ChunkedEmbedder

    for n_docs, free in ((5_000, 8), (20_000, 0.6), (2_000_000, 8)):
        rec = recommend_settings(n_docs, mean_chars=300, limit=limit(free))
        embedder = ChunkedEmbedder.from_recommendation(rec, progress=False)
        assert embedder.model == (None if rec.model == "minilm" else rec.model)
        assert embedder.quantize == rec.quantize
        assert (embedder.precision, embedder.chunk_size, embedder.batch_size) == (
            rec.precision, rec.chunk_size, rec.batch_size)
        assert not embedder.progress
    with pytest.raises(ValueError, match="precision must be one of"):
        ChunkedEmbedder.from_recommendation(recommend_settings(5_000), precision="float8")
