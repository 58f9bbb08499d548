"""`attnbench site`: the pages and chart data written from records, bad input, and the site opened in
headless Chromium (no console errors, every link resolves, every chart draws its traces, a hover
shows a point's command), which must notice a chart whose data file is gone."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
from conftest import PLUGINS, ROOT

from attnbench.suite.cli import main
from attnbench.suite.runs.records import read_records

pytest.importorskip("plotly", reason="plotly (the `site` extra) is not installed")

FAST = ["--budget", "0.05", "--repeats", "3", "--warmup", "1"]
# Screenshots of the pages the browser test opened, kept for a person to look at.
ARTEFACTS = Path(os.environ.get("ATTNBENCH_ARTEFACTS", ROOT / "test-artefacts"))


def cli(capsys, *argv):
    with pytest.raises(SystemExit) as info:
        main(list(argv))
    out, err = capsys.readouterr()
    return info.value.code or 0, out, err


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A bench run with a failing variant, the same run as if from another machine, and a training run."""
    root = tmp_path_factory.mktemp("runs")
    with pytest.raises(SystemExit):
        main(["bench", "--variants", "naive,sdpa,raises", "--seq", "128,256", *FAST, "--plugin",
              str(PLUGINS / "raises.py"), "--out", str(root / "here")])  # fmt: skip
    shutil.copytree(root / "here", root / "there")
    env = json.loads((root / "there" / "env.json").read_text())
    (root / "there" / "env.json").write_text(
        json.dumps(env | {"device_name": "Other CPU", "date": "2026-01-02T00:00:00"})
    )
    with pytest.raises(SystemExit):
        main(["train", "--task", "mqar", "--variant", "sdpa", "--preset", "tiny", "--out", str(root / "trained")])
    with pytest.raises(SystemExit):  # a second arm of the same variant, as a study makes
        main(["train", "--task", "mqar", "--variant", "sdpa", "--preset", "tiny", "--set", "model.heads=4",
              "--out", str(root / "trained")])  # fmt: skip
    return root


@pytest.fixture(scope="module")
def site(runs, tmp_path_factory):
    out = tmp_path_factory.mktemp("site") / "site"
    with pytest.raises(SystemExit) as info:
        main(["site", str(runs / "here"), str(runs / "there"), str(runs / "trained"), "--out", str(out)])
    assert (info.value.code or 0) == 0
    return out


def chart_data(site: Path) -> dict[str, dict]:
    """Every chart's figure, by id, read back from its data script."""
    charts = {}
    for path in (site / "data").glob("*.js"):
        call = re.fullmatch(r'attnbench\.chart\("([\w-]+)", (.*)\);\n', path.read_text(), re.S)
        assert call, path
        charts[call[1]] = json.loads(call[2].replace("<\\/", "</"))
    return charts


def test_the_index_lists_every_run_with_its_device_commit_and_counts(site, runs):
    index = (site / "index.html").read_text()
    here = json.loads((runs / "here" / "env.json").read_text())
    for name in ("here", "there", "trained"):
        assert f'href="runs/{name}.html"' in index and (site / "runs" / f"{name}.html").exists()
    assert "Other CPU" in index and here["commit"][:7] in index
    # here: 4 points ok, the raising variant's 2 failed
    assert re.search(r">here</a>.*?<td>4</td><td>2</td><td>0</td>", index)
    assert re.search(r">trained</a>.*?<td>train</td><td>2</td><td>0</td>", index)
    assert "memory exponent" in index and "Accuracy per task" in index and 'class="sortable"' in index
    assert not re.search(r"https?://", index)  # nothing fetched from the network


def test_a_run_page_shows_charts_failures_and_correctness_beside_speed(site, runs):
    page = (site / "runs" / "here.html").read_text()
    assert "kernel launch failed" in page  # the failure's reason
    assert "error vs float64 definition" in page and "time (ms)" in page
    ids = re.findall(r'class="chart" id="([\w-]+)"', page)
    scripts = re.findall(r'<script src="\.\./(data/[\w-]+\.js)">', page)
    assert len(ids) == 2 and len(scripts) == 2  # time and memory of the one series
    charts = chart_data(site)
    commands = {r["command"] for r in read_records(runs / "here")}
    for chart_id in ids:
        figure = charts[chart_id]
        assert figure["layout"]["xaxis"]["type"] == "log" and figure["layout"]["yaxis"]["type"] == "log"
        points = [d for trace in figure["data"] for d in trace["customdata"]]
        assert {p[-1] for p in points} == commands  # every point, ok or failed, carries its command
    failed = [t for t in charts[ids[0]]["data"] if t.get("marker", {}).get("symbol") == "x"]
    assert failed and all(d[0].startswith("error: ") for d in failed[0]["customdata"])
    assert (site / "runs" / "here" / "README.md").exists() and 'href="here/README.md"' in page


