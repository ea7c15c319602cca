from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from meno_jupyter.core.memory import MIB
from meno_jupyter.core.sampler import DecimatingBuffer, Sampler, validate_interval


def test_buffer_stays_bounded_and_keeps_the_peak() -> None:
    buffer = DecimatingBuffer(capacity=100)
    for i in range(100_000):
        buffer.append(float(i), 1_000_000 if i == 54_321 else i % 7)
    times, values = buffer.series()
    assert len(times) <= 100
    assert max(values) == 1_000_000
    assert times == sorted(times)
    assert buffer.stride > 1


def test_buffer_keeps_everything_below_capacity() -> None:
    buffer = DecimatingBuffer(capacity=10)
    for i in range(5):
        buffer.append(float(i), i)
    assert buffer.series() == ([0.0, 1.0, 2.0, 3.0, 4.0], [0, 1, 2, 3, 4])


def test_buffer_rejects_a_tiny_capacity() -> None:
    with pytest.raises(ValueError):
        DecimatingBuffer(capacity=1)


@pytest.mark.parametrize("interval", [0.0, -1.0, 1e-6, 3600.0])
def test_bad_intervals_are_refused(interval: float) -> None:
    with pytest.raises(ValueError, match="interval"):
        validate_interval(interval)


def test_sampler_samples_at_its_interval_and_stops() -> None:
    sampler = Sampler(interval_s=0.005).start()
    time.sleep(0.2)
    state = sampler.stop()
    assert not sampler.running
    # 0.2 s at 5 ms: about 40 samples; leave room for a loaded CI machine.
    assert 10 <= state.samples <= 60
    assert not [t for t in threading.enumerate() if t.name == "meno-sampler"]


def grow_in_steps(steps: int) -> list[np.ndarray]:
    kept = []
    for _ in range(steps):
        kept.append(np.ones(64 * MIB // 8))  # the line the sampler should blame
        time.sleep(0.002)
    return kept


def test_growth_is_attributed_to_the_user_line() -> None:
    with Sampler(interval_s=0.002, growth_threshold_bytes=2 * MIB) as sampler:
        kept = grow_in_steps(5)
    lines = sampler.growth_lines()
    assert lines, "no growth was attributed"
    top = lines[0]
    assert top.line.filename == __file__
    assert "np.ones(64 * MIB // 8)" in top.line.source
    assert top.growth_bytes >= 100 * MIB
    del kept


def test_sampler_can_start_only_once() -> None:
    sampler = Sampler()
    with sampler, pytest.raises(RuntimeError):
        sampler.start()
