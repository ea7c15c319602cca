"""Small file systems mounted for a test (root): a full disk, a read-only one, a tmpfs.

Where mounting is not allowed the test is skipped with the reason; under CI it fails
instead, since CI's machines allow it.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def mounted(path: Path, steps: list[list[str]], what: str) -> Iterator[Path]:
    """Make ``path``, run ``steps`` (the last mounts it), yield it, unmount it."""
    path.mkdir(mode=0o700)
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            if os.environ.get("CI"):
                pytest.fail(f"CI must be able to mount {what}: {done.stderr}")
            pytest.skip(f"needs to mount {what} (root): {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=False)


def small_tmpfs(path: Path, size: str, options: str = "mode=0700"
                ) -> contextlib.AbstractContextManager[Path]:
    """A tmpfs of ``size`` ("8m") at ``path``; ``options`` such as "ro"."""
    return mounted(path, [["mount", "-t", "tmpfs", "-o", f"size={size},{options}", "tmpfs",
                           str(path)]], f"a small tmpfs ({options})")


def small_ext4(path: Path, megabytes: int) -> contextlib.AbstractContextManager[Path]:
    """A real ext4 file system of a few MiB at ``path``, from an image file (loop device)."""
    image = path.with_suffix(".img")
    with image.open("wb") as handle:
        handle.truncate(megabytes * 2**20)
    return mounted(path, [["mkfs.ext4", "-q", "-F", str(image)],
                          ["mount", "-o", "loop", str(image), str(path)]],
                   "a small ext4 image (loop devices)")
