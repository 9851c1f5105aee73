"""Quarterly retraining: backtest, champion/challenger gates, drift, rollback, determinism, the shifted simulator.

The world changes on SHIFT (a new lead source that converts well, a dead SMS channel). The
champion is trained with the data known before it; a challenger trained a year and a half later has
learnt the change, so the right decision is known: promote it. Broken copies of the same data must
be refused, each by the gate meant for it.
"""

from __future__ import annotations

import atexit
import json
import shutil
import tempfile
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from conftest import ROOT
from leadtemp.adapters.tracking import log_run
from leadtemp.cli import app
from leadtemp.core.config import load_params
from leadtemp.core.drift import drift_report, profile, psi
from leadtemp.simulate import SHIFT_SOURCE, simulate
from leadtemp.workflows.quarterly import backtest, known_at, quarters_without_conversions, retrain
from leadtemp.workflows.train import train

SHIFT = "2024-01-01"
CHAMPION_AT = pd.Timestamp("2024-07-01")   # the champion: data known before the shift's effects are learnt
THROUGH = "2025-07-01"                     # the challenger: data known a year later
# Retrain and backtest mechanics. The p_<h>d horizons (a booster each, about double the training time) are tested in
# test_when.py, backtest's per-horizon metrics included, so these runs use params.yaml without them.
_FOLDER = Path(tempfile.mkdtemp(prefix="leadtemp-test-quarterly-"))
atexit.register(shutil.rmtree, _FOLDER, ignore_errors=True)
PARAMS = _FOLDER / "params.yaml"
PARAMS.write_text((ROOT / "params.yaml").read_text().replace("  horizons_days: [7, 30, 90]", "  horizons_days: []", 1))
assert load_params(PARAMS).when.horizons_days == ()
runner = CliRunner()


@pytest.fixture(scope="session")
def shifted():
    return simulate(6000, seed=21, months=30, shift_at=SHIFT)


@pytest.fixture(scope="session")
def champion(shifted):
    """What `retrain` would have trained in mid-2024: fitted before the new source mattered."""
    params = load_params(PARAMS)
    return train(*known_at(shifted.leads, shifted.interactions, CHAMPION_AT),
                 params.replace(snapshots={"observed_until": str(CHAMPION_AT)}))


def write(sim_leads: pd.DataFrame, sim_events: pd.DataFrame, folder) -> list[str]:
    folder.mkdir(exist_ok=True)
    sim_leads.to_parquet(folder / "leads.parquet")
    sim_events.to_parquet(folder / "interactions.parquet")
    return ["--leads", str(folder / "leads.parquet"), "--interactions", str(folder / "interactions.parquet")]


def cli(*args):
    return runner.invoke(app, [*args, "--params", str(PARAMS)], env={"COLUMNS": "250"})


def with_champion(champion) -> MlflowClient:
    """This test's MLflow store with the mid-2024 model registered as version 1, alias champion."""
    logged = log_run(champion, load_params(PARAMS), export_dir="models")
    assert logged.version == "1" and logged.champion
    return MlflowClient()


def aliases() -> dict[str, str]:
    return {k: str(v) for k, v in MlflowClient().get_registered_model("leadtemp").aliases.items()}


def last_line(output: str) -> str:
    return output.strip().splitlines()[-1]


# -- point in time -------------------------------------------------------------------------------

def test_known_at_hides_everything_from_that_moment_on(shifted):
    t = pd.Timestamp("2024-03-01")
    leads, events = known_at(shifted.leads, shifted.interactions, t)
    assert (leads["created_at"] < t).all() and (events["timestamp"] < t).all()
    assert (leads["converted_at"].dropna() < t).all()
    later = shifted.leads.set_index("lead_id").loc[leads["lead_id"], "converted_at"]
    assert leads["converted_at"].isna().sum() == (later.isna() | (later >= t)).sum()  # later conversions: not yet
    assert len(leads) == (shifted.leads["created_at"] < t).sum()
    assert shifted.leads["converted_at"].max() >= t  # the input itself is untouched


