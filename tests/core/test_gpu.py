"""The GPU figures without a GPU: absent but harmless, and wired through when CUDA reports.

No GPU machine runs CI, so torch.cuda is stood in for by a module exposing the four calls
the core makes; a real CUDA run is a manual check on a GPU machine.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator

import pytest

from meno_jupyter.core.gpu import GPU_PEAK_WATCH, cuda_in_use
from meno_jupyter.core.profiler import Profiler


class FakeCuda:
    def __init__(self, available: bool = True, broken: bool = False) -> None:
        self.available, self.broken = available, broken
        self.allocated = 0
        self.peak = 0

    def is_available(self) -> bool:
        if self.broken:
            raise RuntimeError("CUDA driver initialization failed")
        return self.available

    def max_memory_allocated(self) -> int:
        return self.peak

    def reset_peak_memory_stats(self) -> None:
        self.peak = self.allocated

    def allocate(self, n_bytes: int) -> None:
        self.allocated += n_bytes
        self.peak = max(self.peak, self.allocated)

    def free(self, n_bytes: int) -> None:
        self.allocated -= n_bytes


@pytest.fixture
def fake_torch(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeCuda]:
    cuda = FakeCuda()
    module = types.ModuleType("torch")
    module.cuda = cuda  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "torch", module)
    yield cuda


def test_without_torch_there_is_no_gpu_figure() -> None:
    assert "torch" not in sys.modules
    assert not cuda_in_use()
    with Profiler() as prof:
        pass
    assert prof.result.gpu_peak_bytes is None


def test_a_broken_cuda_does_not_break_profiling(fake_torch: FakeCuda) -> None:
    fake_torch.broken = True
    with Profiler() as prof:
        pass
    assert prof.result.gpu_peak_bytes is None


def test_cuda_unavailable_gives_no_gpu_figure(fake_torch: FakeCuda) -> None:
    fake_torch.available = False
    with Profiler() as prof:
        pass
    assert prof.result.gpu_peak_bytes is None


def test_gpu_peak_of_a_block_and_of_nested_blocks(fake_torch: FakeCuda) -> None:
    fake_torch.allocate(100)
    with Profiler() as outer:
        fake_torch.allocate(1000)
        fake_torch.free(1000)
        with Profiler() as inner:
            fake_torch.allocate(300)
            fake_torch.free(300)
    assert inner.result.gpu_peak_bytes == 400
    assert outer.result.gpu_peak_bytes == 1100  # the inner reset did not erase it
    assert not GPU_PEAK_WATCH._open
