"""MLflow's UI on a trained store, in a real browser (headless Chromium): the pages an analyst opens.

`leadtemp ui` is started on a free port against a tiny world's ``mlflow.db``; the links it prints must open the
experiment on its training runs (MLflow 3.17 opens ``#/experiments/<id>`` on an empty GenAI overview in a fresh
browser, whatever the experiment's tag says), and the registered version's page must show its Markdown verdict
and its tags. ``LEADTEMP_SCREENSHOTS=docs/images`` also writes the screenshots the docs show.
"""

import html
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mlflow
import pytest

from test_report import BROWSER_FLAGS, chromium, enter, run, trained_world

PAGE_BUDGET = ["--virtual-time-budget=15000"]  # MLflow's UI is a JavaScript app: let it fetch and render
SHOTS = os.environ.get("LEADTEMP_SCREENSHOTS") and Path(os.environ["LEADTEMP_SCREENSHOTS"]).resolve()  # before chdir


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    yield from trained_world(tmp_path_factory, "mlflow_ui")


@pytest.fixture()
def home(trained, monkeypatch):
    return enter(trained, monkeypatch)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ui(trained):
    """`leadtemp ui --port P` in its own process group, answering; yields (base URL, what it printed). Always stopped."""
    chromium()  # no browser: skip (fail under CI) before paying for the server
    port = _free_port()
    log = trained / "ui.log"
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{trained / 'mlflow.db'}", "PYTHONUNBUFFERED": "1",
           "MLFLOW_DISABLE_TELEMETRY": "true"}
    with open(log, "w") as out:
        server = subprocess.Popen([sys.executable, "-m", "leadtemp", "ui", "--port", str(port)], cwd=trained, env=env,
                                  stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300  # MLflow's server starts its workers in 5-40 s on a busy machine
        while True:
            assert server.poll() is None, f"`leadtemp ui` exited with {server.returncode}:\n{log.read_text()[-3000:]}"
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=5) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"MLflow's UI did not answer on {base}:\n{log.read_text()[-3000:]}"
            time.sleep(1)
        yield base, log.read_text()
    finally:
        stop_group(server)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def stop_group(server: subprocess.Popen) -> None:
    """Stop `leadtemp ui` and everything it started (mlflow ui, uvicorn workers, job consumers): its process group.

    The group outlives its leader (MLflow's job consumers shut down on their own time), so wait for the group, not
    the leader; what is still there after 60 s gets SIGKILL."""
    for sig, grace in ((signal.SIGTERM, 60), (signal.SIGKILL, 30)):
        if not _group_alive(server.pid):
            break
        os.killpg(server.pid, sig)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            server.poll()  # reap the leader, so a zombie does not keep the group "alive"
            if not _group_alive(server.pid):
                break
            time.sleep(0.5)
    server.wait(timeout=30)
    assert not _group_alive(server.pid), "processes of `leadtemp ui` survived SIGKILL"


def page_text(url: str) -> str:
    """The text a reader sees on ``url`` after the app has rendered (Chromium's DOM, tags, styles, scripts removed)."""
    dom = subprocess.run([chromium(), *BROWSER_FLAGS, *PAGE_BUDGET, "--dump-dom", url], capture_output=True, text=True,
                         timeout=300)
    assert dom.returncode == 0, dom.stderr[-2000:]
    page = re.sub(r"<(style|script)\b.*?</\1>", " ", dom.stdout, flags=re.S)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", page)))


def screenshot(url: str, name: str) -> None:
    """With LEADTEMP_SCREENSHOTS set: the page as the docs show it, 1280 px wide."""
    if not SHOTS:
        return
    SHOTS.mkdir(parents=True, exist_ok=True)
    subprocess.run([chromium(), *BROWSER_FLAGS, *PAGE_BUDGET, "--window-size=1280,900", "--hide-scrollbars",
                    f"--screenshot={SHOTS / name}", url], capture_output=True, timeout=300, check=True)


def squeezed(text: str) -> str:
    """Markdown's text without its markers and spacing, to find it in the rendered page."""
    return re.sub(r"[*`\s]", "", text)


def test_the_printed_link_opens_the_experiment_on_its_training_runs(ui, home):
    base, printed = ui
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name("leadtemp")
    (training,) = client.search_runs([experiment.experiment_id])
    link = re.search(r"runs of leadtemp: (\S+)", printed)
    assert link, printed
    assert link.group(1) == f"{base}/#/experiments/{experiment.experiment_id}?workflowType=machine_learning"

    runs = page_text(link.group(1))
    assert training.info.run_name.startswith("train ") and training.info.run_name in runs  # states the data period
    assert "1 matching run" in runs and "Run Name" in runs
    assert "No data available" not in runs and "Tool calls" not in runs  # not the GenAI traces overview

    # The run's own page, from the list: its name, the verdict (Markdown rendered) and the test metrics.
    page = f"{base}/#/experiments/{experiment.experiment_id}/runs/{training.info.run_id}?workflowType=machine_learning"
    shown = page_text(page)
    assert training.info.run_name in shown and "test_roc_auc" in shown
    note = training.data.tags["mlflow.note.content"]
    assert squeezed(note.splitlines()[0]) in squeezed(shown) and "**" not in shown
    screenshot(page, "mlflow-run.png")


def test_the_version_page_shows_the_verdict_and_the_tags(ui, home):
    base, printed = ui
    version = mlflow.MlflowClient().get_model_version_by_alias("leadtemp", "champion")
    assert f"registered models: {base}/#/models?workflowType=machine_learning" in printed
    page = f"{base}/#/models/leadtemp/versions/{version.version}"
    shown = page_text(page)
    assert f"leadtemp Version {version.version}" in shown and "champion" in shown
    # The description: every line of describe_version's Markdown verdict, rendered (no Markdown markers left).
    lines = [line.removeprefix("- ") for line in version.description.splitlines() if line.strip()]
    assert len(lines) >= 5 and "Fit to ship" in lines[0]
    for line in lines:
        assert squeezed(line) in squeezed(shown), line
    assert "**" not in shown
    # The tags: the data period's end and the key numbers, as the table shows them (name, value).
    assert {"trained_through", "fit_to_ship", "test_roc_auc", "test_ece", "hot_cutoff", "warm_cutoff"} <= set(version.tags)
    for key, value in version.tags.items():
        assert f"{key} {value}" in shown, (key, value)
    screenshot(page, "mlflow-registry.png")
    # The same version's report, as the docs show it (the screenshot is written only with LEADTEMP_SCREENSHOTS).
    done = run("report", "--out", "report.html")
    assert done.exit_code == 0 and f"for MLflow run {version.run_id}" in done.output, done.output
    screenshot((home / "report.html").as_uri(), "report.png")
