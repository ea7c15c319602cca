"""Topic modeling over corpora larger than RAM (the ``[topics]`` extra).

Nothing heavy is imported here: the encoder runs in a worker process, and BERTopic, UMAP
and HDBSCAN are imported when a model is fitted.
"""

from __future__ import annotations

from meno_jupyter.topics.cache import EmbeddingCache
from meno_jupyter.topics.datasets import debian_descriptions, docstring_corpus
from meno_jupyter.topics.documents import Documents
from meno_jupyter.topics.embedder import ChunkedEmbedder
from meno_jupyter.topics.encoders import EncoderError
from meno_jupyter.topics.explorer import StageTimeline, TopicExplorer, TopicProcessError
from meno_jupyter.topics.recommend import Recommendation, recommend_settings
from meno_jupyter.topics.static import StaticModelError, distill_static_model
from meno_jupyter.topics.store import (
    CorruptStoreError,
    EmbeddingStore,
    StoreError,
    StoreMeta,
    StoreMismatchError,
)

__all__ = [
    "ChunkedEmbedder",
    "CorruptStoreError",
    "Documents",
    "EmbeddingCache",
    "EmbeddingStore",
    "EncoderError",
    "Recommendation",
    "StageTimeline",
    "StaticModelError",
    "StoreError",
    "StoreMeta",
    "StoreMismatchError",
    "TopicExplorer",
    "TopicProcessError",
    "debian_descriptions",
    "distill_static_model",
    "docstring_corpus",
    "recommend_settings",
]
