"""A spawned worker process spoken to over a Pipe: the encoder and the topic process.

Both keep their heavy imports (torch, BERTopic) out of the kernel and report a crash as a
clear error instead of taking the kernel down.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any


class WorkerProcess:
    """Start ``target(conn, *args)`` in a spawned daemon process and exchange messages.

    Replies are tuples; ``("error", traceback)`` and a dead process become ``error``
    exceptions whose message names ``label`` and what it was doing.
    """

    def __init__(self, target: Callable[..., None], args: tuple[Any, ...], *, name: str,
                 label: str, error: type[Exception]) -> None:
        context = multiprocessing.get_context("spawn")
        self.label = label
        self.error = error
        self._conn, child = context.Pipe()
        self.process = context.Process(target=target, args=(child, *args), name=name,
                                       daemon=True)
        self.process.start()
        child.close()
        self.pid = self.process.pid

    def send(self, *message: Any) -> None:
        """Send a message; a dead worker is reported by the next :meth:`receive`."""
        with contextlib.suppress(BrokenPipeError, OSError):
            self._conn.send(message)

    def receive(self, doing: str, timeout_s: float | None = None) -> tuple[Any, ...]:
        """Wait for the next reply (at most ``timeout_s``, stopping the worker after it)."""
        try:
            if timeout_s is not None and not self._conn.poll(timeout_s):
                self.close()
                raise self.error(f"{self.label} did not answer within {timeout_s:.0f} s "
                                 f"while {doing}; it was stopped")
            reply: tuple[Any, ...] = self._conn.recv()
        except (EOFError, OSError):
            self.process.join(5)
            code = self.process.exitcode
            how = f"killed by signal {-code}" if code is not None and code < 0 else (
                f"exit code {code}")
            raise self.error(f"{self.label} died ({how}) while {doing}") from None
        if reply[0] == "error":
            raise self.error(f"{self.label} failed while {doing}:\n{reply[1]}")
        return reply

    def close(self) -> None:
        """Ask the worker to stop; kill it if it does not."""
        if self.process.is_alive():
            self.send("stop")
            self.process.join(10)
            if self.process.is_alive():
                self.process.kill()
                self.process.join(5)
        self._conn.close()


def quiet_hugging_face(*, offline: bool) -> None:
    """Set up the environment of a worker that loads a Hugging Face model.

    No tokenizer threads of its own, no library chatter or progress bars (the caller shows
    its own), and with ``offline`` no question to the hub (the packaged model is on disk).
    Values the user set are kept.
    """
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if offline:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")


def build_in_worker(target: Path, build: Callable[..., None], *, name: str, label: str,
                    doing: str, error: type[Exception], timeout_s: float) -> tuple[Any, ...]:
    """Run ``build(conn, partial_dir)`` in a spawned process, then move its folder to ``target``.

    For models derived once and cached (the static model, the quantized one): the heavy
    imports stay in the worker, and an interrupted build leaves no half-written model
    behind. Returns the worker's ``("done", ...)`` reply.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"{target.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    worker = WorkerProcess(build, (str(partial),), name=name, label=label, error=error)
    try:
        reply = worker.receive(doing, timeout_s)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    finally:
        worker.close()
    if target.exists():
        shutil.rmtree(target)
    partial.rename(target)
    return reply
