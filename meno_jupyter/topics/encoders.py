"""The encoders ``ChunkedEmbedder`` drives: in a worker process, in this one, on a cluster.

A module of its own below ``embedder`` and ``cluster``, which both use it (``cluster``
adds the Dask one): no import goes back up.
"""

from __future__ import annotations

import atexit
import threading
from typing import Any

import numpy as np

from meno_jupyter.core.memory import format_bytes
from meno_jupyter.core.monitor import register_shrinkable
from meno_jupyter.topics._process import WorkerProcess

__all__ = ["DEFAULT_KEEP_WARM_S", "WORKER_START_TIMEOUT_S", "Encoder", "EncoderError",
           "InProcessEncoder", "WarmEncoders", "WorkerEncoder", "warm_encoders"]

WORKER_START_TIMEOUT_S = 300.0
DEFAULT_KEEP_WARM_S = 300.0  # an idle encoder process is closed after this


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

    def alive(self) -> bool:
        """Tell whether the worker process is still running.

        Asked of the system too: a child reaped by someone else's ``waitpid`` (an
        ignored SIGCHLD, an event loop's child watcher) looks alive to multiprocessing.
        """
        if not self._worker.process.is_alive() or self.pid is None:
            return False
        try:
            with open(f"/proc/{self.pid}/stat", "rb") as handle:
                state = handle.read().rsplit(b")", 1)[1].split()[0]
        except FileNotFoundError:
            return False
        except (OSError, IndexError):  # no /proc: multiprocessing's answer stands
            return True
        return state not in (b"Z", b"X")

    def exit_text(self) -> str:
        """Say how the worker ended (for a worker that is no longer alive)."""
        self._worker.process.join(1)
        code = self._worker.process.exitcode
        if code is None:
            return "ended, reaped elsewhere"
        return f"killed by signal {-code}" if code < 0 else f"exit code {code}"

    def close(self) -> None:
        """Ask the worker to stop; kill it if it does not."""
        self._worker.close()


class WarmEncoders:
    """Encoder processes kept between ``embed`` calls: one per model and device.

    A worker is lent to one call at a time (``acquire``) and kept warm when it comes back
    (``release``) until it has been idle ``keep_s`` seconds. It is closed sooner by
    :meth:`shrink` (the pressure actions' ``shrink_caches``, the guard's stops), by
    :meth:`close` and at interpreter exit. A worker found dead is started again, and says so.
    """

    def __init__(self) -> None:
        self._idle: dict[tuple[str | None, str], WorkerEncoder] = {}
        self._timers: dict[tuple[str | None, str], threading.Timer] = {}
        self._lock = threading.Lock()

    def acquire(self, spec: str | None, device: str) -> WorkerEncoder:
        """Return the warm worker for this model, or start one."""
        key = (spec, device)
        with self._lock:
            worker = self._idle.pop(key, None)
            timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        if worker is not None:
            if worker.alive():
                return worker
            print(f"the encoder process (pid {worker.pid}) had died ({worker.exit_text()}) "
                  "while idle; starting it again", flush=True)
            worker.close()
        return WorkerEncoder(spec, device)

    def release(self, encoder: WorkerEncoder, spec: str | None, device: str,
                keep_s: float) -> None:
        """Keep ``encoder`` warm for ``keep_s`` seconds (close it at once for 0 or less)."""
        key = (spec, device)
        if keep_s <= 0 or not encoder.alive():
            encoder.close()
            return
        with self._lock:
            if key in self._idle:  # another call kept one meanwhile: one per model is enough
                surplus: WorkerEncoder | None = encoder
            else:
                surplus = None
                self._idle[key] = encoder
                timer = threading.Timer(keep_s, self._expire, (key, encoder))
                timer.daemon = True
                self._timers[key] = timer
                timer.start()
        if surplus is not None:
            surplus.close()

    def _expire(self, key: tuple[str | None, str], encoder: WorkerEncoder) -> None:
        with self._lock:
            if self._idle.get(key) is not encoder:
                return
            del self._idle[key]
            self._timers.pop(key, None)
        encoder.close()

    def pids(self) -> list[int]:
        """Return the process ids of the warm (idle) workers."""
        with self._lock:
            return [worker.pid for worker in self._idle.values() if worker.pid is not None]

    def close(self, spec: str | None = None, device: str | None = None) -> int:
        """Close the idle workers (of one model, when given); return the bytes they held."""
        with self._lock:
            keys = [key for key in self._idle
                    if (spec is None and device is None) or key == (spec, device)]
            workers = [self._idle.pop(key) for key in keys]
            timers = [self._timers.pop(key) for key in keys if key in self._timers]
        for timer in timers:
            timer.cancel()
        freed = 0
        for worker in workers:
            freed += worker.rss_bytes
            worker.close()
        return freed

    def shrink(self, fraction: float = 0.5) -> int:
        """Close every idle worker (memory pressure); return the bytes they held."""
        return self.close()


warm_encoders = WarmEncoders()
register_shrinkable(warm_encoders)
atexit.register(warm_encoders.close)


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
