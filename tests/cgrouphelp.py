"""Real memory cgroups for out-of-memory tests, and real kernels started inside them.

Root can make a child of its own memory cgroup (v1 ``memory`` controller or v2), give it a
limit and move a process in: an allocation past the limit is then SIGKILLed by the kernel's
out-of-memory killer, and the cgroup's ``oom_kill`` counter goes up. ``MemoryCgroup`` does
that and removes the child afterwards; ``CgroupKernelManager`` starts a Jupyter kernel
whose process moves itself into the cgroup before Python starts, so that everything the
kernel allocates is charged there.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import time
import uuid
from pathlib import Path
from typing import Any

from jupyter_client.manager import KernelManager

CGROUP_ROOT = Path("/sys/fs/cgroup")
MIB = 2**20


def _own_cgroup() -> tuple[Path, str] | None:
    """Return (directory of this process's memory cgroup, version), if one is writable."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        hierarchy, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            directory = CGROUP_ROOT / "memory" / path.lstrip("/")
            if (directory / "memory.limit_in_bytes").exists():
                return directory, "v1"
    for line in lines:
        hierarchy, controllers, path = line.split(":", 2)
        if hierarchy == "0" and controllers == "":
            directory = CGROUP_ROOT / path.lstrip("/")
            if "memory" in (directory / "cgroup.subtree_control").read_text().split():
                return directory, "v2"
    return None


def why_no_memory_cgroup() -> str | None:
    """Return why a memory cgroup cannot be made here, or None when it can."""
    found = _own_cgroup()
    if found is None:
        return "no memory cgroup controller is mounted for this process"
    if not os.access(found[0], os.W_OK):
        return f"cannot create a child of {found[0]} (not root, or a read-only cgroup fs)"
    return None


def require_memory_cgroup() -> None:
    """Skip (or, under CI, fail) when no memory cgroup can be made here."""
    reason = why_no_memory_cgroup()
    if reason is None:
        return
    import pytest

    if os.environ.get("CI"):
        pytest.fail(f"CI must be able to make a memory cgroup: {reason}")
    pytest.skip(f"needs a writable memory cgroup: {reason}")


class MemoryCgroup:
    """A child memory cgroup with a hard limit (and no swap); removed on :meth:`close`."""

    def __init__(self, limit_bytes: int) -> None:
        found = _own_cgroup()
        if found is None:
            raise RuntimeError(why_no_memory_cgroup())
        parent, self.version = found
        self.path = parent / f"meno-test-{uuid.uuid4().hex[:10]}"
        self.path.mkdir()
        self.limit_bytes = limit_bytes
        if self.version == "v1":
            (self.path / "memory.limit_in_bytes").write_text(str(limit_bytes))
            (self.path / "memory.swappiness").write_text("0")
        else:
            (self.path / "memory.max").write_text(str(limit_bytes))
            swap = self.path / "memory.swap.max"
            if swap.exists():
                swap.write_text("0")

    @property
    def procs_file(self) -> Path:
        """Writing a pid here moves that process into the cgroup."""
        return self.path / "cgroup.procs"

    def add(self, pid: int) -> None:
        """Move a process into the cgroup."""
        self.procs_file.write_text(str(pid))

    def release(self, pid: int) -> None:
        """Move a process back to the cgroup this one was made in."""
        (self.path.parent / "cgroup.procs").write_text(str(pid))

    def pids(self) -> list[int]:
        """Return the processes in the cgroup."""
        return [int(p) for p in self.procs_file.read_text().split()]

    def oom_kills(self) -> int:
        """Return how many processes the out-of-memory killer ended in this cgroup."""
        name = "memory.oom_control" if self.version == "v1" else "memory.events"
        for line in (self.path / name).read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        return 0

    def close(self) -> None:
        """Kill what is left inside and remove the cgroup."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            pids = self.pids()
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.05)
        while True:
            try:
                self.path.rmdir()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def __enter__(self) -> MemoryCgroup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class CgroupKernelManager(KernelManager):
    """A kernel manager whose kernels start inside ``cgroup`` (set it before starting)."""

    cgroup: MemoryCgroup | None = None

    def format_kernel_cmd(self, extra_arguments: list[str] | None = None) -> list[str]:
        command: list[str] = super().format_kernel_cmd(extra_arguments)
        if self.cgroup is None:
            return command
        # The shell moves itself into the cgroup, then becomes the kernel: nothing the
        # kernel ever allocates is charged elsewhere.
        return ["/bin/sh", "-c", f'echo $$ > "{self.cgroup.procs_file}" && exec "$@"',
                "meno-cgroup-kernel", *command]


def start_kernel_in(cgroup: MemoryCgroup | None, **kwargs: Any
                    ) -> tuple[CgroupKernelManager, Any]:
    """Start a python3 kernel inside ``cgroup`` (None: where this process is).

    Returns (manager, blocking client); ``kwargs`` go to ``start_kernel`` (``env``,
    ``extra_arguments``).
    """
    manager = CgroupKernelManager(kernel_name="python3")
    manager.cgroup = cgroup
    manager.start_kernel(**kwargs)
    client = manager.blocking_client()
    client.start_channels()
    client.wait_for_ready(timeout=60)
    return manager, client


def run_tutorial_in(limit_bytes: int, name: str, env: dict[str, str] | None = None
                    ) -> tuple[Any, int]:
    """Execute ``notebooks/<name>`` in a kernel inside a fresh cgroup of ``limit_bytes``.

    Returns the executed notebook and the cgroup's count of out-of-memory kills.
    """
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(Path(__file__).parents[1] / "notebooks" / name, as_version=4)
    with MemoryCgroup(limit_bytes) as cgroup:
        manager = CgroupKernelManager(kernel_name="python3")
        manager.cgroup = cgroup
        NotebookClient(notebook, km=manager, timeout=300,
                       resources={"metadata": {"path": "."}}).execute(
                           **({} if env is None else {"env": env}))
        return notebook, cgroup.oom_kills()


def stop_kernel(manager: Any, client: Any) -> None:
    """Stop a kernel started by :func:`start_kernel_in` (or clean up after a dead one)."""
    client.stop_channels()
    if manager.is_alive():
        manager.shutdown_kernel(now=True)
    else:
        manager.cleanup_resources()


def execute_ok(manager: Any, client: Any, code: str, timeout: float = 180) -> str:
    """Run ``code``, which must succeed; return its text output."""
    reply, text = execute(manager, client, code, timeout)
    assert reply["status"] == "ok", text
    return text


class KernelDiedError(Exception):
    """The kernel died while running the code; ``exit_code`` as the provisioner saw it."""

    def __init__(self, exit_code: int | None, output: str) -> None:
        super().__init__(f"the kernel died (exit {exit_code}) after printing {output[-300:]!r}")
        self.exit_code = exit_code
        self.output = output


def execute(manager: Any, client: Any, code: str, timeout: float = 180, *,
            silent: bool = False) -> tuple[dict[str, Any], str]:
    """Run ``code``; return (execute_reply content, what it printed or showed as text).

    ``silent`` runs it as JupyterLab's buttons run theirs (no run-cell hooks, no history).

    Raises :class:`KernelDiedError` as soon as the kernel process is gone (an OOM kill does not
    answer), rather than waiting for the timeout.
    """
    msg_id = client.execute(code, silent=silent)
    texts: list[str] = []
    deadline = time.monotonic() + timeout
    reply: dict[str, Any] | None = None
    idle = False
    while reply is None or not idle:
        if time.monotonic() > deadline:
            raise TimeoutError(f"no answer in {timeout} s to {code[:80]!r}")
        try:
            message = client.get_iopub_msg(timeout=0.1)
        except queue.Empty:
            message = None
        if message is not None and message["parent_header"].get("msg_id") == msg_id:
            idle = idle or _collect(message, texts)
        try:
            answer = client.get_shell_msg(timeout=0.01)
        except queue.Empty:
            answer = None
        if answer is not None and answer["parent_header"].get("msg_id") == msg_id:
            reply = answer["content"]
        if reply is None and message is None and not manager.is_alive():
            process = getattr(manager.provisioner, "process", None)
            raise KernelDiedError(None if process is None else process.poll(), "".join(texts))
    return reply, "".join(texts)


def _collect(message: dict[str, Any], texts: list[str]) -> bool:
    """Add an output message's text; return True for the final "idle" status."""
    content = message["content"]
    kind = message["msg_type"]
    if kind == "stream":
        texts.append(content["text"])
    elif kind in ("execute_result", "display_data"):
        texts.append(content["data"].get("text/plain", ""))
    elif kind == "error":
        texts.append(f"{content['ename']}: {content['evalue']}\n")
    return kind == "status" and content["execution_state"] == "idle"
