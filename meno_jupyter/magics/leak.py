"""``%%memleak``: run a cell several times and tell whether it leaks."""

from __future__ import annotations

from typing import Any

from IPython.core.magic import Magics, cell_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments
from IPython.utils.capture import capture_output

from meno_jupyter.core.errors import check_count
from meno_jupyter.core.leaks import find_leaks
from meno_jupyter.magics._common import check_identifier, parse, plain_help, show, usage_check
from meno_jupyter.magics.profile import raise_cell_error, run_cell_capturing_error


class _CellFailedError(Exception):
    """The repeated cell raised; carries what is needed to re-raise it as the cell's error."""

    def __init__(self, outcome: Any, traceback_lines: list[str] | None) -> None:
        super().__init__("cell failed")
        self.outcome = outcome
        self.traceback_lines = traceback_lines


@magics_class
class LeakMagics(Magics):
    """Holds ``%%memleak``."""

    @plain_help
    @magic_arguments()
    @argument("-n", "--repeat", type=int, default=10, metavar="N",
              help="Measured runs (default 10, at least 3).")
    @argument("--warmup", type=int, default=2, metavar="W",
              help="Unmeasured runs first, for caches and imports (default 2).")
    @argument("--no-trace", action="store_true",
              help="Skip tracemalloc (faster; no per-line evidence).")
    @argument("-o", "--output", metavar="NAME", help="Store the LeakReport in this variable.")
    @cell_magic
    def memleak(self, line: str, cell: str) -> None:
        """Run the cell ``warmup + N`` times and report whether memory grows with every run.

        After each run a full garbage collection; then the RSS, the count of live objects
        by type and (unless ``--no-trace``) tracemalloc's retained size per line. A leak is
        reported when some object type or line grows steadily, or when RSS grows more than
        its noise allows; growth per run comes with its standard error and R². The cell's
        output is shown once (from the first run). Python API: ``meno_jupyter.find_leaks``.

        Examples::

            %%memleak -n 20
            results.append(model.predict(batch))
        """
        args = parse(self.memleak, line)
        check_identifier(args.output, "-o/--output")
        usage_check(check_count, args.repeat, minimum=3, name="-n/--repeat")
        usage_check(check_count, args.warmup, minimum=0, name="--warmup")
        shell = self.shell
        assert shell is not None
        runs = 0

        def run_once() -> None:
            nonlocal runs
            runs += 1
            if runs == 1:
                outcome, traceback_lines = run_cell_capturing_error(shell, cell)
            else:
                with capture_output():
                    outcome, traceback_lines = run_cell_capturing_error(shell, cell)
            if not outcome.success:
                raise _CellFailedError(outcome, traceback_lines)

        try:
            report = find_leaks(run_once, args.repeat, warmup=args.warmup,
                                trace=not args.no_trace)
        except _CellFailedError as failed:
            print(f"%%memleak stopped: the cell raised on run {runs}")
            raise_cell_error(failed.outcome, failed.traceback_lines)
            return
        if args.output:
            shell.user_ns[args.output] = report
        show(report)