def test_a_backtest_model_is_the_same_whatever_happens_after_its_quarter_starts(shifted):
    """Scrambling every conversion and event from the quarter's start on changes the test labels, never the model."""
    params = load_params(PARAMS)
    honest = backtest(shifted.leads, shifted.interactions, params, 1)
    start = honest.folds[0].start
    rng = np.random.default_rng(0)
    leads = shifted.leads.copy()
    late = leads["converted_at"] >= start
    leads.loc[late, "converted_at"] = leads.loc[late, "converted_at"].sample(frac=1, random_state=1).to_numpy()
    leads["converted_at"] = leads["converted_at"].where(leads["converted_at"] > leads["created_at"])
    events = shifted.interactions.copy()
    after = events["timestamp"] >= start
    events.loc[after, "type"] = rng.permutation(events.loc[after, "type"].to_numpy())
    scrambled = backtest(leads, events, params.replace(snapshots={"observed_until": str(shifted.leads["created_at"].max())}), 1)
    assert scrambled.folds[0].start == start
    assert scrambled.folds[0].result.prediction_sha256 == honest.folds[0].result.prediction_sha256
    assert scrambled.folds[0].metrics["roc_auc"] != honest.folds[0].metrics["roc_auc"]


def test_a_challenger_is_the_same_whatever_happens_from_its_through_date_on(shifted, champion):
    """Events and conversions from --through on (here: invented ones) change neither the challenger nor the decision."""
    params = load_params(PARAMS)
    through = pd.Timestamp("2025-04-01")
    honest = retrain(shifted.leads, shifted.interactions, params, through, champion.scorer, "1")
    leads = shifted.leads.copy()
    late = leads["converted_at"].isna() & (leads["created_at"] < through)
    leads.loc[late, "converted_at"] = through + pd.Timedelta(hours=1)  # everyone open converts right after
    flood = shifted.interactions.sample(5000, random_state=0).assign(timestamp=through, type="pos_question",
                                                                     direction="inbound")
    future = retrain(leads, pd.concat([shifted.interactions, flood], ignore_index=True), params, through,
                     champion.scorer, "1")
    assert future.challenger.prediction_sha256 == honest.challenger.prediction_sha256
    assert future.challenger_metrics == honest.challenger_metrics and future.champion_metrics == honest.champion_metrics
    assert [g.passed for g in future.gates] == [g.passed for g in honest.gates]


# -- backtest --------------------------------------------------------------------------------------

def test_backtest_prints_a_table_per_quarter_and_logs_a_parent_with_children(shifted, tmp_path):
    files = write(shifted.leads, shifted.interactions, tmp_path / "data")
    result = cli("backtest", "--quarters", "2", "--reps", "4", "--per-rep", "25", *files)
    assert result.exit_code == 0, result.output
    assert "2024Q4" in result.output and "2025Q1" in result.output and "thermometer" in result.output
    assert "a team making 100 calls at each cutoff would have reached" in result.output
    client = MlflowClient()
    runs = client.search_runs([client.get_experiment_by_name("leadtemp").experiment_id])
    parent = [r for r in runs if r.data.tags.get("kind") == "backtest"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent[0].info.run_id]
    assert len(parent) == 1 and sorted(r.data.tags["quarter"] for r in children) == ["2024Q4", "2025Q1"]
    for child in children:
        assert {"roc_auc", "pr_auc", "ece", "lift_in_top_10pct", "conversions_in_top_half", "thermometer_roc_auc",
                "hot_conversion", "cold_share_of_leads"} <= set(child.data.metrics)
        assert not {"lift_at_10", "hot_rate", "top_half_capture"} & set(child.data.metrics)
        reached = {who: child.data.metrics[f"calls_reached_{who}"] for who in ("leadtemp", "thermometer", "newest_first")}
        assert all(0 < v < 1 for v in reached.values()) and reached["leadtemp"] > reached["newest_first"]
        assert child.data.params["trained_with_data_before"] in ("2024-10-01", "2025-01-01")
        # The run name states the quarter tested and the data its model learned from.
        assert child.info.run_name == (f"backtest {child.data.tags['quarter']}: train "
                                       f"{child.data.params['fingerprint.created_from'][:10]}\u2026"
                                       f"{child.data.params['trained_through']}")
    assert parent[0].info.run_name.startswith("backtest 2024Q4\u20262025Q1, first model train ")
    assert "mean_lift_in_top_10pct" in parent[0].data.metrics
    # Its page: logged to the parent run, and written by `leadtemp report --run PARENT`.
    logged = mlflow.artifacts.load_text(f"runs:/{parent[0].info.run_id}/report.html")
    written = cli("report", "--run", parent[0].info.run_id, "--out", str(tmp_path / "backtest.html"))
    assert written.exit_code == 0, written.output
    page = (tmp_path / "backtest.html").read_text()
    for text in (logged, page):
        assert "Backtest report" in text and "2024Q4" in text and "2025Q1" in text and "What a team of 100 calls" in text
        assert not any(lead in text for lead in shifted.leads["lead_id"].head(200)), "no lead ids"


