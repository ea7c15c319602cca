"""``%memclean``: drop what IPython keeps for the user, collect, trim, and say how much."""

from __future__ import annotations

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments

from meno_jupyter.core.memory import parse_size
from meno_jupyter.magics._common import check_identifier, parse, plain_help, show
from meno_jupyter.shell import release_shell_memory


@magics_class
class CleanMagics(Magics):
    """Holds ``%memclean``."""

    @plain_help
    @magic_arguments()
    @argument("--dry-run", action="store_true", help="List what would be dropped; drop nothing.")
    @argument("--min-size", default="0", metavar="SIZE",
              help="Drop only outputs holding at least SIZE (512, 10MB, 1GiB). Default: all.")
    @argument("--del", dest="delete", nargs="+", default=[], metavar="NAME",
              help="Also delete these variables (never deleted unless named).")
    @argument("-o", "--output", metavar="NAME", help="Store the report in this variable.")
    @line_magic
    def memclean(self, line: str) -> None:
        """Give memory back: drop IPython's output cache, collect garbage, trim the heap.

        A displayed DataFrame stays alive in ``Out[N]`` (and ``_``, ``__``, ``___``, ``_N``)
        after you delete it, and the last error's traceback keeps its frames' variables.
        ``%memclean`` drops those references, runs a full ``gc.collect()`` and glibc's
        ``malloc_trim(0)`` (which hands freed heap pages back to the OS, often hundreds of
        MB after pandas work), and reports RSS before and after. User variables are never
        touched unless named with ``--del``.

        Examples::

            %memclean --dry-run
            %memclean --min-size 50MB
            %memclean --del df_tmp scratch
        """
        args = parse(self.memclean, line)
        check_identifier(args.output, "-o/--output")
        try:
            min_size = parse_size(args.min_size)
        except ValueError as error:
            raise UsageError(f"--min-size: {error}") from None
        shell = self.shell
        assert shell is not None
        hidden = set(getattr(shell, "user_ns_hidden", {}))
        missing = [n for n in args.delete if n not in shell.user_ns or n in hidden]
        if missing:
            raise UsageError(f"--del: no such variable(s): {', '.join(missing)}; "
                             "nothing was deleted")
        report = release_shell_memory(shell, min_size=min_size, delete=args.delete,
                                      dry_run=args.dry_run)
        if args.output:
            shell.user_ns[args.output] = report
        show(report)
