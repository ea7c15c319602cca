from __future__ import annotations

import json
import mmap
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from meno_jupyter.core.memory import MIB, allocator_free_bytes
from meno_jupyter.core.profiler import Profiler, ProfileResult, profile_call
from tests.memhelp import keep, spike

LINUX = sys.platform.startswith("linux")


def spike_then_keep() -> mmap.mmap:
    spike(64)
    return keep(100)


@pytest.mark.skipif(not LINUX, reason="exact peak needs /proc/self/clear_refs")
def test_exact_peak_and_delta() -> None:
    with Profiler(interval_s=0.5) as prof:  # far too slow to sample the spike
        kept = spike_then_keep()
    result = prof.result
    assert result.exact_peak
    assert 99 * MIB <= result.delta <= 102 * MIB
    assert 99 * MIB <= result.peak_increase <= 102 * MIB
    assert result.peak_rss == result.start_rss + result.peak_increase
    kept.close()


@pytest.mark.skipif(not LINUX, reason="exact peak needs /proc/self/clear_refs")
def test_spike_alone_is_reported_exactly() -> None:
    with Profiler(interval_s=0.5) as prof:
        spike(64)
    assert 63.5 * MIB <= prof.result.peak_increase <= 65 * MIB
    assert abs(prof.result.delta) < 2 * MIB


def test_sampled_peak_when_exact_is_off() -> None:
    with Profiler(exact=False, interval_s=0.002) as prof:
        kept = keep(80)
        time.sleep(0.05)  # long enough to be sampled
    assert not prof.result.exact_peak
    assert prof.result.peak_increase >= 75 * MIB
    kept.close()


def test_result_fields_timeline_and_json() -> None:
    with Profiler("demo", interval_s=0.005) as prof:
        kept = spike_then_keep()
    result = prof.result
    timeline = result.timeline
    assert list(timeline.columns) == ["t_s", "rss_bytes"]
    assert len(timeline) >= 2
    assert timeline["t_s"].is_monotonic_increasing
    data = json.loads(result.to_json())
    assert data["label"] == "demo"
    assert data["peak_increase"] == result.peak_increase
    assert data["delta"] == result.delta
    assert len(data["timeline"]["t_s"]) == len(timeline)
    assert result.gpu_peak_bytes is None  # torch is not imported here
    assert result.limit_bytes and result.limit_source
    bundle = result._repr_mimebundle_()
    assert "peak increase" in bundle["text/plain"]
    assert "<table" in bundle["text/html"]
    kept.close()


def test_growth_lines_name_the_allocating_line() -> None:
    with Profiler(interval_s=0.002, growth_threshold_bytes=2 * MIB) as prof:
        blocks = []
        for _ in range(25):
            blocks.append(np.ones(4 * MIB // 8)); np.sqrt(blocks[-1])  # noqa: E702
    labels = [g.line.source for g in prof.result.growth_lines]
    assert any("blocks.append" in label for label in labels), labels
    del blocks


def allocate_python_objects() -> list[dict[str, int]]:
    return [{"i": i} for i in range(200_000)]


@pytest.mark.parametrize("tracer", ["memray", "tracemalloc"])
def test_trace_reports_the_python_allocation_line(tracer: str) -> None:
    with Profiler(trace=True, tracer=tracer, top_n=5) as prof:
        rows = allocate_python_objects()
    result = prof.result
    assert result.top_lines
    top = result.top_lines[0]
    assert "range(200_000)" in top.line.source
    assert top.retained_bytes >= 200_000 * 64  # a dict is at least 64 bytes
    assert result.traced_peak_bytes is not None and result.traced_peak_bytes >= top.retained_bytes
    del rows


def test_an_exception_in_the_block_still_gives_a_result() -> None:
    prof = Profiler()
    with pytest.raises(KeyError), prof:
        raise KeyError("boom")
    assert prof.result.error == "KeyError"
    assert not prof.running


def test_a_profiler_measures_one_block() -> None:
    prof = Profiler()
    with prof:
        pass
    with pytest.raises(RuntimeError), prof:
        pass


def test_result_before_the_end_is_an_error() -> None:
    with Profiler() as prof, pytest.raises(RuntimeError, match="not finished"):
        _ = prof.result


def test_top_n_is_checked() -> None:
    with pytest.raises(ValueError):
        Profiler(top_n=0)


CHILD_PEAK_SCRIPT = """
import multiprocessing
import numpy as np
from meno_jupyter.core.profiler import Profiler

def child_work(mib):
    block = np.ones(mib * 2**20 // 8)
    block += 1

if __name__ == "__main__":
    context = multiprocessing.get_context("fork")
    with Profiler() as prof:
        worker = context.Process(target=child_work, args=(150,))
        worker.start()
        worker.join()
    print(worker.exitcode, prof.result.children_peak_rss)
"""


@pytest.mark.skipif(not LINUX, reason="children's peak needs fork and getrusage")
def test_children_peak_counts_a_short_lived_forked_worker(tmp_path: Path) -> None:
    # In a fresh interpreter: getrusage(RUSAGE_CHILDREN) keeps the largest child ever waited
    # for, and a child forked earlier by a big test process counts the parent's pages.
    script = tmp_path / "child_peak.py"
    script.write_text(CHILD_PEAK_SCRIPT)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          check=True, timeout=120)
    exitcode, children_peak = map(int, done.stdout.split())
    assert exitcode == 0
    assert children_peak >= 140 * MIB


BIG_PARENT_SCRIPT = """
import subprocess, sys
import numpy as np
from meno_jupyter.core.profiler import Profiler

held = np.ones(400 * 2**20 // 8)  # the parent: 400 MiB touched
with Profiler() as tiny:
    subprocess.run(["true"], check=True)
grow = "import numpy as np, time; b = np.ones(150 * 2**20 // 8); time.sleep(1.5)"
with Profiler() as own:
    subprocess.run([sys.executable, "-c", grow], check=True)
print(tiny.result.children_peak_rss, own.result.children_peak_rss)
"""


@pytest.mark.skipif(not LINUX, reason="children's peak needs fork and getrusage")
def test_a_child_of_a_big_kernel_is_measured_as_its_own_memory(tmp_path: Path) -> None:
    # ru_maxrss of a forked child counts the copy of the parent: `true` "peaked" at 400 MiB.
    script = tmp_path / "big_parent.py"
    script.write_text(BIG_PARENT_SCRIPT)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          check=True, timeout=120)
    tiny, own = map(int, done.stdout.split())
    assert tiny < 32 * MIB
    assert 140 * MIB <= own < 300 * MIB


