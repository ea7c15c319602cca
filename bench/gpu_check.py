"""Real-CUDA check of the profiler's GPU figures (run on a machine with an NVIDIA GPU).

CI has no GPU, so ``tests/core/test_gpu.py`` stands a fake in for ``torch.cuda``; this
script checks the same wiring against the real thing: per-block CUDA peaks with torch's
peak counter reset per block, nested blocks sharing the one counter, a block that only
frees, and torch imported inside the block. Exits non-zero on the first failed check.

Run: ``python bench/gpu_check.py`` (needs torch with CUDA; no other extra).
"""

from __future__ import annotations

import sys

MIB = 2**20


def check(name: str, ok: bool, detail: str) -> bool:
    print(f"{'ok  ' if ok else 'FAIL'} {name}: {detail}")
    return ok


def allocated_mib(result: object) -> float:
    peak = getattr(result, "gpu_peak_bytes", None)
    return -1.0 if peak is None else peak / MIB


def main() -> int:
    from meno_jupyter.core.profiler import Profiler

    with Profiler(timeline=False) as imported:
        import torch

        if not torch.cuda.is_available():
            print("no CUDA device: nothing to check")
            return 2
        inside = torch.empty(64 * MIB, dtype=torch.uint8, device="cuda")
        del inside
    results = [check("torch imported inside the block", allocated_mib(imported.result) >= 64,
                     f"{allocated_mib(imported.result):.0f} MiB (>= 64)")]

    big = torch.empty(1024 * MIB, dtype=torch.uint8, device="cuda")  # an earlier 1 GiB peak
    del big
    with Profiler(timeline=False) as block:
        tensor = torch.empty(256 * MIB, dtype=torch.uint8, device="cuda")
        del tensor
    results.append(check("per-block peak, earlier 1 GiB peak not counted",
                         255 <= allocated_mib(block.result) < 300,
                         f"{allocated_mib(block.result):.0f} MiB (256 expected)"))

    with Profiler(timeline=False) as outer:
        held = torch.empty(512 * MIB, dtype=torch.uint8, device="cuda")
        with Profiler(timeline=False) as inner:
            spike = torch.empty(128 * MIB, dtype=torch.uint8, device="cuda")
            del spike
        after = torch.empty(64 * MIB, dtype=torch.uint8, device="cuda")  # below the peak
        del held, after
    results.append(check("nested: inner peak includes what the outer block holds",
                         639 <= allocated_mib(inner.result) < 700,
                         f"{allocated_mib(inner.result):.0f} MiB (640 expected)"))
    results.append(check("nested: the inner reset does not hide the outer peak",
                         639 <= allocated_mib(outer.result) < 700,
                         f"{allocated_mib(outer.result):.0f} MiB (640 expected)"))

    kept = torch.empty(100 * MIB, dtype=torch.uint8, device="cuda")
    with Profiler(timeline=False) as freeing:
        del kept
    results.append(check("a block that only frees peaks at what it started with",
                         99 <= allocated_mib(freeing.result) < 130,
                         f"{allocated_mib(freeing.result):.0f} MiB (100 expected)"))
    rows = dict(freeing.result.summary_rows())
    results.append(check("the result table names the GPU peak", "GPU peak allocated" in rows,
                         str(rows.get("GPU peak allocated"))))
    print(f"device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
