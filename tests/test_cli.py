"""End to end through the CLI: simulate → train → score → explain, model loaded via the registry alias."""

import re
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from typer.testing import CliRunner

from conftest import ROOT
from leadtemp.cli import app
from leadtemp.modelling.scorer import OUTPUT_COLUMNS

runner = CliRunner()
PARAMS = str(ROOT / "params.yaml")


def run(*args):
    return runner.invoke(app, [*args, "--params", PARAMS], env={"COLUMNS": "250"})


def defined_metrics() -> list[re.Pattern]:
    """The metric names docs/glossary.md#metrics defines, placeholders such as ``<bucket>`` as patterns."""
    section = (ROOT / "docs" / "glossary.md").read_text().split("## Metrics", 1)[1]
    return [re.compile(re.sub(r"<[a-z]+>", "[a-z0-9_.]+", re.escape(name).replace(r"\<", "<").replace(r"\>", ">")))
            for name in re.findall(r"`([a-z_.<>0-9]+)`", section)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny world trained once, in its own folder and MLflow store."""
    home = tmp_path_factory.mktemp("e2e")
    mp = pytest.MonkeyPatch()
    mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{home / 'mlflow.db'}")
    mp.chdir(home)
    sim = run("simulate", "--out", "sim", "--leads", "1500", "--months", "24", "--seed", "5")
    assert sim.exit_code == 0, sim.output
    files = ["--leads", "sim/leads.parquet", "--interactions", "sim/interactions.parquet"]
    began = time.time()
    trained = run("train", *files)
    took = time.time() - began
    assert trained.exit_code == 0, trained.output
    (home / "train-seconds.txt").write_text(f"{began} {took}")
    yield home, files, trained.output
    mp.undo()


@pytest.fixture()
def in_home(trained, monkeypatch):
    home, files, _ = trained
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{home / 'mlflow.db'}")
    monkeypatch.chdir(home)
    return home, files


def test_train_registers_champion_and_exports(trained):
    home, _, output = trained
    assert "registered version 1 (alias champion)" in output
    assert "converts within (p_<h>d, test rows whose h days are observed): 7 days: ROC-AUC" in output
    assert (home / "models" / "v1" / "MLmodel").is_file() and (home / "models" / "latest" / "MLmodel").is_file()
    assert (home / "models" / "champion" / "MLmodel").read_bytes() == (home / "models" / "v1" / "MLmodel").read_bytes()


def test_run_logs_metrics_plots_fingerprint_without_personal_data(in_home):
    home, _ = in_home
    client = mlflow.MlflowClient()
    run = client.search_runs([client.get_experiment_by_name("leadtemp").experiment_id])[0]
    for metric in ("test_roc_auc", "test_pr_auc", "test_log_loss", "test_brier", "test_ece", "test_lift_in_top_10pct",
                   "test_conversions_in_top_half", "test_thermometer_roc_auc", "test_hot_conversion",
                   "test_hot_conversion_low95", "test_cold_leads", "test_uncalibrated_ece"):
        assert metric in run.data.metrics
    assert not {"test_top_half_capture", "test_hot_rate_low", "test_lift_at_10", "test_raw_ece"} & set(run.data.metrics)
    # Every metric the run logs is defined in the glossary, by the name the run page shows.
    defined = defined_metrics()
    assert [m for m in run.data.metrics if not any(d.fullmatch(m) for d in defined)] == []
    # The run name states the data period: the first lead's creation to the end of the labels learned from.
    version_tags = client.get_model_version("leadtemp", run.data.tags["registered_version"]).tags
    first = run.data.params["fingerprint.created_from"][:10]
    assert run.info.run_name == f"train {first}\u2026{version_tags['trained_through']}"
    # Settings not in force are not logged: the cut-offs are shares of the calibration rows here.
    assert run.data.params["buckets.method"] == "share" and "buckets.hot_probability" not in run.data.params
    assert not any(k.startswith("simulate.") for k in run.data.params)
    assert "fingerprint.sha256_leads" in run.data.params
    # What the auto settings became and what the folds chose, beside the params that say "auto".
    assert run.data.params["snapshots.horizon_days"] == "auto" and run.data.params["chosen.horizon_days"] == "90"
    assert run.data.params["chosen.family"] in {"trees", "additive"} and "folds_roc_auc" in run.data.metrics
    assert run.data.params["when.horizons_days"] == "(7, 30, 90)" and run.data.params["chosen.when_horizons_days"] == "7,30,90"
    # The run's duration is the training's, not only the logging's (it was 3.4 s for a minute of training).
    began, took = map(float, (home / "train-seconds.txt").read_text().split())
    assert began * 1000 <= run.info.start_time and run.info.end_time - run.info.start_time >= 0.6 * took * 1000
    # The MLflow UI opens the experiment on its runs (model training), not on the GenAI traces view.
    assert client.get_experiment_by_name("leadtemp").tags["mlflow.experimentKind"] == "custom_model_development"
    # The run, the registered version and the registry say what the model is: its cut-offs, quality and period.
    hot = float(run.data.params["chosen.hot_cutoff"])
    assert f"calibrated chance ≥ {hot:.3f}" in run.data.tags["mlflow.note.content"]
    version = client.get_model_version("leadtemp", run.data.tags["registered_version"])
    assert version.description == run.data.tags["mlflow.note.content"] and "Fit to ship" in version.description
    assert version.tags["trained_through"] == run.data.tags["mlflow.note.content"].split("labels learned up to ")[1][:10]
    assert float(version.tags["test_roc_auc"]) == round(run.data.metrics["test_roc_auc"], 3)
    assert "hot / warm / cold" in client.get_registered_model("leadtemp").description
    plots = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert plots == {"plots/reliability.png", "plots/gains.png", "plots/shap_summary.png"}
    # Every plot's title names the test period, its rows and its conversions (the PNG's Title text).
    from PIL import Image

    rows, converted = int(run.data.metrics["test_rows"]), round(run.data.metrics["test_rows"] * run.data.metrics["test_conversion_rate"])
    period = run.data.tags["mlflow.note.content"].split("test slice ")[1][:10]   # the first test cutoff
    for png in plots:
        title = Image.open(mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path=png,
                                                               dst_path=str(home / "titles"))).info["Title"]
        assert f"\u2014 test {period}\u2026" in title and f"{rows:,} rows of " in title and f", {converted:,} conversions" in title
    # No personal data anywhere in what the run stored.
    local = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, dst_path=str(home / "dl"))
    leads = pd.read_parquet(home / "sim" / "leads.parquet")
    stored = " ".join(p.read_text(errors="ignore") for p in Path(local).rglob("*")
                      if p.is_file() and p.suffix in {".json", ".txt", ".yaml", ""})
    stored += " ".join(map(str, run.data.params.values()))
    for column in ("email", "phone", "name"):
        assert not any(value in stored for value in leads[column].head(200)), column


def test_score_with_the_registry_alias_then_explain(in_home):
    home, files = in_home
    result = run("score", "--as-of", "2024-11-15", "--out", "scores.csv", *files)
    assert result.exit_code == 0, result.output
    scores = pd.read_csv(home / "scores.csv")
    # Beside the bucket, when it is likely to convert: within 7, 30 and 90 days, and the median days to convert.
    when = ["p_7d", "p_30d", "p_90d", "expected_days"]
    at = OUTPUT_COLUMNS.index("rank")
    assert list(scores.columns) == OUTPUT_COLUMNS[:at] + when + OUTPUT_COLUMNS[at:]
    assert OUTPUT_COLUMNS[-2:] == ["model_version", "run_id"]
    assert (scores["p_7d"] <= scores["p_30d"]).all() and (scores["p_30d"] <= scores["p_90d"]).all()
    assert (scores["p_90d"] == scores["probability"]).all()
    assert (scores["model_version"] == 1).all()
    # One model identity: the registry version, and beside it the MLflow run that logged that version.
    assert (scores["run_id"] == mlflow.MlflowClient().get_model_version("leadtemp", "1").run_id).all()
    assert scores["rank"].tolist() == list(range(1, len(scores) + 1))
    assert scores["probability"].is_monotonic_decreasing
    assert set(scores["bucket"]) <= {"hot", "warm", "cold"} and scores["score"].between(1, 99).all()
    assert scores["reason_1"].str.endswith(("(+)", "(\u2212)")).all()

    top = scores.loc[0, "lead_id"]
    shown = run("explain", top, "--as-of", "2024-11-15", "--plot", "why.png", *files)
    assert shown.exit_code == 0, shown.output
    assert f"lead {top}" in shown.output and "raises the chance" in shown.output
    row = scores.loc[0]
    assert (f"chance within 7 / 30 / 90 days: {row['p_7d']:.1%} / {row['p_30d']:.1%} / {row['p_90d']:.1%}; if it "
            "converts within 90 days, "
            f"in about {row['expected_days']:.0f} days (median)") in shown.output
    assert (home / "why.png").stat().st_size > 0


def test_pyfunc_from_registry_matches_the_cli_scores(in_home):
    from leadtemp.adapters.pyfunc import load_scorer, nest

    home, _ = in_home
    leads = pd.read_parquet(home / "sim" / "leads.parquet")
    events = pd.read_parquet(home / "sim" / "interactions.parquet")
    scorer, _ = load_scorer("models:/leadtemp@champion")
    model = mlflow.pyfunc.load_model("models:/leadtemp@champion")
    # MLflow's own input check drops converted_at (no model input, not in the signature): send open leads here;
    # leadtemp serve reads it and answers `converted` (tests/test_serving.py).
    some = leads.head(300).loc[lambda f: ~(f["converted_at"] < pd.Timestamp("2024-11-15"))]
    out = model.predict(nest(some, events[events["lead_id"].isin(some["lead_id"])], scorer),
                        params={"as_of": "2024-11-15"})
    direct = scorer.score(some, events, pd.Timestamp("2024-11-15"))
    assert out["lead_id"].tolist() == some["lead_id"].tolist()  # every lead, in the request's order
    assert set(out["status"]) <= {"scored", "not_yet_created"}
    scored = out.loc[out["status"] == "scored"].set_index("lead_id")
    assert sorted(scored.index) == sorted(direct["lead_id"])
    scored = scored.loc[direct["lead_id"]]
    assert scored["probability"].astype(float).tolist() == direct["probability"].tolist()
    for column in ("p_7d", "p_30d", "p_90d", "expected_days"):  # the registered pyfunc answers when too
        assert scored[column].astype(float).tolist() == direct[column].tolist(), column
    assert scored["rank"].astype(int).tolist() == direct["rank"].tolist()


def test_exported_folder_scores_offline(in_home):
    home, files = in_home
    result = run("score", "--as-of", "2024-11-15", "--out", "offline.parquet", "--model", "models/latest", *files)
    assert result.exit_code == 0, result.output
    offline = pd.read_parquet(home / "offline.parquet")
    registry = pd.read_csv(home / "scores.csv")
    assert offline["lead_id"].tolist() == registry["lead_id"].tolist()
    assert (offline["model_version"] == "1").all() and offline["run_id"].tolist() == registry["run_id"].tolist()
    pd.testing.assert_series_equal(offline["probability"], registry["probability"], check_exact=False, rtol=1e-12)


BAD_INPUTS = [  # (change, what train says, what score's rejects say; None: the table itself is unusable)
    (lambda leads, i: (pd.concat([leads, leads.head(2)]), i), "duplicate lead id", "duplicate lead id (2 rows)"),
    (lambda leads, i: (leads.assign(created_at=leads["created_at"].astype(str).where(leads.index != 5, "not a date")), i),
     "not parsable", "column 'created_at': is not a parsable timestamp"),
    (lambda leads, i: (leads, i.assign(lead_id=i["lead_id"].where(i.index != 3, "ghost"))), "not in the leads table",
     "its lead is not in the leads table"),
    (lambda leads, i: (leads.drop(columns=["created_at"]), i), "missing columns ['created_at']", None),
    (lambda leads, i: (leads.assign(converted_at=leads["converted_at"].where(leads.index != 7, pd.Timestamp("2000-01-01"))), i),
     "convert before", "column 'converted_at': is before the creation time"),
    (lambda leads, i: (leads, i.assign(direction=i["direction"].where(i.index != 11, "sideways"))), "direction other than",
     "interaction row 12: column 'direction': is not one of ['inbound', 'outbound']"),
]


def _write_bad(home, tmp_path, mutate):
    leads, events = mutate(pd.read_parquet(home / "sim" / "leads.parquet"), pd.read_parquet(home / "sim" / "interactions.parquet"))
    leads.to_csv(tmp_path / "bad_leads.csv", index=False)
    events.to_csv(tmp_path / "bad_events.csv", index=False)
    return leads, events, ["--leads", str(tmp_path / "bad_leads.csv"), "--interactions", str(tmp_path / "bad_events.csv")]


@pytest.mark.parametrize(("mutate", "message", "_"), BAD_INPUTS)
def test_training_on_bad_input_exits_2_and_names_file_column_and_rows(in_home, tmp_path, mutate, message, _):
    home, _files = in_home
    *_data, bad = _write_bad(home, tmp_path, mutate)
    result = run("train", *bad)
    assert result.exit_code == 2, result.output
    assert message in result.output and "bad_" in result.output
    assert "row" in result.output or "missing columns" in message


@pytest.mark.parametrize(("mutate", "message", "reason"), BAD_INPUTS)
def test_scoring_rejects_exactly_the_bad_leads_with_their_reason_and_scores_the_rest(in_home, tmp_path, mutate,
                                                                                      message, reason):
    home, _files = in_home
    leads, events, bad = _write_bad(home, tmp_path, mutate)
    out = tmp_path / "out.csv"
    result = run("score", "--as-of", "2024-11-15", "--out", str(out), *bad)
    if reason is None:  # a missing column: nothing can be scored, nothing is written
        assert result.exit_code == 2 and message in result.output and "bad_leads.csv" in result.output
        assert not out.exists() and not list(tmp_path.glob("*.rejects.csv"))
        return
    assert result.exit_code == 0, result.output
    assert "rejected" in result.output
    scored = pd.read_csv(out, dtype={"lead_id": str})
    rejects = pd.read_csv(tmp_path / "out.rejects.csv", dtype={"lead_id": str})
    assert reason in set(rejects["reason"]), rejects
    lead_rejects = rejects[rejects["source"] == "leads"]
    assert not set(lead_rejects["lead_id"]) & set(scored["lead_id"])
    assert scored["lead_id"].is_unique and sorted(scored["rank"]) == list(range(1, len(scored) + 1))
    # Every lead of the input is scored, rejected or not eligible; the clean ones score as without the bad rows.
    clean = pd.read_parquet(home / "sim" / "leads.parquet")
    eligible = clean[(pd.to_datetime(clean["created_at"]) < "2024-11-15")
                     & ~(pd.to_datetime(clean["converted_at"]) < "2024-11-15")]["lead_id"]
    assert set(scored["lead_id"]) == set(eligible) - set(lead_rejects["lead_id"])
    assert run("score", "--as-of", "2024-11-15", "--out", str(tmp_path / "clean.csv"), *_files).exit_code == 0
    strict = pd.read_csv(tmp_path / "clean.csv", dtype={"lead_id": str}).set_index("lead_id")
    original = pd.read_parquet(home / "sim" / "interactions.parquet")
    same = (original == events) | (original.isna() & events.isna()) if events.shape == original.shape else None
    touched = set(original["lead_id"][~same.all(axis=1)]) if same is not None else set()
    mine = scored.set_index("lead_id").drop(index=list(touched & set(scored["lead_id"])))
    assert len(mine) > 500
    pd.testing.assert_series_equal(mine["probability"], strict.loc[mine.index, "probability"], check_exact=False,
                                   rtol=1e-12)
    assert run("score", "--as-of", "2024-11-15", "--out", str(out), "--fail-on-rejects", *bad).exit_code == 3


def test_help_is_fast_because_heavy_libraries_are_not_imported():
    code = "import sys, leadtemp.cli; print(sorted(m for m in ('mlflow', 'lightgbm', 'shap', 'sklearn') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_too_little_history_is_refused_clearly(tmp_path):
    assert run("simulate", "--out", str(tmp_path / "short"), "--leads", "300", "--months", "8").exit_code == 0
    result = run("train", "--leads", str(tmp_path / "short" / "leads.parquet"),
                 "--interactions", str(tmp_path / "short" / "interactions.parquet"))
    assert result.exit_code == 2
    assert "too short" in result.output and "give more history" in result.output


def test_without_a_champion_score_calls_and_explain_say_so_in_one_line_and_name_a_model_that_loads(in_home, tmp_path,
                                                                                                    monkeypatch):
    """Not MLflow's "Registered model alias champion not found.": what is missing, and what to give instead."""
    import shutil

    home, files = in_home
    shutil.copy(home / "mlflow.db", tmp_path / "mlflow.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.MlflowClient().delete_registered_model_alias("leadtemp", "champion")
    lead = pd.read_parquet(home / "sim" / "leads.parquet")["lead_id"].iloc[0]
    commands = (["score", "--as-of", "2024-11-15", "--out", str(tmp_path / "s.csv")],
                ["calls", "--as-of", "2024-11-15", "--reps", "1", "--per-rep", "5"],
                ["explain", lead, "--as-of", "2024-11-15"])
    for command in commands:
        result = run(*command, *files)
        assert result.exit_code == 2, result.output
        line = result.output.strip().splitlines()[-1]
        assert line.startswith("error: no champion yet for registered model 'leadtemp' in sqlite:"), line
        assert line.endswith("give --model models/v1 (version 1, the newest), or train one that passes"), line
        assert "not found" not in result.output
    assert not (tmp_path / "s.csv").exists()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'empty.db'}")
    result = run(*commands[0], *files)
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1].startswith("error: no model registered as 'leadtemp' in sqlite:")


