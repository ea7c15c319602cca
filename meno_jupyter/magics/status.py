"""``%memstatus``: process memory, the effective limit, and the largest variables."""

from __future__ import annotations

from IPython.core.magic import Magics, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments

from meno_jupyter.core.cluster import running_client
from meno_jupyter.core.errors import check_count
from meno_jupyter.core.status import memory_status
from meno_jupyter.magics._common import (
    check_identifier,
    parse,
    plain_help,
    show,
    usage_check,
)
from meno_jupyter.magics.checkpoint import checkpoints_of
from meno_jupyter.magics.guard import guard_of
from meno_jupyter.magics.spill import spill_of
from meno_jupyter.shell import output_cache_objects, user_variables


@magics_class
class StatusMagics(Magics):
    """Holds ``%memstatus``."""

    previous_death: str | None = None  # set at load when the previous kernel died unseen

    @plain_help
    @magic_arguments()
    @argument("-o", "--output", metavar="NAME", help="Store the MemoryStatus in this variable.")
    @argument("--top", type=int, default=10, metavar="N",
              help="How many of the largest variables to list (default 10, 0 for none).")
    @argument("--no-dask", action="store_true",
              help="Leave out the Dask workers (listed when a client is in use).")
    @line_magic
    def memstatus(self, line: str) -> None:
        """Show the kernel's memory now: RSS, children, the effective limit and pressure.

        The limit is the tighter of the machine's memory and a container's cgroup limit
        (JupyterHub, Kubernetes, Docker): the kernel is killed there. Also lists the largest
        variables by deep size and what IPython's output cache (``Out``, ``_``) holds,
        whether the memory guard (``%memguard``) is on, what the last checkpoint
        (``%memcheckpoint``) holds, and, when a Dask client is in use,
        every worker's memory (RSS, managed, unmanaged, spilled, share of its limit).

        Examples::

            %memstatus
            %memstatus --top 20 -o status
        """
        args = parse(self.memstatus, line)
        check_identifier(args.output, "-o/--output")
        usage_check(check_count, args.top, minimum=0, name="--top")
        status = memory_status(
            user_variables(self.shell),
            top=args.top,
            output_cache=output_cache_objects(self.shell),
            dask=None if args.no_dask else running_client(),
        )
        if args.output and self.shell is not None:
            self.shell.user_ns[args.output] = status
        show(status)
        guard = guard_of(self.shell)
        if guard is not None:
            print(guard.describe())
        checkpoints = checkpoints_of(self.shell)
        if checkpoints is not None and checkpoints.checkpointer is not None:
            print(checkpoints.describe())
        if self.previous_death:
            print(f"meno-jupyter: {self.previous_death}")
        spill = spill_of(self.shell)
        if spill is not None and spill.store is not None and spill.store.spilled_names():
            print(spill.describe())
