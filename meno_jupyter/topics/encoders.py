"""The encoders ``ChunkedEmbedder`` drives: in a worker process, in this one, on a cluster.

A module of its own below ``embedder`` and ``cluster``, which both use it (``cluster``
adds the Dask one): no import goes back up.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from meno_jupyter.core.memory import format_bytes
from meno_jupyter.topics._process import WorkerProcess

__all__ = ["WORKER_START_TIMEOUT_S", "Encoder", "EncoderError", "InProcessEncoder",
           "WorkerEncoder"]

WORKER_START_TIMEOUT_S = 300.0


class EncoderError(RuntimeError):
    """The encoder failed or its process died; the store keeps every finished chunk."""


class Encoder:
    """Something that turns a list of texts into float32 rows."""

    dim: int
    pid: int | None = None
    rss_bytes: int = 0

    def encode(self, texts: list[str], batch_size: int) -> np.ndarray[Any, Any]:
        """Return the embeddings of ``texts`` as a (len(texts), dim) float32 array."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the encoder."""

    def memory_text(self) -> str:
        """Say the encoder's memory, for the progress bar."""
        return f"encoder {format_bytes(self.rss_bytes)}"


class WorkerEncoder(Encoder):
    """A sentence-transformers model in a spawned process (torch never enters the kernel)."""

    def __init__(self, spec: str | None, device: str = "cpu") -> None:
        from meno_jupyter.topics._worker import serve

        self._worker = WorkerProcess(serve, (spec, device), name="meno-encoder",
                                     label="the encoder process", error=EncoderError)
        self.pid = self._worker.pid
        reply = self._worker.receive("loading the model", WORKER_START_TIMEOUT_S)
        self.dim, self.rss_bytes = int(reply[1]), int(reply[2])

    def encode(self, texts: list[str], batch_size: int) -> np.ndarray[Any, Any]:
        """Send ``texts`` to the worker and wait for their embeddings."""
        self._worker.send("encode", texts, batch_size)
        reply = self._worker.receive(f"encoding {len(texts)} documents", 3_600.0)
        self.rss_bytes = int(reply[2])
        return np.asarray(reply[1], dtype=np.float32)

    def close(self) -> None:
        """Ask the worker to stop; kill it if it does not."""
        self._worker.close()


class InProcessEncoder(Encoder):
    """Any object with ``encode(texts, batch_size=...)``, called in this process."""

    def __init__(self, model: Any) -> None:
        self.model = model
        probe = self.encode(["dimension probe"], 1)
        self.dim = int(probe.shape[1])

    def encode(self, texts: list[str], batch_size: int) -> np.ndarray[Any, Any]:
        """Call the model's ``encode``."""
        try:
            rows = self.model.encode(texts, batch_size=batch_size)
        except TypeError:  # an encode without batch_size
            rows = self.model.encode(texts)
        array = np.asarray(rows, dtype=np.float32)
        if array.ndim != 2 or array.shape[0] != len(texts):
            raise EncoderError(f"{type(self.model).__name__}.encode returned shape "
                               f"{array.shape} for {len(texts)} texts; expected (n, dim)")
        return array
