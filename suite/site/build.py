"""Write the static site: an index of runs, a page per run, a page across runs, the charts' data,
the run folders' static charts and READMEs, and the scripts and styles (Plotly's included), so it
works from file:// and from any static host with no network."""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

from ..core.errors import UserError
from ..core.leftovers import remove_stale, tagged
from . import figures, pages, tables
from .runs import Run

# Written into every site: only a folder holding it is replaced by a new build.
MARKER = ".attnbench-site"
# What a run folder holds that the site links to (its charts and READMEs), copied beside its page.
STATIC = ("*.png", "*.svg", "*.md")


def _plotly_js() -> str:
    try:
        from plotly.offline import get_plotlyjs
    except ImportError:
        raise UserError("the site needs plotly: pip install 'attnbench[site]' (or `make site`)") from None
    return get_plotlyjs()


class SiteWriter:
    """Writes pages, chart data and copies under one folder."""

    def __init__(self, out: Path) -> None:
        self.out = Path(out)
        self.charts = 0

    def write(self, relative: str, text: str) -> None:
        path = self.out / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")

    def chart(self, figure: dict, title: str) -> tuple[str, str]:
        """The chart's div and the path of its data script (relative to the site's top)."""
        self.charts += 1
        chart_id = f"chart-{self.charts}"
        data = f"data/{chart_id}.js"
        # JSON is a JavaScript expression; "</" is escaped so no string in it can end a script element.
        payload = json.dumps(figure, allow_nan=False, default=str).replace("</", "<\\/")
        self.write(data, f"attnbench.chart({json.dumps(chart_id)}, {payload});\n")
        return pages.chart_div(chart_id, title), data

    def copy_static(self, run: Run) -> list[str]:
        """Copy the run's charts and READMEs (keeping their folders, so a README's links still hold)."""
        copied = []
        for pattern in STATIC:
            for source in sorted(run.path.rglob(pattern)):
                relative = source.relative_to(run.path)
                if relative.parts[0] in ("models", "checkpoints"):
                    continue
                target = self.out / "runs" / run.slug / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, target)
                copied.append(f"{run.slug}/{relative.as_posix()}")
        return sorted(copied)


def _clean(value: Any) -> Any:
    """Plain JSON values: NumPy's numbers as Python's, and a missing number (NaN) as null."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, str):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def run_page(site: SiteWriter, run: Run) -> None:
    figures_ = [*figures.bench_figures(run)]
    accuracy = figures.accuracy_figure(run)
    if accuracy is not None:
        figures_.append(("test accuracy", accuracy))
    divs, scripts = [], []
    for title, figure in figures_:
        div, data = site.chart(_clean(figure), title)
        divs.append(div)
        scripts.append(f"../{data}")
    files = site.copy_static(run)
    command = run.env.get("command") or ""
    body = (
        f"<p>{pages.esc(run.device)}, {pages.esc(run.date)}, commit <code>{pages.esc(run.commit)}</code>: "
        f"{run.count('ok')} points ok, {len(run.failures)} failed, {len(run.records)} in all.</p>"
        + (f"<p class='command'>{pages.esc(command)}</p>" if command else "")
        + (
            "<h2>Charts</h2><p>Hover a point for its record and the command that re-measures it; click a "
            f"legend entry to hide a variant.</p><div class='charts'>{''.join(divs)}</div>"
            if divs
            else ""
        )
        + pages.bench_tables(run)
        + pages.train_tables(run)
        + f"<h2>Points not measured</h2>{pages.failures(run)}"
        + f"<h2>Environment</h2>{pages.environment(run.env)}"
        + (f"<h2>Static charts and README</h2>{pages.files_list(files)}" if files else "")
    )
    site.write(f"runs/{run.slug}.html", pages.page(run.name, "../", body, scripts))


def index_page(site: SiteWriter, runs: list[Run]) -> None:
    variants = tables.variant_table(runs)
    accuracy = tables.accuracy_rows(runs)
    body = (
        "<p>Every run, where it was measured and by which commit; a click on a header sorts a table.</p>"
        + pages.runs_table(runs)
        + "<h2>Each variant at each run's reference shapes</h2><p>The reference N of a series is the largest its "
        "baseline measured; time at that N, TFLOP/s and its fraction of the run's measured peak, the memory "
        "growth exponent over the series (about 2: the scores are materialised; about 1: they are not), and the "
        "error against the float64 definition.</p>"
        + (pages.table(variants) if not variants.empty else "<p>No bench runs.</p>")
        + "<h2>Accuracy per task</h2>"
        + (pages.table(accuracy) if not accuracy.empty else "<p>No training runs.</p>")
    )
    site.write("index.html", pages.page("attnbench results", "", body))


def cross_page(site: SiteWriter, runs: list[Run]) -> None:
    shared = tables.cross_run(runs)
    body = (
        "<p>The same variant at the same shape on every run that measured it (time in ms, or the status of a "
        "point that failed); shapes measured by a single run are on its own page.</p>"
        + (pages.table(shared) if not shared.empty else "<p>No shape was measured by two of these runs.</p>")
    )
    site.write("cross.html", pages.page("across runs", "", body))


def build_site(runs: list[Run], out: Path) -> Path:
    """Write the site into `out`, replacing a site there only once the new one is whole (a failure leaves
    the old one); returns the index's path."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or (not (out / MARKER).exists() and any(out.iterdir()))):
        raise UserError(f"{out} is not a site attnbench wrote (no {MARKER} in it): choose another --out")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        remove_stale(out.parent, f".{out.name}.")  # what a killed build left
        building = Path(tempfile.mkdtemp(dir=out.parent, prefix=tagged(f".{out.name}.")))
    except OSError as err:
        raise UserError(f"cannot write the site into {out}: {err.strerror or err}") from None
    try:
        site = SiteWriter(building)
        site.write(MARKER, "A site written by `attnbench site`: the next build replaces this folder whole.\n")
        site.write("assets/plotly.min.js", _plotly_js())
        for name in ("site.js", "site.css"):
            site.write(f"assets/{name}", resources.files(__package__).joinpath("assets", name).read_text())
        for run in runs:
            run_page(site, run)
        index_page(site, runs)
        cross_page(site, runs)
        building.chmod(0o755)  # mkdtemp's 0700 would hide the site from a web server's user
        if out.exists():
            shutil.rmtree(out)
        building.rename(out)
    except OSError as err:
        raise UserError(f"cannot write the site into {out}: {err.strerror or err}") from None
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return out / "index.html"
