"""``%memcheckpoint`` and ``%memrestore``: a dead kernel's variables come back."""

from __future__ import annotations

import atexit
import contextlib
import os
from pathlib import Path
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments
from traitlets import Bool, Unicode

from meno_jupyter.core.checkpoint import (
    CheckpointError,
    checkpoint_directory,
    notebook_identity,
    parse_max_size,
    pointer_path_for,
    restore,
    write_pointer,
)
from meno_jupyter.core.checkpointer import Checkpointer
from meno_jupyter.core.memory import WorkingSetReader, format_bytes
from meno_jupyter.magics._common import (
    CellCounter,
    kernel_connection_file,
    parse,
    path_argument,
    plain_help,
    running_cell_number,
    show,
)
from meno_jupyter.shell import user_variables


def checkpoint_variables(shell: Any) -> dict[str, object]:
    """Return the variables a checkpoint keeps: the user's own, ``_`` names left out."""
    return {name: value for name, value in user_variables(shell).items()
            if not name.startswith("_")}


@magics_class
class MemCheckpoint(Magics):
    """Holds ``%memcheckpoint``/``%memrestore``; configure with ``c.MemCheckpoint.*``."""

    on_load = Bool(False, help="Start checkpoints when the extension is loaded.").tag(
        config=True)
    directory = Unicode("", help="Where checkpoints go (default: per notebook, under the "
                                 "Jupyter data directory).").tag(config=True)
    max_size = Unicode("8GiB", help="The most a notebook's checkpoint may take on disk.").tag(
        config=True)

    def __init__(self, shell: Any = None, **kwargs: Any) -> None:
        super().__init__(shell=shell, **kwargs)
        self.checkpointer: Checkpointer | None = None
        self._exit_registered = False
        self._counter = CellCounter(shell)
        connection_file = kernel_connection_file(shell)
        # In a kernel, a small file tells the Jupyter server where the checkpoints are: its
        # post-mortem dialog then offers to restore them.
        self.pointer_path = None if connection_file is None else pointer_path_for(
            connection_file)
        if self.on_load:
            try:
                self.start(self.directory or None, parse_max_size(self.max_size))
            except (ValueError, CheckpointError, OSError) as error:
                # A bad setting must not stop the extension (and every other magic) loading.
                print(f"meno-jupyter: checkpoints stay off: {error} (c.MemCheckpoint)")

    def default_directory(self) -> Path:
        """Return the checkpoint directory of this kernel's notebook."""
        namespace = {} if self.shell is None else self.shell.user_ns
        return checkpoint_directory(notebook_identity(os.environ, namespace, os.getcwd()))

    def notebook(self) -> str:
        """Return what names this kernel's notebook (its path, else the working directory)."""
        namespace = {} if self.shell is None else self.shell.user_ns
        return notebook_identity(os.environ, namespace, os.getcwd())

    def start(self, directory: str | None, max_bytes: int) -> Checkpointer:
        """Start checkpoints into ``directory`` (default: the notebook's); restart if on."""
        path = path_argument(directory) if directory else self.default_directory()
        reader = None
        try:
            reader = WorkingSetReader()
        except OSError:
            reader = None
        checkpointer = Checkpointer(path, notebook=self.notebook(), max_bytes=max_bytes,
                                    namespace=lambda: checkpoint_variables(self.shell),
                                    limit_reader=reader)
        self.stop()
        self.checkpointer = checkpointer
        shell = self.shell
        if shell is not None:
            shell.events.register("pre_run_cell", self._pre_run_cell)
            shell.events.register("post_run_cell", self._post_run_cell)
        if self.pointer_path is not None:
            with contextlib.suppress(OSError):
                write_pointer(self.pointer_path, path, checkpointer.session)
        if not self._exit_registered:
            atexit.register(self._exit)
            self._exit_registered = True
        return checkpointer

    def _exit(self) -> None:
        """At a clean exit: the last writer finishes (or is stopped); no death to report."""
        self.stop()
        if self.pointer_path is not None:
            self.pointer_path.unlink(missing_ok=True)

    def stop(self) -> None:
        """Stop checkpoints (the last complete one stays on disk)."""
        checkpointer, self.checkpointer = self.checkpointer, None
        shell = self.shell
        if shell is not None:
            for event, hook in (("pre_run_cell", self._pre_run_cell),
                                ("post_run_cell", self._post_run_cell)):
                if hook in shell.events.callbacks[event]:
                    shell.events.unregister(event, hook)
        if checkpointer is not None:
            checkpointer.close(timeout=10.0)

    def _pre_run_cell(self, info: Any) -> None:
        if self.checkpointer is not None:
            self.checkpointer.cell_started(self._counter.starting(info),
                                           getattr(info, "raw_cell", "") or "")

    def _post_run_cell(self, result: Any) -> None:
        if self.checkpointer is None:
            return
        self._counter.finished(result)
        info = getattr(result, "info", None)
        cell = getattr(result, "execution_count", None) or running_cell_number(self.shell) or 0
        self.checkpointer.cell_finished(checkpoint_variables(self.shell), cell,
                                        getattr(info, "raw_cell", "") or "")

    def describe(self) -> str:
        """Say whether checkpoints are on and what the last one holds."""
        if self.checkpointer is None:
            return "checkpoints off (%memcheckpoint on starts them)"
        return self.checkpointer.status()

    # ------------------------------------------------------------------ the magics

    @plain_help
    @magic_arguments()
    @argument("action", nargs="?", choices=("on", "off", "status"), default="status",
              help="on: checkpoint after every cell that changes variables; off; status "
                   "(default).")
    @argument("--dir", metavar="DIR", default=None,
              help="Where to keep them (default: per notebook, under the Jupyter data "
                   "directory; private, mode 0700).")
    @argument("--max-size", metavar="SIZE", default=None,
              help="The most the checkpoint may take on disk (default 8GiB); the variables "
                   "quickest to remake are left out first.")
    @argument("--wait", action="store_true",
              help="With status: write what waits now and wait for it.")
    @line_magic
    def memcheckpoint(self, line: str) -> None:
        """Keep the notebook's variables on disk, so that a dead kernel's come back.

        After each cell that changed variables, the changed ones are written in the
        background by a forked copy of the kernel: the cell pauses for the fork (a few
        milliseconds), never for the disk, and an unchanged variable is not written again.
        A checkpoint is complete or absent: a kill while writing keeps the previous one.
        Files are private (mode 0700) and authenticated; nothing is read back that fails
        its check. After a death, %memrestore in the new kernel brings the variables back.

        Generators, open files and connections, CUDA tensors and classes defined in the
        notebook cannot be saved: the status says which and why. Turn checkpoints on for
        every kernel with c.MemCheckpoint.on_load = True in an IPython profile.

        Examples:
          %memcheckpoint on
          %memcheckpoint on --max-size 20G --dir ~/checkpoints/analysis
          %memcheckpoint status --wait
          %memcheckpoint off
        """
        args = parse(self.memcheckpoint, line)
        if args.action != "on" and (args.dir is not None or args.max_size is not None):
            raise UsageError("--dir and --max-size go with on: %memcheckpoint on --max-size 4G")
        if args.action == "on":
            try:
                max_bytes = parse_max_size(args.max_size or self.max_size)
            except ValueError as error:
                raise UsageError(f"--max-size: {error}") from None
            try:
                checkpointer = self.start(args.dir or self.directory or None, max_bytes)
            except (CheckpointError, OSError) as error:
                raise UsageError(f"cannot keep checkpoints there: {error}") from None
            print(f"checkpoints on: after each cell that changes variables, into "
                  f"{checkpointer.directory} (size cap {format_bytes(max_bytes)})")
            return
        if args.action == "off":
            self.stop()
            print("checkpoints off (the last complete one stays on disk for %memrestore)")
            return
        if args.wait and self.checkpointer is not None:
            self.checkpointer.flush(checkpoint_variables(self.shell),
                                    running_cell_number(self.shell) or 0)
        print(self.describe())

    @plain_help
    @magic_arguments()
    @argument("directory", nargs="?", default=None,
              help="The checkpoint directory (default: this notebook's).")
    @argument("--list", action="store_true", help="Say what the checkpoint holds; restore "
                                                  "nothing.")
    @argument("--only", nargs="+", metavar="NAME", default=None,
              help="Restore only these variables.")
    @line_magic
    def memrestore(self, line: str) -> Any:
        """Bring back the variables of the notebook's last complete checkpoint.

        Run it in the new kernel after a death: it takes the newest checkpoint of another
        kernel of this notebook when there is one (a new kernel's checkpoints never replace
        a dead one's; the last three kernels' are kept). It reads from DIR, else from where
        %memcheckpoint writes now, else from c.MemCheckpoint.directory, else from the
        notebook's own directory of checkpoints. Prints what came back (as after which
        cell, when), what did not and why (with the cell that made it, to run again), and
        the cells the dead kernel ran after the checkpoint. Every file is checked before
        anything is read from it; a damaged or planted file is refused.

        Examples:
          %memrestore
          %memrestore --list
          %memrestore --only df model
          %memrestore ~/checkpoints/analysis
        """
        args = parse(self.memrestore, line)
        if args.directory:
            directory = path_argument(args.directory)
        elif self.checkpointer is not None:  # on with --dir: from there
            directory = self.checkpointer.directory
        else:
            directory = Path(self.directory).expanduser() if self.directory \
                else self.default_directory()
        if self.shell is None:
            raise UsageError("%memrestore needs an IPython shell")
        try:
            report = restore(directory, self.shell.user_ns, only=args.only,
                             list_only=args.list,
                             avoid=None if self.checkpointer is None
                             else self.checkpointer.session)
        except CheckpointError as error:
            raise UsageError(str(error)) from None
        if self.checkpointer is not None and not args.list:
            self.checkpointer.adopt(report, self.shell.user_ns)
        show(report)
        if self.checkpointer is None and not args.list:
            print("Checkpoints are off in this kernel: %memcheckpoint on keeps them again.")
        return None


def checkpoints_of(shell: Any) -> MemCheckpoint | None:
    """Return the shell's ``MemCheckpoint`` magics, if the extension is loaded."""
    found = shell.magics_manager.registry.get("MemCheckpoint")
    return found if isinstance(found, MemCheckpoint) else None
