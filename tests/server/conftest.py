"""A real Jupyter server with the extension on (pytest-jupyter), and real kernels.

Run on their own: ``pytest -p pytest_jupyter.jupyter_server -m server tests/server``
(pytest-jupyter's fixtures reset the environment of every test in their process).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

SAMPLE_INTERVAL_S = 0.2


@pytest.fixture
def jp_server_config() -> dict[str, Any]:
    return {"ServerApp": {"jpserver_extensions": {"meno_jupyter": True}},
            "MenoServer": {"interval_s": SAMPLE_INTERVAL_S, "history_s": 600.0}}


class RunningKernel:
    """A kernel started by the server's kernel manager, with an async client."""

    def __init__(self, kernel_id: str, manager: Any, client: Any) -> None:
        self.id = kernel_id
        self.manager = manager
        self.client = client

    async def run(self, code: str, timeout: float = 120) -> list[dict[str, Any]]:
        """Execute ``code``; return its iopub output messages; fail on an error."""
        outputs: list[dict[str, Any]] = []
        reply = await self.client.execute_interactive(
            code, timeout=timeout, output_hook=outputs.append)
        assert reply["content"]["status"] == "ok", outputs
        return outputs

    async def run_cell(self, code: str, cell_id: str, timeout: float = 120) -> None:
        """Execute ``code`` as JupyterLab runs a notebook cell: its id in the metadata."""
        content = {"code": code, "silent": False, "store_history": True,
                   "user_expressions": {}, "allow_stdin": False, "stop_on_error": True}
        message = self.client.session.msg("execute_request", content,
                                          metadata={"cellId": cell_id})
        self.client.shell_channel.send(message)
        while True:
            reply = await self.client.get_shell_msg(timeout=timeout)
            if reply["parent_header"].get("msg_id") == message["header"]["msg_id"]:
                assert reply["content"]["status"] == "ok", reply["content"]
                return


@pytest.fixture
def kernel(jp_serverapp: Any, jp_asyncio_loop: Any) -> Iterator[RunningKernel]:
    """A python3 kernel started by the server (pytest-jupyter runs no async fixtures)."""
    km = jp_serverapp.kernel_manager

    async def start() -> RunningKernel:
        kernel_id = await km.start_kernel(kernel_name="python3")
        manager = km.get_kernel(kernel_id)
        client = manager.client()
        client.start_channels()
        await client.wait_for_ready(timeout=60)
        return RunningKernel(kernel_id, manager, client)

    async def stop(running: RunningKernel) -> None:
        running.client.stop_channels()
        if running.id in km:
            await km.shutdown_kernel(running.id, now=True)

    running = jp_asyncio_loop.run_until_complete(start())
    yield running
    jp_asyncio_loop.run_until_complete(stop(running))
