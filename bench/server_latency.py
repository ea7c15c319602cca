"""Kernel memory from the server while the kernel is busy: meno-jupyter vs jupyter-resource-usage.

One Jupyter server runs both extensions and one kernel. The kernel is, in turn, idle,
busy in Python (``time.sleep``: the GIL is free) and busy in one long C call that holds
the GIL (a catastrophic regular expression). For each state the same number of requests
go to

- meno-jupyter: ``/meno-jupyter/kernels`` and ``/meno-jupyter/kernels/<id>/history``
  (measured from outside the kernel, by pid);
- jupyter-resource-usage: ``/api/metrics/v1`` (the server's process tree) and
  ``/api/metrics/v1/kernel_usage/get_usage/<id>`` (asks the kernel itself).

Then a 400 MiB spike that lasts 1.5 s: what meno's 1 s history saw, and what polling
jupyter-resource-usage every 5 s (its front end's default) saw.

Run: ``.venv/bin/python bench/server_latency.py`` (``make bench``).
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from jupyter_client import BlockingKernelClient

MIB = 2**20
REQUESTS = 12
GIL_HOLDING = "import re\nre.match(r'(a+)+$', 'a' * 28 + 'b')"  # ~8 s in C, GIL held
PYTHON_BUSY = "import time\ntime.sleep(8)"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    def __init__(self, workdir: Path) -> None:
        self.port, self.token = free_port(), secrets.token_hex(8)
        self.runtime = workdir / "runtime"
        env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(self.runtime)}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "jupyter", "server", "--no-browser", f"--port={self.port}",
             f"--ServerApp.token={self.token}", f"--ServerApp.root_dir={workdir}",
             "--ServerApp.allow_root=True", "--MenoServer.interval_s=1.0"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        deadline = time.monotonic() + 60
        while True:
            try:
                self.get("/api/status")
                break
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise
                time.sleep(0.3)
        for needed in ("/meno-jupyter/limit", "/api/metrics/v1"):
            self.get(needed)  # both extensions are enabled (installed with make bench)

    def request(self, path: str, method: str = "GET", timeout: float = 30) -> tuple[Any, float]:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}", method=method,
            data=b"{}" if method == "POST" else None,
            headers={"Authorization": f"token {self.token}"})
        start = time.perf_counter()
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = json.loads(response.read() or b"null")
        return body, time.perf_counter() - start

    def get(self, path: str) -> Any:
        return self.request(path)[0]

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(20)


def kernel_client(server: Server, kernel_id: str) -> BlockingKernelClient:
    client = BlockingKernelClient()
    client.load_connection_file(str(server.runtime / f"kernel-{kernel_id}.json"))
    client.start_channels()
    client.wait_for_ready(timeout=60)
    return client


def run_in_background(client: BlockingKernelClient, code: str) -> threading.Thread:
    def run() -> None:
        client.execute_interactive(code, timeout=120, output_hook=lambda msg: None)

    thread = threading.Thread(target=run)
    thread.start()
    time.sleep(1.0)  # let the cell start
    return thread


def latencies(server: Server, path: str, busy: threading.Thread | None) -> list[float]:
    times = []
    for _ in range(REQUESTS):
        if busy is not None and not busy.is_alive():
            break
        try:
            _, elapsed = server.request(path, timeout=30)
        except Exception:  # a timeout counts as its full wait
            elapsed = 30.0
        times.append(elapsed)
        time.sleep(0.25)
    return times


def summary(times: list[float]) -> str:
    ms = sorted(t * 1000 for t in times)
    p95 = ms[min(len(ms) - 1, int(0.95 * len(ms)))]
    return (f"median {statistics.median(ms):8.1f} ms  p95 {p95:8.1f} ms  "
            f"max {ms[-1]:8.1f} ms  (n={len(ms)})")


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(Path(tmp))
        try:
            kernel_id = server.request("/api/kernels", "POST")[0]["id"]
            client = kernel_client(server, kernel_id)
            time.sleep(2)
            endpoints = {
                "meno /meno-jupyter/kernels": "/meno-jupyter/kernels",
                "meno /meno-jupyter/kernels/<id>/history":
                    f"/meno-jupyter/kernels/{kernel_id}/history?since={time.time()}",
                "j-r-u /api/metrics/v1": "/api/metrics/v1",
                "j-r-u /api/metrics/v1/kernel_usage/<id>":
                    f"/api/metrics/v1/kernel_usage/get_usage/{kernel_id}",
            }
            results: dict[str, dict[str, list[float]]] = {}
            for state, code in (("idle", None), ("busy in Python (sleep)", PYTHON_BUSY),
                                ("busy in C holding the GIL (regex)", GIL_HOLDING)):
                print(f"\n## kernel {state}")
                for name, path in endpoints.items():
                    busy = run_in_background(client, code) if code else None
                    times = latencies(server, path, busy)
                    if busy is not None:
                        busy.join()
                    results.setdefault(name, {})[state] = times
                    print(f"{name:44s} {summary(times)}")
            gil = "busy in C holding the GIL (regex)"
            ours = statistics.median(results["meno /meno-jupyter/kernels/<id>/history"][gil])
            theirs = statistics.median(results["j-r-u /api/metrics/v1/kernel_usage/<id>"][gil])
            print(f"\nper-kernel figures while the GIL is held: j-r-u / meno median = "
                  f"{theirs / ours:.0f}x")
            spike(server, client, kernel_id)
            client.stop_channels()
        finally:
            server.stop()


def spike(server: Server, client: BlockingKernelClient, kernel_id: str) -> None:
    """A 400 MiB spike of 1.5 s: meno's history vs polling j-r-u every 5 s."""
    baseline = server.get(f"/meno-jupyter/kernels/{kernel_id}/history")["rss"][-1]
    start = time.time()
    code = ("import time\nblock = bytearray(400 * 2**20)\n"
            "for i in range(0, len(block), 4096):\n    block[i] = 1\n"
            "time.sleep(1.5)\ndel block\ntime.sleep(6)")
    thread = threading.Thread(target=lambda: client.execute_interactive(
        code, timeout=60, output_hook=lambda msg: None))
    polled: list[int] = []
    thread.start()
    while thread.is_alive():
        polled.append(int(server.get("/api/metrics/v1")["rss"]))
        time.sleep(5.0)
    thread.join()
    history = server.get(f"/meno-jupyter/kernels/{kernel_id}/history?since={start}")
    seen = max(history["rss"]) - baseline
    print(f"\n## a 400 MiB spike lasting 1.5 s\nmeno history (1 s samples): "
          f"+{seen / MIB:.0f} MiB over the kernel's baseline")
    print(f"j-r-u polled every 5 s: server tree RSS {[p // MIB for p in polled]} MiB "
          f"(spike visible: {max(polled) - min(polled) > 200 * MIB})")


if __name__ == "__main__":
    main()
