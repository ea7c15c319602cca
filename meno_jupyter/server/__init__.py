"""Jupyter server extension: kernel memory from outside the kernels, over authenticated REST.

Enabled on install (``jupyter-config/``). Configure with traitlets, for example in
``jupyter_server_config.py``::

    c.MenoServer.interval_s = 0.5     # sample twice a second
    c.MenoServer.history_s = 7200     # keep two hours per kernel
    c.MenoServer.limit_bytes = 8 * 2**30  # measure against 8 GiB (default: cgroup)
"""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path
from typing import Any

from traitlets import Float, Int, default
from traitlets.config import Configurable

from meno_jupyter.core.memory import MemoryLimit, configured_limit, effective_limit


class MenoServer(Configurable):
    """Settings of the server-side kernel sampler."""

    interval_s = Float(1.0, help="Seconds between samples of every kernel's memory.").tag(
        config=True)
    history_s = Float(3_600.0, help="Seconds of history kept per kernel.").tag(config=True)
    limit_bytes = Int(
        0, help="The memory limit to measure kernels against, in bytes; 0: the cgroup's "
        "(or the machine's). Defaults to $MEM_LIMIT where set (as on JupyterHub).",
    ).tag(config=True)

    @default("limit_bytes")
    def _limit_from_environment(self) -> int:
        return configured_limit() or 0

    def limit(self) -> MemoryLimit:
        """Return the effective limit, or the configured one when it is set."""
        found = effective_limit()
        if self.limit_bytes <= 0:
            return found
        return dataclasses.replace(found, limit_bytes=self.limit_bytes,
                                   source="configured (MenoServer.limit_bytes / MEM_LIMIT)")


def _load_jupyter_server_extension(serverapp: Any) -> None:
    """Start the kernel sampler and add the ``/meno-jupyter/`` routes."""
    from tornado.ioloop import PeriodicCallback

    from meno_jupyter.server.deaths import DeathWatch
    from meno_jupyter.server.handlers import handlers, locate_kernels
    from meno_jupyter.server.sampler import KernelSampler

    config = MenoServer(parent=serverapp)
    kernel_manager = serverapp.kernel_manager
    sampler = KernelSampler(lambda: locate_kernels(kernel_manager),
                            interval_s=config.interval_s, history_s=config.history_s,
                            limit_reader=config.limit)

    def samples(kernel_id: str) -> dict[str, Any] | None:
        try:
            return sampler.history(kernel_id)
        except KeyError:
            return None

    def server_limit() -> tuple[int, str]:
        limit = config.limit()
        return limit.limit_bytes, limit.source

    deaths = DeathWatch(Path(serverapp.data_dir) / "meno-jupyter", samples, server_limit)
    deaths.on_death.append(lambda death: serverapp.log.warning(deaths.describe(death)))
    orphans = deaths.scan_orphans(Path(serverapp.runtime_dir))
    if orphans:
        serverapp.log.warning("meno-jupyter: %d kernel(s) died while the server was down",
                              orphans)
    web_app = serverapp.web_app
    web_app.settings["meno_jupyter_sampler"] = sampler
    web_app.settings["meno_jupyter_deaths"] = deaths
    web_app.add_handlers(".*$", handlers(web_app.settings["base_url"]))

    async def tick() -> None:
        sampler.sample()
        with contextlib.suppress(Exception):  # the sessions only name the notebooks
            deaths.paths = {s["kernel"]["id"]: s.get("path", "")
                            for s in await serverapp.session_manager.list_sessions()
                            if s.get("kernel")}
        deaths.tick((located.kernel_id, located.pid, kernel)
                    for located, kernel in locate_kernels(kernel_manager, with_kernels=True))

    sampler.sample()
    callback = PeriodicCallback(tick, config.interval_s * 1000)
    callback.start()
    web_app.settings["meno_jupyter_sampler_callback"] = callback
    serverapp.log.info("meno-jupyter: sampling kernel memory every %.1f s", config.interval_s)


# Older jupyter_server versions look for the unprefixed name.
load_jupyter_server_extension = _load_jupyter_server_extension
