"""``%memwatch``: the session ledger, one record per cell, from IPython's run-cell hooks."""

from __future__ import annotations

import atexit
import contextlib
from pathlib import Path
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments
from traitlets import Bool, Int

from meno_jupyter.core.cellbadges import cell_line, cell_line_html
from meno_jupyter.core.errors import check_count
from meno_jupyter.core.ledger import (
    DEFAULT_MAX_CELLS,
    CellRecord,
    CellRecorder,
    Ledger,
    ledger_path_for,
    set_current_ledger,
)
from meno_jupyter.core.memory import effective_limit
from meno_jupyter.magics._common import (
    cell_id_of,
    cell_in_flight,
    check_identifier,
    kernel_connection_file,
    parse,
    plain_help,
    rich_output,
    show,
    usage_check,
    writable_file,
)


def kernel_ledger_path(shell: Any) -> Path | None:
    """Return the ledger file for the kernel running ``shell``, None outside a kernel."""
    connection_file = kernel_connection_file(shell)
    return None if connection_file is None else ledger_path_for(connection_file)


@magics_class
class WatchMagics(Magics):
    """Holds ``%memwatch`` and the hooks that feed the ledger."""

    watch_on_load = Bool(
        False, help="Start recording every cell when the extension is loaded."
    ).tag(config=True)
    max_cells = Int(DEFAULT_MAX_CELLS, help="Cells kept in the ledger.").tag(config=True)
    inline = Bool(False, help="Give every recorded cell an output with its memory line "
                              "(front ends without the labextension: VS Code, Colab, "
                              "terminal).").tag(config=True)

    def __init__(self, shell: Any = None, **kwargs: Any) -> None:
        super().__init__(shell=shell, **kwargs)
        self.ledger = Ledger(self.max_cells, path=kernel_ledger_path(shell))
        if self.ledger.path is not None:  # a shut-down kernel leaves no ledger to be served
            atexit.register(self.ledger.remove_file)
        self._recorder = CellRecorder(self.ledger)
        self._depth = 0
        self.watching = False
        self._limit_bytes: int | None = None
        set_current_ledger(self.ledger)
        if self.watch_on_load:
            self.start()

    def start(self) -> None:
        """Record every following cell."""
        if self.watching or self.shell is None:
            return
        self.shell.events.register("pre_run_cell", self._pre_run_cell)
        self.shell.events.register("post_run_cell", self._post_run_cell)
        cell_in_flight(self.shell).use("memwatch")
        self.watching = True
        set_current_ledger(self.ledger)
        with contextlib.suppress(OSError):  # the server then knows that recording began
            self.ledger.write_file()

    def stop(self) -> None:
        """Stop recording (the ledger is kept)."""
        if not self.watching or self.shell is None:
            return
        self.shell.events.unregister("pre_run_cell", self._pre_run_cell)
        self.shell.events.unregister("post_run_cell", self._post_run_cell)
        cell_in_flight(self.shell).release("memwatch")
        self._recorder.cancel()
        self._depth = 0
        self.watching = False

    def _pre_run_cell(self, info: Any) -> None:
        # Cells run from inside a cell (%%memprofile, %%memleak) belong to the outer one.
        self._depth += 1
        if self._depth == 1 and self.shell is not None:
            self._recorder.begin(self.shell.execution_count, getattr(info, "raw_cell", "") or "",
                                 cell_id_of(info))

    def _post_run_cell(self, result: Any) -> None:
        if self._depth == 1:
            error = result.error_before_exec or result.error_in_exec
            # The result carries the cell's final In [N]; ipykernel may not have set it yet
            # when pre_run_cell fires.
            record = self._recorder.end(None if error is None else type(error).__name__,
                                        getattr(result, "execution_count", None))
            if self.inline and record is not None:
                self._show_inline(record)
        self._depth = max(0, self._depth - 1)

    def _show_inline(self, record: CellRecord) -> None:
        """Show the cell's memory line as its own output (text and self-contained HTML)."""
        if self._limit_bytes is None:
            self._limit_bytes = effective_limit().limit_bytes
        text = cell_line(record.peak_increase, record.delta, record.duration_s,
                         record.peak_rss / self._limit_bytes if self._limit_bytes else None)
        show({"text/plain": text, "text/html": cell_line_html(text)}, raw=True)

    @plain_help
    @magic_arguments()
    @argument("action", nargs="?", choices=("on", "off"),
              help="on: record every cell from now; off: stop. Without it, show the ledger.")
    @argument("--inline", action="store_true",
              help="With on: every cell also gets an output with its memory line (for VS "
                   "Code, Colab, nbviewer and the terminal, where no badges show).")
    @argument("--no-inline", action="store_true", help="With on: stop the inline lines.")
    @argument("--top", type=int, default=20, metavar="N", help="Rows to show (default 20).")
    @argument("--json", metavar="PATH", help="Export the ledger as JSON.")
    @argument("--csv", metavar="PATH", help="Export the ledger as CSV.")
    @argument("--clear", action="store_true", help="Forget the cells recorded so far.")
    @argument("-o", "--output", metavar="NAME", help="Store the ledger as a DataFrame.")
    @argument("--no-plot", action="store_true", help="Show the table without the chart.")
    @line_magic
    def memwatch(self, line: str) -> None:
        """Record every cell's memory: exact peak, delta, duration; show or export the ledger.

        ``%memwatch on`` starts recording (about 0.1 ms a cell: no thread, an exact peak
        from the kernel's high-water mark); ``%memwatch`` shows the table and a chart of
        RSS across the session with the largest cells highlighted. In a kernel the ledger
        is also kept in a small JSON file beside the kernel's connection file, for the
        JupyterLab sidebar. Start it on load with ``c.WatchMagics.watch_on_load = True``.
        ``--inline`` gives every later cell an output with its line ("peak +300.0 MiB ·
        kept +4.0 KiB · 183 ms · 12 % of limit"): front ends without the labextension
        (VS Code, Colab, nbviewer, terminal IPython) show it, and it is saved with the
        notebook (``c.WatchMagics.inline = True``).

        Examples::

            %memwatch on
            %memwatch on --inline
            %memwatch --top 50
            %memwatch --csv cells.csv
            import meno_jupyter; meno_jupyter.ledger()   # as a DataFrame
        """
        args = parse(self.memwatch, line)
        check_identifier(args.output, "-o/--output")
        usage_check(check_count, args.top, minimum=1, name="--top")
        json_path = writable_file(args.json, "--json")
        csv_path = writable_file(args.csv, "--csv")
        # Exported before --clear, so "export and start afresh" loses nothing.
        for path, option, export in ((json_path, "--json", self.ledger.to_json),
                                     (csv_path, "--csv", self.ledger.to_csv)):
            if path is not None:
                try:
                    export(path)
                except OSError as error:
                    raise UsageError(f"{option}: cannot write {path}: {error.strerror}; the "
                                     "ledger is unchanged") from None
        if args.output and self.shell is not None:
            self.shell.user_ns[args.output] = self.ledger.to_frame()
        if args.clear:
            print(f"memwatch: {len(self.ledger)} cells forgotten")
            self.ledger.clear()
        if (args.inline or args.no_inline) and args.action != "on":
            raise UsageError("--inline and --no-inline go with on: %memwatch on --inline")
        if args.action == "on":
            self.start()
            if args.inline or args.no_inline:
                self.inline = args.inline
            print(f"memwatch on: recording every cell (ledger keeps {self.ledger.max_cells})"
                  + ("; each cell also shows its memory line (in JupyterLab and Notebook 7 "
                     "the badges under the cells show it already)" if self.inline else ""))
        elif args.action == "off":
            self.stop()
            print(f"memwatch off: {len(self.ledger)} cells recorded")
        if (args.action is None and json_path is None and csv_path is None
                and not args.clear):
            if len(self.ledger) and not args.no_plot and rich_output(self.shell):
                from meno_jupyter.display.figures import figure_bundle, ledger_figure

                show(figure_bundle(ledger_figure(self.ledger), "memory across the session"),
                     raw=True)
            from meno_jupyter.core.rendering import mimebundle

            show(mimebundle(lambda: self.ledger.to_text(args.top),
                            lambda: self.ledger.to_html(args.top)), raw=True)