def test_backtest_asks_only_for_quarters_it_can_label(shifted, tmp_path):
    files = write(shifted.leads, shifted.interactions, tmp_path / "data")
    result = cli("backtest", "--quarters", "40", *files)
    assert result.exit_code == 2 and "fully labelled cutoffs" in result.output


# -- champion / challenger -------------------------------------------------------------------------

def test_a_challenger_that_learnt_the_change_is_promoted_and_the_old_champion_kept_as_previous(shifted, champion, tmp_path):
    client = with_champion(champion)
    files = write(shifted.leads, shifted.interactions, tmp_path / "data")
    result = cli("retrain", "--through", THROUGH, *files)
    assert result.exit_code == 0, result.output
    assert last_line(result.output) == "promoted v2"
    assert "better: ROC-AUC +" in result.output and "FAIL" not in result.output
    assert aliases() == {"champion": "2", "previous": "1"}
    models = tmp_path / "models"
    assert (models / "champion" / "MLmodel").read_bytes() == (models / "v2" / "MLmodel").read_bytes()
    run = client.search_runs([client.get_experiment_by_name("leadtemp").experiment_id],
                             "tags.kind = 'retrain'")[0]
    assert run.data.tags["decision"] == "promote"
    assert run.data.metrics["window_challenger_roc_auc"] > run.data.metrics["window_champion_roc_auc"]
    assert "window_champion_hot_conversion" in run.data.metrics and "window_champion_hot_rate" not in run.data.metrics
    # The run name: the challenger's data period and the window both models were compared on.
    window = run.data.params["retrain.window"].split(", ")
    assert run.info.run_name == (f"retrain {run.data.params['fingerprint.created_from'][:10]}\u2026"
                                 f"{client.get_model_version('leadtemp', '2').tags['trained_through']}, "
                                 f"compared on {window[0]}\u2026{window[-1]}")
    # The drift report names what changed: the dead SMS channel and the new source, a major shift each.
    drift = json.loads(Path(client.download_artifacts(run.info.run_id, "drift_report.json")).read_text())
    level = {row["feature"]: row["level"] for row in drift["features"]}
    assert level["sms_in_90d"] == level["source"] == "major"
    assert level["phone_call_in_90d"] == "stable"  # a channel that did not change
    assert "PSI >= 0.25" in result.output

    rolled = cli("rollback")
    assert rolled.exit_code == 0 and "champion is v1 again" in rolled.output
    assert aliases() == {"champion": "1"}
    assert (models / "champion" / "MLmodel").read_bytes() == (models / "v1" / "MLmodel").read_bytes()
    again = cli("rollback")
    assert again.exit_code == 2 and "nothing to roll back to" in again.output