def test_a_later_train_says_the_champion_stays_and_how_to_promote_or_use_the_new_version(in_home, tmp_path,
                                                                                         monkeypatch):
    """Train never moves the alias after the first version: its output says so, with commands that work as printed."""
    import shlex
    import shutil

    home, files = in_home
    shutil.copy(home / "mlflow.db", tmp_path / "mlflow.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.chdir(tmp_path)
    data = ["--leads", str(home / "sim" / "leads.parquet"), "--interactions", str(home / "sim" / "interactions.parquet")]
    result = run("train", *data)
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())  # a console may wrap the line
    assert "registered version 2; exported to models/v2" in said
    assert ("version 1 stays the champion (score uses it): train never replaces it; to promote a model of this data "
            "behind the gates: ") in said and said.endswith("; or score with this one: --model models/v2")
    command = shlex.split(said.split("behind the gates: ", 1)[1].split(";", 1)[0])
    assert command[-9:-7] == ["retrain", "--through"] and pd.Timestamp(command[-7]) > pd.Timestamp("2024-11-01")
    assert command[-6:] == ["--params", PARAMS, *data]  # reads what this train read
    assert (tmp_path / "models" / "v2" / "MLmodel").is_file()
    assert str(mlflow.MlflowClient().get_model_version_by_alias("leadtemp", "champion").version) == "1"
