"""``%%memprofile``: run a cell through the shell and show its memory."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments

from meno_jupyter.core.cluster import running_client
from meno_jupyter.core.errors import check_count
from meno_jupyter.core.ledger import CellRecord, source_head, write_export
from meno_jupyter.core.profiler import Profiler, ProfileResult
from meno_jupyter.core.sampler import DEFAULT_INTERVAL_S, validate_interval
from meno_jupyter.magics._common import (
    check_identifier,
    parse,
    plain_help,
    rich_output,
    running_cell_id,
    running_cell_number,
    show,
    usage_check,
    writable_file,
)
from meno_jupyter.shell import session_recorder


def run_cell_capturing_error(shell: Any, cell: str) -> tuple[Any, list[str] | None]:
    """Run a cell through the shell; return (ExecutionResult, traceback lines if it failed).

    The traceback the shell would have shown is captured instead of shown, so that the
    caller can show its own output first and then raise the same exception with the same
    traceback, once.
    """
    captured: list[list[str]] = []
    had_override = "_showtraceback" in shell.__dict__
    previous = shell.__dict__.get("_showtraceback")

    def capture(etype: type, evalue: BaseException, stb: list[str]) -> None:
        captured.append(stb)

    shell._showtraceback = capture
    try:
        result = shell.run_cell(cell, store_history=False)
    finally:
        if had_override:
            shell._showtraceback = previous
        else:
            del shell._showtraceback
    return result, (captured[-1] if captured else None)


def raise_cell_error(result: Any, traceback_lines: list[str] | None) -> None:
    """Re-raise a failed cell's exception so the outer cell fails exactly as it would have."""
    error = result.error_before_exec or result.error_in_exec
    if error is None:
        return
    if traceback_lines is not None:
        # IPython renders an exception that carries _render_traceback_ with those lines.
        error._render_traceback_ = lambda: traceback_lines
    raise error


def dask_client(address: str | None, refuse: bool) -> tuple[Any, bool]:
    """Return (the Dask client to measure or None, whether it was made here to be closed).

    Without an address, the client in use (``distributed.default_client()``) when
    ``distributed`` is already imported; never one started for the occasion.
    """
    if refuse:
        if address is not None:
            raise UsageError("--dask and --no-dask together: choose one")
        return None, False
    if not address:
        client = running_client()
        if client is None and address == "":
            raise UsageError("--dask: no Dask client in use here; make one (distributed."
                             "Client(...)) or name the scheduler: --dask tcp://HOST:8786")
        return client, False
    if ":" not in address:
        raise UsageError(f"--dask takes a scheduler address (tcp://HOST:8786), not {address!r}; "
                         "the client in use is found without one")
    try:
        from distributed import Client
    except ImportError:
        raise UsageError("--dask needs distributed: pip install 'meno-jupyter[dask]'") from None
    try:
        return Client(address, set_as_default=False, timeout=10), True
    except (OSError, TimeoutError) as error:
        raise UsageError(f"--dask: no scheduler answered at {address!r} ({error})") from None


def _add_to_ledger(shell: Any, result: ProfileResult, cell: str, started_at: float,
                   number: int | None, *, cell_id: str | None) -> None:
    """Record a profiled cell in the session ledger (``%memwatch`` records it itself)."""
    watch = session_recorder(shell)
    if watch is None or watch.watching:
        return
    watch.ledger.add(CellRecord(
        execution_count=number, source_head=source_head(cell),
        started_at=started_at, duration_s=result.duration_s, start_rss=result.start_rss,
        end_rss=result.end_rss, peak_rss=result.peak_rss, exact_peak=result.exact_peak,
        children_peak_rss=result.children_peak_rss, error=result.error, cell_id=cell_id,
    ))


MIN_CHART_GROWTH_BYTES = 1024 * 1024
TRACE_IS_SLOW = ("memprofile --trace: every Python allocation is traced with tracemalloc "
                 "(memray is not installed: pip install 'meno-jupyter[trace]'); "
                 "allocation-heavy code runs tens of times slower. Ctrl-C stops the cell and "
                 "still shows its profile.")


