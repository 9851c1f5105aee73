"""When, not only if (issue 14, item 4): p_<h>d per horizon, consistent and calibrated, and expected_days."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from leadtemp.adapters.metric_names import logged_metrics
from leadtemp.modelling.horizons import consistent, expected_days, horizon_labels
from leadtemp.modelling.scorer import OUTPUT_COLUMNS, LeadScorer

AS_OF = pd.Timestamp("2024-11-15")
ROOT = Path(__file__).resolve().parents[1]


# -- code ------------------------------------------------------------------------------------------

def test_the_curve_never_falls_with_the_horizon_and_keeps_the_main_probability():
    rng = np.random.default_rng(0)
    raw = {7: rng.random(500), 30: rng.random(500), 90: rng.random(500), 14: rng.random(500)}
    main = rng.random(500)
    curve = consistent(raw, 30, main)
    assert list(curve) == [7, 14, 30, 90]
    np.testing.assert_array_equal(curve[30], main)
    for a, b in zip(list(curve), list(curve)[1:]):
        assert (curve[a] <= curve[b]).all()
    # Only what crossed moves: a consistent input comes back as it was.
    ordered = {7: np.full(3, 0.1), 90: np.full(3, 0.5)}
    out = consistent(ordered, 30, np.full(3, 0.3))
    np.testing.assert_array_equal(out[7], ordered[7]) and np.testing.assert_array_equal(out[90], ordered[90])
    # The main horizon outside the list still bounds them, and is not shown.
    assert list(consistent({7: np.full(1, 0.4), 90: np.full(1, 0.1)}, 30, np.full(1, 0.2))) == [7, 30, 90]


def test_expected_days_is_the_median_day_of_the_interpolated_curve():
    curve = {7: np.array([0.5, 0.0, 0.1, 0.0]), 30: np.array([0.6, 0.0, 0.1, 0.2]), 90: np.array([0.8, 0.4, 0.1, 0.2])}
    days = expected_days(curve)
    # 0.4 of 0.8 within the first week: 5.6 days; 0.2 of 0.4 halfway from 30 to 90; 0.05 of 0.1 at 3.5 days;
    # 0.1 of 0.2 halfway from 7 to 30 days (18.5); a curve of zeros has no conversion to wait for: 0.
    np.testing.assert_allclose(days, [5.6, 60.0, 3.5, 18.5])
    assert expected_days({7: np.zeros(1), 90: np.zeros(1)})[0] == 0


# -- model -----------------------------------------------------------------------------------------

def test_every_score_says_when_consistently(small_sim, small_result):
    scorer = small_result.scorer
    assert scorer.timing_days == (7, 30, 90) and scorer.horizon_days == 90 and set(scorer.horizon_models) == {7, 30}
    scores = scorer.score(small_sim.leads, small_sim.interactions, AS_OF)
    at = OUTPUT_COLUMNS.index("rank")
    assert list(scores.columns) == OUTPUT_COLUMNS[:at] + ["p_7d", "p_30d", "p_90d", "expected_days"] + OUTPUT_COLUMNS[at:]
    assert (scores["p_7d"] <= scores["p_30d"]).all() and (scores["p_30d"] <= scores["p_90d"]).all()
    np.testing.assert_array_equal(scores["p_90d"], scores["probability"])  # the main horizon is the main model
    assert scores["expected_days"].between(0, 90).all() and scores["expected_days"].nunique() > 20
    # A lead expected to convert sooner has more of its 90-day chance in the first week.
    early = scores["p_7d"] / scores["p_90d"]
    assert np.corrcoef(early, -scores["expected_days"])[0, 1] > 0.5
    # The same on the test slice the metrics were measured on.
    test = small_result.test
    assert (test["p_7d"] <= test["p_30d"]).all() and (test["p_30d"] <= test["p_90d"]).all()


def test_each_horizon_is_reported_calibrated_and_defined(small_result):
    m = small_result.metrics
    for h in (7, 30, 90):
        assert 0 <= m[f"p_{h}d_ece"] < 0.05 and m[f"p_{h}d_roc_auc"] > 0.75 and m[f"p_{h}d_rows"] > 1000
    assert m["p_90d_roc_auc"] == m["roc_auc"] and m["p_90d_ece"] == m["ece"]
    assert m["p_7d_positive_rate"] < m["p_30d_positive_rate"] < m["p_90d_positive_rate"]
    logged = logged_metrics(m, "test_")
    assert {"test_p_7d_ece", "test_p_30d_roc_auc", "test_p_90d_rows", "test_p_7d_conversion_rate"} <= set(logged)


def test_no_horizon_model_sees_a_label_past_the_test_slice(small_result):
    """Point in time: each horizon's booster, folds and calibrator learn only labels observed before what they are
    applied to (the test slice starts at the scorer's trained_through; a fold's block at its validates_from)."""
    scorer = small_result.scorer
    test_from = pd.Timestamp(scorer.meta["trained_through"])
    assert test_from == small_result.test["cutoff"].min()
    for h, facts in scorer.meta["when"].items():
        assert pd.Timestamp(facts["labels_through"]) <= test_from, h
        assert pd.Timestamp(facts["calibration_labels_through"]) <= test_from, h
        for fold in facts["folds"]:
            assert pd.Timestamp(fold["labels_through"]) <= pd.Timestamp(fold["validates_from"]), (h, fold)


def test_each_horizon_ranks_against_the_simulators_truth(small_sim, small_result):
    """On the periodic test snapshots, each p_<h>d against the simulator's exact chance within h days: close to
    its ranking of what happened, and agreeing with it lead by lead."""
    test = small_result.test.loc[small_result.test["snapshot"] == "periodic"]
    test = test.merge(small_sim.truth, on=["lead_id", "cutoff"], how="left", validate="one_to_one")
    until = pd.Timestamp(small_result.scorer.meta["observed_until"])
    for h in (7, 30, 90):
        seen = (test["cutoff"] + pd.Timedelta(days=h) <= until).to_numpy()
        y = horizon_labels(test, small_sim.leads, h)[seen]
        model = roc_auc_score(y, test[f"p_{h}d"].to_numpy()[seen])
        oracle = roc_auc_score(y, test[f"p_convert_{h}d"].to_numpy()[seen])
        assert model > oracle - 0.08, (h, model, oracle)
        assert roc_auc_score(test[f"p_convert_{h}d"].to_numpy()[seen] > np.median(test[f"p_convert_{h}d"]),
                             test[f"p_{h}d"].to_numpy()[seen]) > 0.75, h


def test_a_model_saved_before_the_horizons_still_loads_and_scores_without_them(small_sim, small_result, tmp_path):
    scorer = small_result.scorer
    new = scorer.save(tmp_path / "new")
    assert {p.name for p in new.iterdir()} == {"booster.txt", "booster_7d.txt", "booster_30d.txt", "scorer.json"}
    again = LeadScorer.load(new)
    assert again.fingerprint() == scorer.fingerprint()
    ids = small_sim.leads.head(300)
    pd.testing.assert_frame_equal(again.score(ids, small_sim.interactions, AS_OF),
                                  scorer.score(ids, small_sim.interactions, AS_OF))
    old = tmp_path / "old"
    shutil.copytree(new, old)
    raw = json.loads((old / "scorer.json").read_text())
    del raw["when"]
    (old / "scorer.json").write_text(json.dumps(raw))
    for extra in ("booster_7d.txt", "booster_30d.txt"):
        (old / extra).unlink()
    before = LeadScorer.load(old)
    scores = before.score(ids, small_sim.interactions, AS_OF)
    assert list(scores.columns) == OUTPUT_COLUMNS
    np.testing.assert_array_equal(scores["probability"], scorer.score(ids, small_sim.interactions, AS_OF)["probability"])
    # A horizon listed without its booster is a damaged folder, said so.
    raw = json.loads((new / "scorer.json").read_text())
    del raw["when"]["models"]["7"]
    (new / "scorer.json").write_text(json.dumps(raw))
    with pytest.raises(Exception, match="no booster for the horizons"):
        LeadScorer.load(new)


def _defined_metrics() -> list[re.Pattern]:
    """The metric names docs/glossary.md#metrics defines (as tests/test_cli.py reads them)."""
    section = (ROOT / "docs" / "glossary.md").read_text().split("## Metrics", 1)[1]
    return [re.compile(re.sub(r"<[a-z]+>", "[a-z0-9_.]+", re.escape(name).replace(r"\<", "<").replace(r"\>", ">")))
            for name in re.findall(r"`([a-z_.<>0-9]+)`", section)]


def test_a_backtest_reports_each_horizon_of_each_quarter(small_sim, params):
    from leadtemp.workflows.quarterly import backtest

    fold = backtest(small_sim.leads, small_sim.interactions, params, 1).folds[0]
    m = fold.metrics
    assert fold.result.scorer.timing_days == (7, 30, 90)
    for h in (7, 30, 90):
        assert 0 <= m[f"p_{h}d_ece"] < 0.06 and m[f"p_{h}d_roc_auc"] > 0.7, h
    assert m["p_90d_roc_auc"] == m["roc_auc"] and m["p_30d_rows"] == m["rows"]
    defined = _defined_metrics()
    for name in [*logged_metrics(m), *logged_metrics(fold.result.metrics, "test_")]:
        assert any(d.fullmatch(name) for d in defined), name