def test_the_cross_run_page_puts_a_shape_of_two_runs_side_by_side(site):
    cross = (site / "cross.html").read_text()
    assert "<th>here</th><th>there</th>" in cross and "N=256" in cross and "sdpa" in cross


def test_a_training_run_gets_an_accuracy_chart_with_each_seeds_command(site, runs):
    record = read_records(runs / "trained")[0]
    figure = next(f for f in chart_data(site).values() if f["layout"]["yaxis"]["type"] == "linear")
    assert figure["data"][0]["x"] == ["mqar"] and figure["data"][0]["customdata"][0][-1] == record["command"]
    assert abs(figure["data"][0]["y"][0] - 100 * record["test_acc"]) < 1e-9
    # A study's arms stay apart: a trace and a table row each, in colours of their own.
    assert [t["name"] for t in figure["data"]] == ["sdpa", "sdpa model.heads=4"]
    assert figure["data"][0]["marker"]["color"] != figure["data"][1]["marker"]["color"]
    page = (site / "runs" / "trained.html").read_text()
    assert "<td>mqar</td><td>sdpa</td>" in page and "<td>mqar</td><td>sdpa model.heads=4</td>" in page


def test_bad_input_is_one_line_and_an_old_site_survives(capsys, tmp_path, site, runs):
    code, _, err = cli(capsys, "site", str(tmp_path / "absent"), "--out", str(tmp_path / "s"))
    assert code == 2 and "no such folder" in err and err.count("\n") == 1
    (tmp_path / "empty").mkdir()
    code, _, err = cli(capsys, "site", str(tmp_path / "empty"), "--out", str(tmp_path / "s"))
    assert code == 2 and "has no records.jsonl" in err
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    code, _, err = cli(capsys, "site", str(runs / "here"), "--out", str(tmp_path / "mine"))
    assert code == 2 and "is not a site attnbench wrote" in err
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["notes.txt"]
    (tmp_path / "mine" / "index.html").write_text("<h1>my homepage</h1>")  # an index alone is not our site
    code, _, err = cli(capsys, "site", str(runs / "here"), "--out", str(tmp_path / "mine"))
    assert code == 2 and sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["index.html", "notes.txt"]
    code, _, err = cli(capsys, "site", str(runs), "--out", str(tmp_path / "s"))  # the folder of runs
    assert code == 2 and f"it holds 3 runs: name them ({runs}/*)" in err
    code, _, err = cli(capsys, "site", str(runs / "here" / "records.jsonl"), "--out", str(tmp_path / "s"))
    assert code == 2 and "a file: name the folder that holds it" in err
    for name, text in (("blank", ""), ("corrupt", "{not json\n")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "records.jsonl").write_text(text)
        (tmp_path / name / "env.json").write_text("{}")
        code, _, err = cli(capsys, "site", str(tmp_path / name), "--out", str(tmp_path / "s"))
        assert code == 2 and "has no readable records" in err, name
    broken = tmp_path / "broken"
    shutil.copytree(runs / "here", broken)
    (broken / "env.json").write_text("{not json")
    before = (site / "index.html").read_text()
    code, _, err = cli(capsys, "site", str(broken), "--out", str(site))
    assert code == 2 and "not valid JSON" in err and (site / "index.html").read_text() == before


# --- in a real browser -------------------------------------------------------------------------------


def chromium() -> str | None:
    """Debian's chromium (or $ATTNBENCH_CHROMIUM): playwright drives it; its own download is not used."""
    return os.environ.get("ATTNBENCH_CHROMIUM") or next(
        (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None
    )


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (the `browser` extra) is not installed")
    path = chromium()
    if path is None:
        pytest.skip("browser test skipped: no Chromium here (apt-get install chromium, or set ATTNBENCH_CHROMIUM)")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=path, args=["--no-sandbox"])
        yield browser
        browser.close()