def test_a_worse_challenger_is_refused(shifted, champion, tmp_path):
    """A challenger crippled by its params (3 trees of 2 leaves): worse than the champion, so the champion stays."""
    with_champion(champion)
    files = write(shifted.leads, shifted.interactions, tmp_path / "data")
    weak = tmp_path / "weak.yaml"
    text = PARAMS.read_text().replace("num_leaves: 15", "num_leaves: 2").replace("max_rounds: 2000", "max_rounds: 3")
    weak.write_text(text)
    result = runner.invoke(app, ["retrain", "--through", THROUGH, *files, "--params", str(weak)], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert last_line(result.output) == "kept v1"
    assert "FAIL not worse than the champion" in result.output
    assert aliases() == {"champion": "1"}
    assert MlflowClient().get_model_version("leadtemp", "2").run_id  # the refused challenger is still on record
    models = tmp_path / "models"  # offline scoring follows the champion, not the newest model
    assert (models / "champion" / "MLmodel").read_bytes() == (models / "v1" / "MLmodel").read_bytes()
    assert (models / "latest" / "MLmodel").read_bytes() == (models / "v2" / "MLmodel").read_bytes()


def shuffled_labels(leads: pd.DataFrame) -> pd.DataFrame:
    """Who converted and when, dealt out at random: conversion delays permuted across leads.

    Young leads still convert more often than old ones (short delays are common), so a challenger
    fitted on this reaches ROC-AUC ~0.74 on equally shuffled labels and beats the champion there;
    only the champion's collapse (0.83 at its test, ~0.54 now) gives the breakage away.
    """
    delay = (leads["converted_at"] - leads["created_at"]).sample(frac=1, random_state=3).to_numpy()
    return leads.assign(converted_at=leads["created_at"] + delay)


def constant_source(leads: pd.DataFrame) -> pd.DataFrame:
    """A CRM export that lost the lead source: every lead says 'website'."""
    return leads.assign(source="website")


def quarter_without_conversions(leads: pd.DataFrame) -> pd.DataFrame:
    """The CRM stopped recording conversions for the last quarter before the retrain."""
    lost = leads["converted_at"].between(pd.Timestamp("2025-04-01"), pd.Timestamp(THROUGH), inclusive="left")
    return leads.assign(converted_at=leads["converted_at"].where(~lost))


@pytest.mark.parametrize("breakage, gate", [
    (shuffled_labels, "champion has not collapsed"),
    (constant_source, "no feature went constant"),
    (quarter_without_conversions, "conversions every quarter"),
])
def test_a_challenger_from_broken_data_is_never_promoted(shifted, champion, tmp_path, breakage, gate):
    with_champion(champion)
    files = write(breakage(shifted.leads), shifted.interactions, tmp_path / "data")
    result = cli("retrain", "--through", THROUGH, *files)
    assert result.exit_code == 0, result.output
    assert last_line(result.output) == "kept v1"
    assert f"FAIL {gate}" in result.output
    assert aliases() == {"champion": "1"}


def test_the_first_retrain_promotes_on_its_own_gates_and_a_dry_run_moves_nothing(shifted, tmp_path):
    files = write(shifted.leads, shifted.interactions, tmp_path / "data")
    dry = cli("retrain", "--through", THROUGH, "--dry-run", *files)
    assert dry.exit_code == 0, dry.output
    assert last_line(dry.output) == "kept none (no champion yet) (dry run: the challenger would be promoted)"
    client = MlflowClient()
    assert client.search_registered_models() == []  # nothing registered
    first = cli("retrain", "--through", THROUGH, *files)
    assert last_line(first.output) == "promoted v1" and aliases() == {"champion": "1"}
    # Each run's report.html says what became of it: logged again once the retrain moved the alias.
    runs = client.search_runs([client.get_experiment_by_name("leadtemp").experiment_id], order_by=["attributes.start_time"])
    pages = [mlflow.artifacts.load_text(f"runs:/{r.info.run_id}/report.html") for r in runs]
    assert "It is NOT the champion" in pages[0] and "it was not registered" in pages[0]
    assert "It is the champion (version 1" in pages[1] and "Champion against challenger (retrain)" in pages[1]


def test_same_data_and_params_give_the_same_model_and_every_run_is_kept(shifted, tmp_path):
    files = write(shifted.leads, shifted.interactions, tmp_path / "data")
    assert cli("retrain", "--through", THROUGH, *files).exit_code == 0
    first = {f: f.read_bytes() for f in (tmp_path / "models" / "v1").rglob("*") if f.is_file()}
    assert cli("retrain", "--through", THROUGH, *files).exit_code == 0
    assert {f: f.read_bytes() for f in (tmp_path / "models" / "v1").rglob("*") if f.is_file()} == first
    client = MlflowClient()
    runs = client.search_runs([client.get_experiment_by_name("leadtemp").experiment_id], "tags.kind = 'retrain'")
    assert len(runs) == 2 and runs[0].info.run_id != runs[1].info.run_id
    assert runs[0].data.tags["prediction_sha256"] == runs[1].data.tags["prediction_sha256"]
    versions = sorted(int(v.version) for v in client.search_model_versions("name = 'leadtemp'"))
    assert versions == [1, 2] and (tmp_path / "models" / "v1").is_dir() and (tmp_path / "models" / "v2").is_dir()


def test_retrain_refuses_a_date_after_the_data(shifted, tmp_path):
    files = write(shifted.leads, shifted.interactions, tmp_path / "data")
    result = cli("retrain", "--through", "2030-01-01", *files)
    assert result.exit_code == 2 and "after the end of the data" in result.output


# -- drift -----------------------------------------------------------------------------------------

def test_psi_is_zero_for_the_same_distribution_and_large_for_a_moved_one():
    rng = np.random.default_rng(0)
    old = np.column_stack([rng.normal(size=20000), rng.integers(0, 4, 20000).astype(float)])
    ref = profile(old, ["amount", "kind"], {"kind"}, np.zeros(20000), {"hot": 0.1, "warm": 0.3, "cold": 0.6})
    same = np.column_stack([rng.normal(size=20000), rng.integers(0, 4, 20000).astype(float)])
    moved = np.column_stack([rng.normal(1.0, 1.0, 20000), np.full(20000, 7.0)])  # 7: a kind never seen
    calm = drift_report(ref, same, ["amount", "kind"], 0.0, {"hot": 0.1, "warm": 0.3, "cold": 0.6})
    assert calm.features["psi"].max() < 0.01 and not [w for w in calm.warnings if "PSI" in w]
    shifted = drift_report(ref, moved, ["amount", "kind"], 0.0, {"hot": 0.1, "warm": 0.3, "cold": 0.6})
    assert (shifted.features["psi"] > 0.25).all() and "major shift" in shifted.warnings[0]
    assert psi([0.5, 0.5], [0.5, 0.5]) == 0.0


def test_quarters_without_conversions_are_found():
    leads = pd.DataFrame({"converted_at": pd.to_datetime(["2024-02-01", "2024-08-01", "2024-11-01", None])})
    assert quarters_without_conversions(leads, pd.Timestamp("2025-01-01")) == ["2024Q2"]
    assert quarters_without_conversions(leads, pd.Timestamp("2024-12-15")) == ["2024Q2"]  # Q4 is not over


# -- the shifted simulator ---------------------------------------------------------------------------

def test_the_shift_brings_a_new_source_and_silences_sms_and_leaves_the_past_alone(shifted):
    plain = simulate(6000, seed=21, months=30)
    at = pd.Timestamp(SHIFT)
    partner = shifted.leads["source"] == SHIFT_SOURCE
    assert partner.any() and (shifted.leads.loc[partner, "created_at"] >= at).all()
    assert 0.2 < partner[shifted.leads["created_at"] >= at].mean() < 0.3
    sms = (shifted.interactions["type"] == "sms") & (shifted.interactions["direction"] == "inbound")
    assert not (sms & (shifted.interactions["timestamp"] >= at)).any() and (sms & (shifted.interactions["timestamp"] < at)).any()
    # Partner leads convert like the best sources.
    converted = shifted.leads["converted_at"].notna()
    new = shifted.leads["created_at"] >= at
    assert converted[partner].mean() > converted[new & ~partner].mean() + 0.1
    # Before the shift: the same leads and the same behaviour.
    old = plain.leads["created_at"] < at
    cols = ["lead_id", "created_at", "source", "sector", "company_size", "potential", "need"]
    pd.testing.assert_frame_equal(plain.leads.loc[old, cols], shifted.leads.loc[old, cols])
    key = ["lead_id", "timestamp", "type", "direction"]
    before = [set(map(tuple, s.interactions.loc[s.interactions["timestamp"] < at, key].to_numpy())) for s in (plain, shifted)]
    assert len(before[0] ^ before[1]) < 0.005 * len(before[0])


def test_dates_outside_the_data_or_not_dates_stop_with_exit_2(tmp_path):
    outside = cli("simulate", "--out", str(tmp_path / "sim"), "--leads", "50", "--months", "6", "--shift-at", "2030-01-01")
    assert outside.exit_code == 2 and "--shift-at 2030-01-01 must fall inside the simulated period" in outside.output
    assert not (tmp_path / "sim").exists()
    garbled = cli("retrain", "--through", "end of June")
    assert garbled.exit_code == 2 and "--through 'end of June' is not a date" in garbled.output


def test_a_challenger_with_creation_snapshots_is_compared_on_the_periodic_test_cutoffs(small_sim, small_result, params):
    """Creation snapshots fall on almost every day; retrain's window stays the periodic test cutoffs, so the
    champion is scored there only, on the same rows as the challenger."""
    through = small_sim.leads["created_at"].max().normalize() + pd.Timedelta(days=1)
    with_creation = params.replace(snapshots={"at_creation": True})
    report = retrain(small_sim.leads, small_sim.interactions, with_creation, through, champion=small_result.scorer)
    test = report.challenger.test
    assert set(test["snapshot"]) == {"periodic", "creation"}
    assert set(report.window) == set(test.loc[test["snapshot"] == "periodic", "cutoff"]) == set(report.challenger.splits.test)
    assert report.champion_metrics["rows"] == report.challenger_metrics["rows"] == (test["snapshot"] == "periodic").sum()
    # A backtest scores each quarter's periodic cutoffs, whatever the training snapshots were.
    folds = backtest(small_sim.leads, small_sim.interactions, with_creation, 1).folds
    assert len(folds) == 1 and folds[0].metrics["roc_auc"] > 0.6
