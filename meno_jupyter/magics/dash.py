"""``%memdash``: the live memory dashboard, inline or docked in JupyterLab's side area."""

from __future__ import annotations

from typing import Any

from IPython.core.magic import Magics, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments

from meno_jupyter.core.errors import check_count
from meno_jupyter.core.live import validate_refresh
from meno_jupyter.magics._common import check_identifier, parse, plain_help, show, usage_check
from meno_jupyter.shell import session_recorder

SIDECAR_HINT = ("--sidebar docks the dashboard with the sidecar package (JupyterLab only): "
                "pip install sidecar, then reload the page. Showing it here instead.")


def _ensure_ledger(shell: Any) -> str | None:
    """Turn ``%memwatch`` on so that each cell gets a marker; say so when it was off."""
    watch = session_recorder(shell)
    if watch is None or watch.watching:
        return None
    watch.start()
    return "memwatch on: every cell from now gets a marker on the timeline"


@magics_class
class DashboardMagics(Magics):
    """Holds ``%memdash``."""

    @plain_help
    @magic_arguments()
    @argument("--sidebar", action="store_true",
              help="Dock it in JupyterLab's right side area (needs the sidecar package).")
    @argument("--interval", type=float, default=0.5, metavar="S",
              help="Seconds between refreshes (default 0.5; 0.25 for 4 Hz).")
    @argument("--top", type=int, default=8, metavar="N", help="Variables listed (default 8).")
    @argument("--no-dask", action="store_true",
              help="Do not draw the Dask workers even when a client is in use.")
    @argument("--close", action="store_true", help="Close every open dashboard and stop.")
    @argument("-o", "--output", metavar="NAME", help="Store the dashboard in this variable.")
    @line_magic
    def memdash(self, line: str) -> None:
        """Show a live memory dashboard that keeps updating while other cells run.

        A timeline of the kernel's RSS (2 Hz by default, at most 2,000 points drawn) with
        the effective limit, pressure colours and a marker per executed cell; a gauge of
        RSS against the limit; the largest variables with "optimize" (DataFrames, lossless)
        and "delete" (asks first); and "free memory", which runs ``%memclean``. With a
        Dask client in use, the workers' total and each worker get a line too (Dask's own
        metrics, polled once a second). All dashboards share one sampling thread, which
        stops when the last one is closed.

        Examples::

            %memdash
            %memdash --interval 0.25 --top 12
            %memdash --sidebar          # docked at the right (pip install sidecar)
            %memdash --close
        """
        args = parse(self.memdash, line)
        check_identifier(args.output, "-o/--output")
        from meno_jupyter.widgets.dashboard import MemoryDashboard, close_all

        if args.close:
            print(f"closed {close_all()} dashboard(s)")
            return
        usage_check(validate_refresh, args.interval, option="--interval")
        usage_check(check_count, args.top, minimum=1, name="--top")
        shell = self.shell
        assert shell is not None
        said = _ensure_ledger(shell)
        if said:
            print(said)
        dash = MemoryDashboard(args.interval, shell=shell, top=args.top,
                               dask=None if args.no_dask else "auto")
        if args.output:
            shell.user_ns[args.output] = dash
        if not args.sidebar:
            show(dash)
            return
        try:
            from sidecar import Sidecar
        except ImportError:
            print(SIDECAR_HINT)
            show(dash)
            return
        sidecar = Sidecar(title="Memory", anchor="right")
        dash.containers.append(sidecar)
        with sidecar:
            show(dash)
        print("dashboard docked at the right (%memdash --close closes it)")
