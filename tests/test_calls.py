"""A call list that fits the team (issue 14, item 2): capacity, cooldown, order, balance, groups, and its worth."""

import itertools

import numpy as np
import pandas as pd
import pytest

from leadtemp.core.errors import ConfigError
from leadtemp.workflows.calls import plan_calls


def _scored(n: int = 400, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    margin = rng.normal(-1.5, 1.2, n)
    p = 1 / (1 + np.exp(-margin))
    return pd.DataFrame({
        "lead_id": [f"L{i:04d}" for i in range(n)], "as_of": pd.Timestamp("2025-01-01"), "probability": p,
        "score": np.clip(np.rint(100 * p), 1, 99).astype(int), "bucket": np.where(p > 0.4, "hot", np.where(p > 0.15, "warm", "cold")),
        "margin": margin, "reason_1": "r1", "reason_2": "r2", "reason_3": "", "model_version": "3", "run_id": "abc",
        "just_turned_active": (rng.random(n) < 0.1).astype(float),
        "outbound_days_since_last": np.where(rng.random(n) < 0.3, rng.integers(0, 30, n), np.nan),
        "thermometer_score": rng.poisson(2, n).astype(float), "region": rng.choice(["north", "south", "east"], n, p=[.6, .3, .1]),
    })


def test_the_plan_fills_each_reps_day_with_the_best_leads_not_just_called():
    scored = _scored()
    plan = plan_calls(scored, reps=4, per_rep=10, cooldown_days=7)
    calls = plan.calls
    assert len(calls) == 40 and plan.capacity == 40 and calls["lead_id"].is_unique
    assert calls.groupby("rep")["order"].apply(lambda o: list(o) == list(range(1, 11))).all()
    last = scored.set_index("lead_id")["outbound_days_since_last"]
    assert not (last.loc[calls["lead_id"]] < 7).any(), "nobody we contacted in the last 7 days"
    assert plan.cooled == int((last < 7).sum()) > 0
    open_ = scored.loc[~(scored["outbound_days_since_last"] < 7)]
    best = open_.sort_values("probability", ascending=False).head(40)
    # the best 40 by probability, up to the order inside one score point (just-turned-active first there)
    assert calls["probability"].sum() == pytest.approx(best["probability"].sum(), abs=0.02)
    assert plan.expected == pytest.approx(calls["probability"].sum())
    assert plan.expected >= plan.thermometer_expected and plan.expected > plan.random_expected
    assert plan.random_expected == pytest.approx(40 * open_["probability"].mean())


def test_within_one_score_the_lead_that_just_turned_active_is_called_first():
    scored = _scored(6)
    scored["score"] = 50
    scored["probability"] = [0.50, 0.504, 0.503, 0.502, 0.501, 0.500]
    scored["just_turned_active"] = [0, 0, 0, 0, 1, 0]
    scored["outbound_days_since_last"] = np.nan
    calls = plan_calls(scored, reps=1, per_rep=3, cooldown_days=7).calls
    assert list(calls["lead_id"]) == ["L0004", "L0001", "L0002"]


def test_reps_lists_are_balanced_by_expected_conversions():
    plan = plan_calls(_scored(2000, seed=3), reps=5, per_rep=30, cooldown_days=7)
    totals = plan.calls.groupby("rep")["probability"].sum()
    assert totals.max() - totals.min() <= plan.calls["probability"].max()
    assert list(plan.per_rep["calls"]) == [30] * 5 and plan.per_rep["expected"].sum() == pytest.approx(plan.expected)


def test_reps_stay_on_one_group_and_the_groups_get_the_reps_that_add_the_most():
    scored = _scored(300, seed=5)
    reps, per_rep = 4, 8
    plan = plan_calls(scored, reps=reps, per_rep=per_rep, cooldown_days=7, by="region")
    assert (plan.calls.groupby("rep")["region"].nunique() == 1).all()
    open_ = scored.loc[~(scored["outbound_days_since_last"] < 7)]
    best = {g: np.sort(part["probability"].to_numpy())[::-1] for g, part in open_.groupby("region")}
    brute = max(sum(best[g][:n * per_rep].sum() for g, n in zip(best, split))
                for split in itertools.product(range(reps + 1), repeat=len(best)) if sum(split) == reps)
    assert plan.expected == pytest.approx(brute, abs=0.02)  # the best split of reps (up to within-score order)


def test_more_capacity_than_leads_plans_every_lead_and_says_so_and_no_rep_is_refused():
    scored = _scored(30)
    plan = plan_calls(scored, reps=3, per_rep=50, cooldown_days=0)
    assert len(plan.calls) == 30 and plan.notes and "only 30 leads to call" in plan.notes[0]
    with pytest.raises(ConfigError, match="at least one rep"):
        plan_calls(scored, reps=0, per_rep=5, cooldown_days=7)


def test_the_backtest_counts_the_conversions_a_team_would_have_reached_in_each_order():
    from leadtemp.workflows.quarterly import calls_reached

    frame = pd.DataFrame({
        "lead_id": ["a", "b", "c", "d", "a", "b", "c", "d"],
        "cutoff": pd.to_datetime(["2024-01-01"] * 4 + ["2024-02-01"] * 4),
        "label": [1, 0, 1, 0, 0, 1, 0, 1],
        "probability": [0.9, 0.8, 0.1, 0.2, 0.3, 0.9, 0.2, 0.1],
        "margin": [2.0, 1.5, -2.0, -1.0, -0.5, 2.0, -1.0, -2.0],
        "thermometer_score": [0, 3, 2, 1, 1, 0, 0, 3],
        "lead_age_days": [40, 30, 20, 10, 71, 61, 51, 41],
    })
    got = calls_reached(frame, 1)
    # leadtemp calls a (1) then b (1); the thermometer b (0) then d (1); newest first d (0) then d (1): of 4 conversions
    assert got == {"calls_reached_leadtemp": 0.5, "calls_reached_thermometer": 0.25, "calls_reached_newest_first": 0.25}
    assert calls_reached(frame, 4)["calls_reached_leadtemp"] == 1.0
    # The cooldown: a lead we contacted 2 days before the cutoff is left out in every order ...
    contacted = frame.assign(outbound_days_since_last=[2.0, np.nan, 30.0, np.nan, np.nan, np.nan, np.nan, np.nan])
    assert calls_reached(contacted, 1, cooldown_days=7)["calls_reached_leadtemp"] == 0.25    # b (0), then b (1)
    assert calls_reached(contacted, 1, cooldown_days=1)["calls_reached_leadtemp"] == 0.5     # a (1), then b (1)
    # ... and so is a lead the same order called at an earlier cutoff within the cooldown (cutoffs a day apart here)
    daily = frame.assign(cutoff=pd.to_datetime(["2024-01-01"] * 4 + ["2024-01-02"] * 4),
                         probability=[0.9, 0.8, 0.1, 0.2] * 2, margin=[2.0, 1.5, -2.0, -1.0] * 2)
    # without a cooldown leadtemp calls a twice (1, then 0); with it a, then b (1)
    assert calls_reached(daily, 1)["calls_reached_leadtemp"] == 0.25
    assert calls_reached(daily, 1, cooldown_days=7)["calls_reached_leadtemp"] == 0.5


def test_the_calls_command_plans_the_day_and_refuses_what_it_cannot_plan(small_sim, small_result, tmp_path):
    import dataclasses

    from typer.testing import CliRunner

    from conftest import ROOT
    from leadtemp.cli import app
    from test_batch import _export

    scorer = dataclasses.replace(small_result.scorer, meta={**small_result.scorer.meta, "model_version": "3",
                                                            "run_id": "0123abcd"})
    small_sim.leads.to_parquet(tmp_path / "leads.parquet")
    small_sim.interactions.to_parquet(tmp_path / "events.parquet")
    args = ["calls", "--as-of", "2024-10-01", "--model", str(_export(scorer, tmp_path)), "--params",
            str(ROOT / "params.yaml"), "--leads", str(tmp_path / "leads.parquet"), "--interactions",
            str(tmp_path / "events.parquet")]
    runner = CliRunner()
    done = runner.invoke(app, [*args, "--reps", "3", "--per-rep", "5", "--out", str(tmp_path / "calls.csv")])
    assert done.exit_code == 0, done.output
    plan = pd.read_csv(tmp_path / "calls.csv", keep_default_na=False)
    assert len(plan) == 15 and list(plan.groupby("rep").size()) == [5, 5, 5]
    assert f"expected conversions {plan['probability'].sum():.1f}" in done.output and "wrote 15 calls" in done.output
    shown = runner.invoke(app, [*args, "--reps", "3", "--per-rep", "5"], env={"COLUMNS": "250"})  # written nowhere: shown
    assert shown.exit_code == 0, shown.output
    assert "the first 10 of 15 calls; the whole list with every reason: add --out calls.csv" in shown.output
    assert all(lead in shown.output for lead in plan["lead_id"].head(10)) and plan["lead_id"].iloc[14] not in shown.output
    features = scorer.features(small_sim.leads, small_sim.interactions, pd.Timestamp("2024-10-01")).set_index("lead_id")
    last = features.loc[plan["lead_id"], "outbound_days_since_last"]
    assert not (last < 7).any(), "nobody we contacted within the cooldown"
    scored = scorer.score(small_sim.leads, small_sim.interactions, pd.Timestamp("2024-10-01")).set_index("lead_id")
    open_ = scored.loc[~(features.loc[scored.index, "outbound_days_since_last"] < 7).to_numpy()]
    assert plan["probability"].min() >= open_["probability"].nlargest(15).min() - 0.01
    # Into a table: created, and a rerun of the same day replaces that day's plan (another day's stays).
    import sqlalchemy as sa

    url = f"sqlite:///{tmp_path / 'plans.db'}"
    for day in ("2024-10-01", "2024-10-01", "2024-09-15"):
        again = [a if a != "2024-10-01" else day for a in args]
        written = runner.invoke(app, [*again, "--reps", "3", "--per-rep", "5", "--db", url, "--write-table", "calls"])
        assert written.exit_code == 0, written.output
    engine = sa.create_engine(url)
    table = pd.read_sql("SELECT * FROM calls", engine)
    engine.dispose()
    assert len(table) == 30 and table.groupby("as_of").size().tolist() == [15, 15]
    assert set(table.loc[table["as_of"].astype(str).str.startswith("2024-10-01"), "lead_id"]) == set(plan["lead_id"])
    for more, message in ((["--reps", "3"], "give --reps N and --per-rep K"),
                          (["--reps", "3", "--per-rep", "5", "--by", "nope"], "--by 'nope'"),
                          (["--reps", "3", "--per-rep", "5", "--out", str(tmp_path / "leads.parquet")],
                           "never writes over an input"),
                          (["--reps", "3", "--per-rep", "5", "--by", "sector", "--db", url, "--write-table", "calls"],
                           "exists without the columns ['sector']")):
        refused = runner.invoke(app, [*args, *more])
        assert refused.exit_code == 2 and message in refused.output and len(refused.output.strip().splitlines()) == 1
