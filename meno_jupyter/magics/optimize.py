"""``%optimize_df``: shrink DataFrames in the user namespace without losing a value."""

from __future__ import annotations

from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments

from meno_jupyter.magics._common import check_identifier, parse, plain_help, show
from meno_jupyter.shell import user_variables


@magics_class
class OptimizeMagics(Magics):
    """Holds ``%optimize_df``."""

    @plain_help
    @magic_arguments()
    @argument("names", nargs="*", metavar="NAME", help="DataFrames to optimize.")
    @argument("--all", action="store_true", help="Every DataFrame in the namespace.")
    @argument("--aggressive", action="store_true",
              help="Also narrow floats lossily within --rtol (reported per column).")
    @argument("--rtol", type=float, default=None, metavar="X",
              help="Relative tolerance for --aggressive (default 1e-6).")
    @argument("--dry-run", action="store_true", help="Report only; change nothing.")
    @argument("--inplace", action="store_true",
              help="Change the frames themselves (other references see it) instead of "
                   "rebinding the names to new frames.")
    @argument("-o", "--output", metavar="NAME",
              help="Store the OptimizeResult (a dict of them for several frames).")
    @line_magic
    def optimize_df(self, line: str) -> None:
        """Shrink DataFrames to the smallest dtypes that keep every value and missing marker.

        Integers to the smallest type for their range, integral floats to integers, float64
        to float32 where every value survives, text to category or Arrow strings (whichever
        is smaller), True/False text to bool, date strings to datetime64 (only if they format
        back identically), a dominant value to sparse. Each change is verified by undoing
        it. The report shows bytes before/after and the hazards of the new dtypes (small
        integers wrap on overflow, categories refuse new values). ``result.undo()`` gives
        the original frame back.

        Examples::

            %optimize_df sales --dry-run
            %optimize_df sales customers -o result
            %optimize_df --all --aggressive --rtol 1e-4
        """
        args = parse(self.optimize_df, line)
        check_identifier(args.output, "-o/--output")
        if args.rtol is not None and not args.aggressive:
            raise UsageError("--rtol needs --aggressive")
        if bool(args.names) == args.all:
            raise UsageError("name the DataFrames to optimize, or pass --all (not both)")
        import pandas as pd

        from meno_jupyter.core.dataframe import check_optimizable, optimize_dataframe

        shell = self.shell
        assert shell is not None
        if args.all:
            names = [n for n, v in user_variables(shell).items()
                     if isinstance(v, pd.DataFrame) and not n.startswith("_")]
            if not names:
                raise UsageError("--all: there is no DataFrame in the namespace")
        else:
            names = list(dict.fromkeys(args.names))
            missing = [n for n in names if n not in shell.user_ns]
            if missing:
                raise UsageError(f"no such variable(s): {', '.join(missing)}; nothing changed")
            wrong = [f"{n} ({type(shell.user_ns[n]).__name__})" for n in names
                     if not isinstance(shell.user_ns[n], pd.DataFrame)]
            if wrong:
                raise UsageError(f"not DataFrames: {', '.join(wrong)}; nothing changed")
        for name in names:  # all checked first: a bad frame changes nothing
            try:
                check_optimizable(shell.user_ns[name])
            except (TypeError, ValueError) as error:
                raise UsageError(f"{name}: {error}; nothing changed") from None
        results: dict[str, Any] = {}
        try:
            for name in names:
                results[name] = optimize_dataframe(
                    shell.user_ns[name], aggressive=args.aggressive, rtol=args.rtol,
                    inplace=args.inplace and not args.dry_run)
        except BaseException:  # Ctrl-C or a failure half-way: the frames done are put back
            if args.inplace and not args.dry_run:
                for result in results.values():
                    result.revert()
            raise
        if not args.dry_run and not args.inplace:
            for name, result in results.items():
                shell.user_ns[name] = result.frame
        if args.output:
            shell.user_ns[args.output] = results[names[0]] if len(names) == 1 else results
        for name, result in results.items():
            if len(results) > 1 or args.dry_run:
                print(f"{name}{' (dry run: unchanged)' if args.dry_run else ''}")
            show(result)
