"""%memdash over the widget protocol of a real kernel: what VS Code and Colab receive and send.

Neither runs the labextension; both render ipywidgets from the kernel's comm messages. This
talks to a real kernel as such a front end does: it reads the widget models the kernel opens,
the view it displays and the live updates, then clicks a button by a comm message.
"""

from __future__ import annotations

import contextlib
import queue
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.cgrouphelp import start_kernel_in, stop_kernel

pytestmark = pytest.mark.kernel

VIEW = "application/vnd.jupyter.widget-view+json"


@pytest.fixture
def kernel() -> Iterator[tuple[Any, Any]]:
    manager, client = start_kernel_in(None)
    try:
        yield manager, client
    finally:
        stop_kernel(manager, client)


def messages_for(client: Any, seconds: float) -> list[dict[str, Any]]:
    """Every iopub message that arrives within ``seconds``."""
    found: list[dict[str, Any]] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(queue.Empty):
            found.append(client.get_iopub_msg(timeout=0.1))
    return found


def messages_until_idle(client: Any, msg_id: str, timeout: float = 60) -> list[dict[str, Any]]:
    """Every iopub message until the kernel is idle after ``msg_id``."""
    found: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = client.get_iopub_msg(timeout=timeout)
        found.append(message)
        if (message["msg_type"] == "status" and message["parent_header"].get("msg_id") == msg_id
                and message["content"]["execution_state"] == "idle"):
            return found
    raise TimeoutError(f"the kernel did not finish in {timeout} s")


def test_the_dashboard_speaks_the_widget_protocol_both_ways(kernel: tuple[Any, Any]) -> None:
    _, client = kernel
    msg_id = client.execute("%load_ext meno_jupyter\nimport numpy as np\n"
                            "held = np.ones(2**23)\n%memdash --interval 0.2")
    first = messages_until_idle(client, msg_id)
    opened = {m["content"]["comm_id"]: m["content"]["data"]["state"] for m in first
              if m["msg_type"] == "comm_open"
              and m["content"]["target_name"] == "jupyter.widget"}
    views = [m["content"]["data"][VIEW]["model_id"] for m in first
             if m["msg_type"] == "display_data" and VIEW in m["content"]["data"]]
    errors = [m["content"] for m in first if m["msg_type"] == "error"]
    assert not errors, errors
    assert len(views) == 1 and views[0] in opened  # the view shows a model it was sent
    names = {state.get("_model_name") for state in opened.values()}
    assert {"VBoxModel", "ButtonModel", "FloatProgressModel", "HTMLModel"} <= names, names
    # Live: the kernel keeps sending new state (the gauge, the header) with no cell running.
    later = messages_for(client, 2)
    updates = [m for m in later if m["msg_type"] == "comm_msg"
               and m["content"]["data"].get("method") == "update"]
    assert len(updates) >= 3, [m["msg_type"] for m in later]
    assert {m["content"]["comm_id"] for m in updates} <= set(opened)

    # A front end's click: the "close" button's model gets the event ipywidgets sends.
    close = next(comm for comm, state in opened.items()
                 if state.get("_model_name") == "ButtonModel"
                 and state.get("description") == "close")
    click = client.session.msg("comm_msg", {"comm_id": close, "data": {
        "method": "custom", "content": {"event": "click"}}})
    client.shell_channel.send(click)
    after = messages_for(client, 4)
    closed = {m["content"]["comm_id"] for m in after if m["msg_type"] == "comm_close"}
    assert views[0] in closed and close in closed  # the dashboard and its widgets are gone
    quiet = messages_for(client, 1.5)
    assert not [m for m in quiet if m["msg_type"] == "comm_msg"]  # no more updates
