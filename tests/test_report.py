"""`leadtemp report`: one self-contained HTML page from a training run, checked in a real browser (headless Chromium).

The page has no JavaScript at all (asserted), so there is nothing to raise a console error; Chromium's
console log is still read and must hold no ``CONSOLE`` line (it logs uncaught errors there).
"""

import io
import os
import re
import shutil
import subprocess

import mlflow
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from conftest import ROOT
from leadtemp.adapters.report import REPORT_MARKER, RunFacts, champion_status
from leadtemp.cli import app

runner = CliRunner()
PARAMS = str(ROOT / "params.yaml")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
BROWSER_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
DATA_URI = re.compile(r"data:image/png;base64,[A-Za-z0-9+/=]+")


def run(*args):
    return runner.invoke(app, [*args, "--params", PARAMS], env={"COLUMNS": "250"})


def chromium() -> str:
    """The browser, or a skip with a reason; under CI a missing browser fails (.ci/run installs it)."""
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed; CI installs Debian's chromium in .ci/run")
        pytest.skip("needs Chromium (apt-get install -y chromium); CI has it, and fails there when it is missing")
    return CHROMIUM


def trained_world(tmp_path_factory, name: str):
    """A tiny world trained once through the CLI (the champion, version 1), in its own folder and MLflow store
    (a module fixture's body: tests/test_cards.py and tests/test_mlflow_ui.py use it too)."""
    home = tmp_path_factory.mktemp(name)
    mp = pytest.MonkeyPatch()
    mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{home / 'mlflow.db'}")
    mp.chdir(home)
    sim = run("simulate", "--out", "sim", "--leads", "1500", "--months", "24", "--seed", "5")
    assert sim.exit_code == 0, sim.output
    done = run("train", "--leads", "sim/leads.parquet", "--interactions", "sim/interactions.parquet")
    assert done.exit_code == 0, done.output
    yield home
    mp.undo()


