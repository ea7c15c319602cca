"""The warm encoder: one worker kept between embed calls, closed when idle, never orphaned."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from meno_jupyter.core.monitor import shrink_caches
from meno_jupyter.topics import ChunkedEmbedder
from meno_jupyter.topics.encoders import WorkerEncoder, warm_encoders
from meno_jupyter.topics.quantized import build_quantized_model

TEXTS = ["memory in notebooks", "a kernel that was killed", "topics of a corpus"] * 4


@pytest.fixture(autouse=True)
def no_warm_worker_left() -> object:
    build_quantized_model(verbose=False)
    warm_encoders.close()
    yield
    warm_encoders.close()


def worker_pids(embedder: ChunkedEmbedder, texts: list[str], folder: Path) -> set[int]:
    """Embed ``texts``; return the pids of the encoder processes that did the work."""
    seen: set[int] = set()
    embedder.embed(texts, folder, on_chunk=lambda store, index, encoder: seen.add(encoder.pid))
    return seen


def gone(pid: int, within_s: float = 10.0) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
            return True
        time.sleep(0.05)
    return False


def test_the_second_call_reuses_the_worker_and_close_ends_it(tmp_path: Path) -> None:
    embedder = ChunkedEmbedder(quantize=True, chunk_size=6, progress=False)
    first = worker_pids(embedder, TEXTS, tmp_path / "a")
    assert len(first) == 1 and warm_encoders.pids() == list(first)
    started = time.perf_counter()
    second = worker_pids(embedder, TEXTS[::-1], tmp_path / "b")
    assert second == first  # no new process, no model loaded again
    assert time.perf_counter() - started < 5  # a cold start loads the model first
    # Another embedder of the same model borrows the same worker too.
    assert worker_pids(ChunkedEmbedder(quantize=True, progress=False), TEXTS[:2],
                       tmp_path / "c") == first
    embedder.close()
    (pid,) = first
    assert gone(pid) and warm_encoders.pids() == []


def test_an_idle_worker_closes_itself(tmp_path: Path) -> None:
    embedder = ChunkedEmbedder(quantize=True, progress=False, keep_warm_s=0.5)
    (pid,) = worker_pids(embedder, TEXTS, tmp_path / "a")
    assert psutil.pid_exists(pid)
    assert gone(pid, within_s=10) and warm_encoders.pids() == []
    cold = ChunkedEmbedder(quantize=True, progress=False, keep_warm_s=0)
    (pid,) = worker_pids(cold, TEXTS, tmp_path / "b")
    assert gone(pid, within_s=1) and warm_encoders.pids() == []


def test_a_killed_worker_is_started_again_and_says_so(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    embedder = ChunkedEmbedder(quantize=True, progress=False)
    (pid,) = worker_pids(embedder, TEXTS, tmp_path / "a")
    os.kill(pid, signal.SIGKILL)
    assert gone(pid)
    (again,) = worker_pids(embedder, TEXTS, tmp_path / "b")
    assert again != pid
    assert f"the encoder process (pid {pid}) had died (killed by signal 9)" in (
        capsys.readouterr().out)
    assert warm_encoders.pids() == [again]


def test_memory_pressure_closes_idle_workers(tmp_path: Path) -> None:
    (pid,) = worker_pids(ChunkedEmbedder(quantize=True, progress=False), TEXTS, tmp_path / "a")
    assert shrink_caches(0.5) >= 50 * 1024**2  # the worker's RSS was given back
    assert gone(pid) and warm_encoders.pids() == []


def test_an_interrupted_call_never_lends_its_worker_again(tmp_path: Path) -> None:
    embedder = ChunkedEmbedder(quantize=True, chunk_size=3, progress=False)
    seen: list[int] = []

    def interrupt(store: object, index: int, encoder: WorkerEncoder) -> None:
        seen.append(encoder.pid or 0)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        embedder.embed(TEXTS, tmp_path / "a", on_chunk=interrupt)
    assert gone(seen[0]) and warm_encoders.pids() == []


def test_the_worker_ends_with_the_interpreter(tmp_path: Path) -> None:
    script = (
        "from meno_jupyter.topics import ChunkedEmbedder\n"
        "seen = []\n"
        f"ChunkedEmbedder(quantize=True, progress=False).embed({TEXTS!r}, {str(tmp_path)!r},"
        " on_chunk=lambda s, i, e: seen.append(e.pid))\n"
        "print(seen[0], flush=True)\n")
    done = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    pid = int(done.stdout.split()[-1])
    assert gone(pid, within_s=5)  # no orphan encoder left behind


def test_bad_keep_warm_s() -> None:
    with pytest.raises(ValueError, match="keep_warm_s must be a number of seconds"):
        ChunkedEmbedder(keep_warm_s=-1)
    with pytest.raises(ValueError, match="keep_warm_s"):
        ChunkedEmbedder(keep_warm_s="long")  # type: ignore[arg-type]