def test_profile_call_returns_value_and_result() -> None:
    value, result = profile_call(np.ones, 1000)
    assert value.shape == (1000,)
    assert isinstance(result, ProfileResult)


def test_trace_snapshots_stop_when_too_many_allocations_are_live() -> None:
    prof = Profiler(trace=True, tracer="tracemalloc")
    assert prof._trace_session is not None
    prof._trace_session._max_snapshot_tracer_bytes = 0  # any snapshot is too dear
    with prof:
        rows = allocate_python_objects()
    result = prof.result
    assert result.trace_note is not None and "lower bounds" in result.trace_note
    assert result.tracer_bytes and result.tracer_bytes > 0
    assert "lower bounds" in str(result)
    assert result.top_lines and "range(200_000)" in result.top_lines[0].line.source
    del rows


@pytest.mark.skipif(allocator_free_bytes() is None, reason="needs glibc's mallinfo2 (2.33+)")
def test_a_block_served_from_freed_resident_memory_says_so() -> None:
    # In a fresh process: freed 8 MiB arrays stay in malloc's heap (its mmap threshold rose
    # when the first was freed); a 32 MiB array then reuses them and RSS hardly moves.
    script = textwrap.dedent("""
        import json
        import numpy as np
        from meno_jupyter.core.profiler import Profiler
        first = np.ones(4 * 2**20 - 1000); del first
        blocks = [np.ones(2**20) for _ in range(10)]; top = np.ones(2**20); del blocks
        with Profiler() as prof:
            reused = np.ones(4 * 2**20 - 1000)
        print(json.dumps({"peak": prof.result.peak_increase, "note": prof.result.reuse_note,
                          "text": str(prof.result), "reused": prof.result.reused_bytes}))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          check=True, timeout=60)
    found = json.loads(done.stdout)
    assert found["peak"] < 8 * MIB  # the 32 MiB came from resident memory
    assert found["reused"] >= 30 * MIB
    assert found["note"].startswith("The peak grew by less than the block allocated: 3")
    assert "came from memory freed earlier and still resident" in found["text"]


def test_the_reuse_note_needs_reuse_beyond_the_peak() -> None:
    with Profiler() as prof:
        pass
    result = prof.result
    assert result.peak_increase < 4 * MIB
    reused = replace(result, allocator_free_start=100 * MIB, allocator_free_end=60 * MIB)
    assert reused.reused_bytes == 40 * MIB and reused.reuse_note is not None
    assert "from 100.0 MiB to 60.0 MiB" in reused.reuse_note
    covered = replace(reused, peak_rss=result.start_rss + 50 * MIB)  # the peak shows it all
    assert covered.reuse_note is None
    small = replace(result, allocator_free_start=10 * MIB, allocator_free_end=8 * MIB)
    assert small.reuse_note is None  # 2 MiB: not worth a note
    assert replace(result, allocator_free_start=None).reuse_note is None


def test_a_line_growing_for_a_while_has_its_first_and_last_growth() -> None:
    blocks = []
    with Profiler(growth_threshold_bytes=MIB) as prof:
        for _ in range(12):
            blocks.append(np.ones(MIB)), time.sleep(0.05)  # 8 MiB each 50 ms, one line
    grew = [g for g in prof.result.growth_lines if "blocks.append" in g.line.source]
    assert grew, prof.result.growth_lines
    assert grew[0].first_t_s < 0.25 and grew[0].last_t_s > 0.4
    assert grew[0].to_dict()["last_t_s"] == grew[0].last_t_s