# Per chart: its traces as Plotly holds them and the SVG traces it drew.
DRAWN = """() => Array.from(document.querySelectorAll('.chart')).map(div => ({
  id: div.id, traces: (div.data || []).length, drawn: div.querySelectorAll('.scatterlayer .trace').length}))"""
# Page coordinates of the first point of the first chart's first trace.
FIRST_POINT = """() => { const gd = document.querySelector('.chart'); const fl = gd._fullLayout;
  const t = gd._fullData[0]; const box = gd.getBoundingClientRect();
  return {x: box.left + fl._size.l + fl.xaxis.c2p(t.x[0]), y: box.top + fl._size.t + fl.yaxis.c2p(t.y[0]),
          commands: gd._fullData.flatMap(d => d.customdata.map(c => c[c.length - 1]))}; }"""


def check_page(page, path: Path, site: Path) -> list[str]:
    """Open one page; every problem a reader would meet, as lines (none: the page is whole)."""
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.goto(path.as_uri())
    page.wait_for_load_state("load")
    for href in page.eval_on_selector_all("a[href]", "links => links.map(a => a.href)"):
        url = urlparse(href)
        target = Path(unquote(url.path))
        if url.scheme != "file" or not target.is_file() or site.resolve() not in target.resolve().parents:
            problems.append(f"link does not resolve inside the site: {href}")
    for chart in page.evaluate(DRAWN):
        if chart["traces"] == 0 or chart["drawn"] == 0:
            problems.append(f"chart {chart['id']} drew no traces")
    return problems


def hover_first_point(page) -> str:
    """Move the mouse onto a chart's first point: the command its hover shows, in the label (wrapped) and
    whole under the chart (points may overlap: either shows the one Plotly picks); '' when none shows."""
    point = page.evaluate(FIRST_POINT)
    page.mouse.move(point["x"], point["y"])
    label = re.sub(r"\s", "", page.wait_for_selector(".hoverlayer .hovertext", timeout=5000).text_content())
    line = page.text_content("figure >> nth=0 >> .hovered")
    shown = [c for c in point["commands"] if line.endswith(": " + c) and re.sub(r"\s", "", c) in label]
    return shown[0] if shown else ""


def test_the_committed_runs_site_opens_whole_in_chromium(browser, tmp_path, capsys):
    out = tmp_path / "site"
    code, _, _ = cli(capsys, "site", "--out", str(out))  # every run under results/
    assert code == 0
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    pages = [out / "index.html", out / "cross.html", *sorted((out / "runs").glob("*.html"))]
    assert len(pages) >= 3
    for path in pages:
        assert check_page(page, path, out) == [], path.name
    page.goto((out / "index.html").as_uri())
    page.screenshot(path=str(ARTEFACTS / "site-index.png"), full_page=True)
    run_page = next(p for p in pages if p.parent.name == "runs" and 'class="chart"' in p.read_text())
    page.goto(run_page.as_uri())
    page.wait_for_load_state("load")
    assert hover_first_point(page).startswith("attnbench ")
    page.screenshot(path=str(ARTEFACTS / "site-run.png"))
    # Sorting: a click on the index's "ok" header orders the runs by it.
    page.goto((out / "index.html").as_uri())
    page.click("table.sortable >> nth=0 >> th:text-is('ok')")
    counts = [int(c) for c in page.eval_on_selector_all("table.sortable >> nth=0 >> tbody tr td:nth-child(6)",
                                                         "cells => cells.map(c => c.textContent)")]  # fmt: skip
    assert counts == sorted(counts)
    page.click("table.sortable >> nth=0 >> th:text-is('date')")  # dates sort as text, not as the number 2026
    dates = page.eval_on_selector_all("table.sortable >> nth=0 >> tbody tr td:nth-child(3)",
                                      "cells => cells.map(c => c.textContent)")  # fmt: skip
    assert dates == sorted(dates)


def test_the_browser_check_fails_when_a_charts_data_file_is_gone(browser, site, tmp_path):
    site = Path(shutil.copytree(site, tmp_path / "site"))
    page = browser.new_page()
    run_page = site / "runs" / "here.html"
    assert check_page(page, run_page, site) == []
    assert hover_first_point(page).startswith("attnbench bench ")
    data = re.findall(r'<script src="\.\./(data/[\w-]+\.js)">', run_page.read_text())[0]
    (site / data).unlink()
    page = browser.new_page()
    problems = check_page(page, run_page, site)
    assert any("drew no traces" in p for p in problems) and any("console error" in p for p in problems)
