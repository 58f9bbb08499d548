"""`attnbench site`: the committed runs as a static, interactive site."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import console


def site(
    runs: Annotated[
        list[Path] | None, typer.Argument(help="Run folders (default: every run under results/).", show_default=False)
    ] = None,
    out: Annotated[
        Path,
        typer.Option(
            help="Folder of the site: new, empty, or a site attnbench wrote (replaced whole, files added "
            "to it included)."
        ),
    ] = Path("site"),
) -> None:
    """Write a static site of runs: index, a page per run, a page across runs; interactive charts, no server."""
    from ..site.build import build_site
    from ..site.runs import find_runs, load_runs

    index = build_site(load_runs(runs or find_runs(Path("results"))), out)
    console.print(f"wrote {index} (open it in a browser; it needs no server)")
