"""The commands, and how their errors end: one line on stderr, exit code 2 for a user's mistake (bad
flags, configs, plugins, data files, an OS error on a path), 130 on an interrupt.

A command imports the layers it calls when it runs, not when the module loads: `attnbench --help` and
each command start without loading what the others use (pandas, matplotlib, the training stack)."""

from __future__ import annotations

import errno
import functools
import sys
import warnings
from collections.abc import Callable
from typing import Any

import typer

from ...tasks import DataFormatError
from ..core.errors import UserError
from ..core.leftovers import remove_stale_fork_dirs
from . import bench, check, heads, outputs, signals, site, train
from .common import with_executor

# A full disk, a failing one, or a read-only file system: the machine's fault, told in one line.
DISK_ERRORS = (errno.ENOSPC, errno.EIO, errno.EDQUOT, errno.EROFS)

app = typer.Typer(
    help="attnbench: attention variants on one harness (speed, memory, correctness, accuracy).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _stoppable(command: Callable[..., None]) -> Callable[..., None]:
    """`command`, ended by Ctrl-C or SIGTERM in one line and exit 130 where it says nothing more itself."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        try:
            command(*args, **kwargs)
        except KeyboardInterrupt:
            print("attnbench: interrupted", file=sys.stderr)
            raise typer.Exit(130) from None

    return wrapper


for name, command in (
    ("list", check.list_variants),
    ("check", check.check),
    ("bench", with_executor(bench.bench)),
    ("train", train.train),
    ("suite", with_executor(train.suite_command)),
    ("study", with_executor(train.study)),
    ("gpu-check", bench.gpu_check),
    ("heads", heads.heads),
    ("plot", outputs.plot),
    ("report", outputs.report),
    ("site", site.site),
    ("rerun", outputs.rerun),
    ("compare", outputs.compare),
    ("heatmap", outputs.heatmap),
):
    app.command(name)(_stoppable(command))


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    return f"attnbench: warning: {message}\n"


def run(argv: list[str] | None = None) -> None:
    """Run the command `argv` names and exit with its code; every error a user can cause is one line."""
    warnings.formatwarning = _one_line_warning
    remove_stale_fork_dirs()  # a command killed before this one leaves its fork server's folder
    try:
        code = app(args=argv, prog_name="attnbench", standalone_mode=False)
    except KeyboardInterrupt:  # while the parser is still being built, before any command runs
        print("attnbench: interrupted", file=sys.stderr)
        code = 130
    except (UserError, DataFormatError) as err:
        print(f"attnbench: error: {err}", file=sys.stderr)
        code = 2
    except OSError as err:
        if err.filename is None and err.errno not in DISK_ERRORS:
            raise
        where = f"{err.filename}: " if err.filename else "writing: "
        print(f"attnbench: error: {where}{err.strerror or err} (what was recorded before is kept)", file=sys.stderr)
        code = 2
    except Exception as err:
        code = _click_error(err)
    signals.settle()
    sys.exit(code or 0)


def _click_error(err: Exception) -> int:
    """A usage error of the command-line parser (an unknown flag, a bad value, a missing argument) as one
    line, and its exit code (`attnbench` alone: its help, already printed). Told by class name: typer may use click, or
    its own copy of it."""
    kinds = {cls.__name__ for cls in type(err).__mro__}
    ctx = getattr(err, "ctx", None)
    if "NoArgsIsHelpError" in kinds:  # the parser has printed the help already
        return err.exit_code
    if "ClickException" in kinds:
        path = ctx.command_path.removeprefix("attnbench").strip() if ctx is not None else ""
        print(
            f"attnbench: error: {err.format_message()} (see attnbench {path + ' ' if path else ''}--help)",
            file=sys.stderr,
        )
        return err.exit_code
    if "Abort" in kinds:
        print("attnbench: interrupted", file=sys.stderr)
        return 130
    raise err