@magics_class
class ProfileMagics(Magics):
    """Holds ``%%memprofile``."""

    @plain_help
    @magic_arguments()
    @argument("-o", "--output", metavar="NAME", help="Store the ProfileResult in this variable.")
    @argument(
        "-i", "--interval", type=float, default=DEFAULT_INTERVAL_S, metavar="SECONDS",
        help="Sampling interval of the timeline (default 0.01 s).",
    )
    @argument("--trace", action="store_true",
              help="Also name the lines that allocated: memray when installed (every "
                   "allocation, native ones included, ~1.1x), else tracemalloc (slower).")
    @argument("--native", action="store_true",
              help="With --trace on memray: name the C/C++ functions under each line.")
    @argument("--keep", metavar="PATH",
              help="With --trace on memray: keep the capture there (memray flamegraph PATH).")
    @argument("--dask", nargs="?", const="", metavar="ADDRESS",
              help="Also measure every Dask worker (exact peak each): the client in use "
                   "(found without this option too), or the scheduler at ADDRESS.")
    @argument("--no-dask", action="store_true",
              help="Do not measure the Dask workers even when a client is in use.")
    @argument("--top", type=int, default=10, metavar="N",
              help="Lines to list for growth and allocations (default 10).")
    @argument("--no-plot", action="store_true", help="Show the table without the timeline.")
    @argument("--json", metavar="PATH", help="Also write the result as JSON to this file.")
    @argument("statement", nargs=argparse.REMAINDER,
              help="As a line magic: the statement to profile (after the options).")
    @line_cell_magic
    def memprofile(self, line: str, cell: str | None = None) -> None:
        """Profile the memory of a cell or a statement: exact peak, timeline, growing lines.

        %%memprofile profiles the whole cell; %memprofile STATEMENT one line, like
        %time/%%time. The code runs as usual (output, tracebacks, history). Afterwards a
        timeline of the process's RSS is shown with the exact peak (the kernel's high-water
        mark, on Linux) and the lines that were running while memory grew, then a summary
        table. If the code raises, the profile is shown and the exception surfaces as
        without the magic.

        Examples::

            %%memprofile -o prof
            frame = pd.read_csv("big.csv")

            %memprofile --top 5 rows = [{"id": i} for i in range(1_000_000)]

            %%memprofile --trace --keep cell.bin
            embeddings = model.encode(texts)      # then: memray flamegraph cell.bin
        """
        args = parse(self.memprofile, line)
        statement = " ".join(args.statement).strip()
        if cell is None:
            if not statement:
                raise UsageError("%memprofile needs a statement to profile (or use "
                                 "%%memprofile for a whole cell)")
            cell = statement
        elif statement:
            raise UsageError(f"%%memprofile takes options only on its line, not "
                             f"{statement!r}; the code goes in the cell below")
        check_identifier(args.output, "-o/--output")
        usage_check(validate_interval, args.interval, option="-i/--interval")
        usage_check(check_count, args.top, minimum=1, name="--top")
        json_path = writable_file(args.json, "--json")  # checked before the cell runs

        shell = self.shell
        assert shell is not None  # a registered magic always has its shell
        number = running_cell_number(shell)
        label = f"cell [{number}]"
        started_at = time.time()
        if (args.native or args.keep) and not args.trace:
            raise UsageError("--native and --keep apply to --trace")
        keep_path = writable_file(args.keep, "--keep")
        client, own_client = dask_client(args.dask, args.no_dask)
        try:
            profiler = Profiler(label, interval_s=args.interval, trace=args.trace,
                                top_n=args.top, native=args.native, keep_trace=keep_path,
                                dask=client)
        except ValueError as error:  # --native/--keep without memray
            if own_client:
                client.close()
            raise UsageError(str(error)) from None
        if profiler.tracer == "tracemalloc":  # said before the cell runs: no surprise
            print(TRACE_IS_SLOW, flush=True)
        try:
            with profiler as prof:
                outcome, traceback_lines = run_cell_capturing_error(shell, cell)
        finally:
            if own_client:
                client.close()
        result: ProfileResult = prof.result
        cell_error = outcome.error_before_exec or outcome.error_in_exec
        if cell_error is not None:
            result = dataclasses.replace(result, error=type(cell_error).__name__)

        if args.output:
            shell.user_ns[args.output] = result
        try:
            _add_to_ledger(shell, result, cell, started_at, number,
                           cell_id=running_cell_id(shell))
            self._display(result, plot=not args.no_plot)
            if json_path is not None:
                write_export(json_path, result.to_json())
        except Exception as error:  # the report failing never hides the cell's own outcome
            print(f"memprofile: the report could not be completed ({type(error).__name__}: "
                  f"{error}); the cell itself ran", file=sys.stderr)
        raise_cell_error(outcome, traceback_lines)

    def _display(self, result: ProfileResult, plot: bool) -> None:
        # Nothing grew: a flat full-size chart says nothing the table does not.
        grew = result.peak_increase >= MIN_CHART_GROWTH_BYTES or result.growth_lines
        if plot and grew and rich_output(self.shell):
            from meno_jupyter.display.figures import figure_bundle, profile_figure_spec

            show(figure_bundle(profile_figure_spec(result), "memory timeline"), raw=True)
        show(result)
