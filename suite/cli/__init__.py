"""The `attnbench` command line: a module per command group, each a thin layer from flags to a config
and a call into the layers below (docs/architecture.md). Errors a user can cause end here in one line.

A command imports the layers it calls when it runs, not when the module loads: `attnbench --help` and
each command start without loading what the others use (pandas, matplotlib, the training stack)."""

from __future__ import annotations

import sys
import warnings

import typer

from ...tasks import DataFormatError
from ..core.errors import UserError
from . import bench, check, heads, outputs, site, train
from .common import with_executor

app = typer.Typer(
    help="attnbench: attention variants on one harness (speed, memory, correctness, accuracy).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command("list")(check.list_variants)
app.command()(check.check)
app.command()(with_executor(bench.bench))
app.command()(train.train)
app.command("suite")(with_executor(train.suite_command))
app.command()(with_executor(train.study))
app.command("gpu-check")(bench.gpu_check)
app.command()(heads.heads)
app.command()(outputs.plot)
app.command()(outputs.report)
app.command()(site.site)
app.command()(outputs.rerun)
app.command()(outputs.compare)
app.command()(outputs.heatmap)


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    return f"attnbench: warning: {message}\n"


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors (bad flags, configs, plugins, data files), and OS errors on a path, end in
    one line on stderr and exit code 2."""
    warnings.formatwarning = _one_line_warning
    try:
        app(args=argv, prog_name="attnbench")
    except (UserError, DataFormatError) as err:
        print(f"attnbench: error: {err}", file=sys.stderr)
        sys.exit(2)
    except OSError as err:
        if err.filename is None:
            raise
        print(f"attnbench: error: {err.filename}: {err.strerror or err}", file=sys.stderr)
        sys.exit(2)