def enter(home, monkeypatch):
    """Work in ``home`` with its MLflow store, for one test."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{home / 'mlflow.db'}")
    monkeypatch.chdir(home)
    return home


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    yield from trained_world(tmp_path_factory, "report")


@pytest.fixture()
def home(trained, monkeypatch):
    return enter(trained, monkeypatch)


def test_report_of_the_champion_in_a_real_browser(home):
    browser = chromium()
    done = run("report", "--out", "report.html")
    assert done.exit_code == 0, done.output
    assert done.output.startswith("wrote report.html (") and "KB) for MLflow run" in done.output
    page = (home / "report.html").read_text(encoding="utf-8")
    assert page.count(REPORT_MARKER) == 1

    # Self-contained: no script, no network resource, images inline; no personal data, no lead id.
    assert "<script" not in page.lower()
    assert not re.search(r"https?://", page), "a network reference"
    assert not re.search(r"""\b(?:src|href)\s*=\s*(?!["']?data:)""", page), "a resource that is not inline"
    text = DATA_URI.sub("", page)
    assert len(DATA_URI.findall(page)) == 2  # gains and reliability
    leads = pd.read_parquet(home / "sim" / "leads.parquet")
    for column in ("lead_id", "email", "phone", "name"):
        hits = [v for v in leads[column].astype(str) if v in text]
        assert not hits, (column, hits[:3])

    # What the browser shows: the verdict in words, first; the buckets; the drivers.
    dom = subprocess.run([browser, *BROWSER_FLAGS, "--enable-logging=stderr", "--v=0", "--dump-dom",
                          (home / "report.html").as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert not [line for line in dom.stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]
    body = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", DATA_URI.sub("", dom.stdout)))
    client = mlflow.MlflowClient()
    champion = client.get_model_version_by_alias("leadtemp", "champion")
    metrics = client.get_run(champion.run_id).data.metrics
    verdict = body[body.index("Lead scoring model report"):body.index("Hot, warm and cold")]
    assert f"ROC-AUC {metrics['test_roc_auc']:.3f}, 95% interval" in verdict
    assert f"ROC-AUC {metrics['test_within_cutoff_roc_auc']:.3f}" in verdict
    assert f"ROC-AUC {metrics['test_thermometer_roc_auc']:.3f}" in verdict
    assert "Buckets mean what they say" in verdict and "It is the champion (version 1" in verdict
    assert f"{100 * metrics['test_hot_conversion']:.1f}%" in body
    soon = body[body.index("How soon"):body.index("How much calling by score pays")]
    assert [f"within {d} days {metrics[f'test_p_{d}d_roc_auc']:.3f} {metrics[f'test_p_{d}d_ece']:.4f}" in soon
            for d in (7, 30, 90)] == [True] * 3
    assert "contact from them" in body and "What drives the scores" in body
    assert champion.run_id in body and "Notes and warnings the run logged" in body

    # Rendered, not blank: a screenshot with the page's colours (text, bars, two charts).
    shot = home / "report.png"
    subprocess.run([browser, *BROWSER_FLAGS, "--window-size=1000,2400", f"--screenshot={shot}",
                    (home / "report.html").as_uri()], capture_output=True, timeout=120, check=True)
    from PIL import Image

    pixels = np.asarray(Image.open(io.BytesIO(shot.read_bytes())).convert("RGB")).reshape(-1, 3)
    assert len(np.unique(pixels, axis=0)) > 50

    # Run again: a previous report is replaced.
    again = run("report", "--out", "report.html", "--run", champion.run_id)
    assert again.exit_code == 0, again.output


def test_train_logs_the_report_and_its_data(home):
    client = mlflow.MlflowClient()
    run_id = client.get_model_version_by_alias("leadtemp", "champion").run_id
    logged = {a.path for a in client.list_artifacts(run_id)}
    assert {"report.html", "report_data.json"} <= logged
    page = mlflow.artifacts.load_text(f"runs:/{run_id}/report.html")
    assert REPORT_MARKER in page and "It is the champion (version 1" in page
    data = mlflow.artifacts.load_dict(f"runs:/{run_id}/report_data.json")
    assert len(data["label"]) == len(data["probability"]) == data["test_rows"]
    assert data["probability"] == sorted(data["probability"])  # sorted: the row order says nothing about a lead
    assert {"lead_id", "lead_ids"}.isdisjoint(data) and abs(sum(d["share"] for d in data["drivers"]) - 1) < 1e-3


@pytest.mark.parametrize("args, message", [
    (["--run", "0123456789abcdef0123456789abcdef"], "no such MLflow run"),
    (["--out", "notes.txt"], "give an .html file name"),
    (["--out", "mine.html"], "exists and is not a leadtemp report"),
])
def test_bad_input_is_one_line_and_never_overwrites(home, args, message):
    (home / "mine.html").write_text("<html>my own page</html>")
    result = run("report", *(args if "--out" in args else ["--out", "new.html", *args]))
    assert result.exit_code == 2 and message in result.output, result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    assert (home / "mine.html").read_text() == "<html>my own page</html>" and not (home / "new.html").exists()


def test_no_store_or_no_champion_is_one_line(tmp_path):
    missing = run("report", "--out", "r.html")
    assert missing.exit_code == 2 and "no MLflow store at" in missing.output and len(missing.output.strip().splitlines()) == 1
    assert not (tmp_path / "mlflow.db").exists()  # not created by looking
    mlflow.MlflowClient().search_experiments()  # an empty store
    result = run("report", "--out", "r.html")
    assert result.exit_code == 2 and "no champion" in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "r.html").exists()


def test_why_not_champion_in_words():
    def facts(**kw):
        base = dict(run_id="r2", run_name="x", metrics={}, params={}, tags={"registered_version": "2"}, model_name="leadtemp",
                    champion_version="1", champion_run_id="r1")
        return RunFacts(**{**base, **kw})

    gates = {"gates": [{"name": "beats the thermometer", "passed": False, "detail": ""}]}
    assert champion_status(facts(champion_run_id="r2", champion_version="2"))[0]
    ok, text = champion_status(facts(gates=gates))
    assert not ok and text.startswith("It is NOT the champion (the champion is version 1), because it failed")
    assert "failed the ship gate(s) \u201cbeats the thermometer\u201d" in text
    assert "was champion already" in champion_status(facts())[1]
    decision = {"promote": False, "gates": [{"name": "better than the champion", "passed": False}]}
    assert "the retrain kept the champion: it failed \u201cbetter than the champion\u201d" in champion_status(
        facts(decision=decision))[1]
    assert "not registered" in champion_status(facts(tags={}))[1]


def test_a_run_without_time_says_first_that_its_test_is_no_out_of_time_check():
    from leadtemp.adapters.report import render

    def page(tags):
        facts = RunFacts(run_id="r1", run_name="x", metrics={"test_roc_auc": 0.8}, params={},
                         tags={"registered_version": "1", **tags}, model_name="leadtemp", champion_version="1",
                         champion_run_id="r1")
        return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", render(facts)))

    random = page({"out_of_time_check": "false"})
    verdict = random[random.index("Lead scoring model report"):random.index("Hot, warm and cold")]
    assert verdict.index("No out-of-time check") < verdict.index("Ranking:")
    assert "a random sample held out" in random and "newest labelled data" not in random
    timed = page({"out_of_time_check": "true"})
    assert "No out-of-time check" not in timed and "newest labelled data" in timed
